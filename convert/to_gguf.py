"""Write GGUF files with llama.cpp's converters: the merged model in f16, or the adapter alone."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from convert.errors import ConvertError
from convert.inputs import AdapterSpec, BaseSpec
from convert.merge import load_config
from convert.toolchain import Converter

LineSink = Callable[[str], None]


def export_f16(
    converter: Converter,
    hf_folder: Path,
    out_file: Path,
    log_path: Path,
    on_line: LineSink | None = None,
) -> None:
    """Convert a Hugging Face folder to an f16 GGUF at ``out_file``."""
    args = [str(hf_folder), "--outfile", str(out_file), "--outtype", "f16"]
    converter.run("convert_hf_to_gguf.py", args, log_path, on_line)
    _require_output(out_file, log_path)


def export_adapter(
    converter: Converter,
    adapter: AdapterSpec,
    base_config_folder: Path,
    out_file: Path,
    log_path: Path,
    outtype: str = "f32",
    on_line: LineSink | None = None,
) -> None:
    """Convert a PEFT LoRA adapter to a GGUF LoRA that llama.cpp applies at load time."""
    args = [
        str(adapter.path),
        "--base",
        str(base_config_folder),
        "--outfile",
        str(out_file),
        "--outtype",
        outtype,
    ]
    converter.run("convert_lora_to_gguf.py", args, log_path, on_line)
    _require_output(out_file, log_path)


def write_base_config(base: BaseSpec, folder: Path) -> Path:
    """A folder with the base's ``config.json``, which is all the LoRA converter reads of it.

    An HF base already is one. For a GGUF base the config is rebuilt from the GGUF metadata
    (no weights are loaded) and given the architecture class name the converter keys on.
    """
    if base.kind == "hf":
        return base.path
    config = load_config(base)
    folder.mkdir(parents=True, exist_ok=True)
    data = config.to_dict()
    data.pop("quantization_config", None)
    (folder / "config.json").write_text(json.dumps(data, indent=2), encoding="utf-8")
    return folder


def _require_output(out_file: Path, log_path: Path) -> None:
    if not out_file.is_file() or out_file.stat().st_size == 0:
        raise ConvertError(
            f"the converter reported success but wrote no {out_file.name}",
            f"see the log in {log_path}",
        )
