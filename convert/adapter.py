"""``ggserve convert-adapter``: a PEFT LoRA adapter → a GGUF LoRA applied at load time.

No merge: the server loads the base GGUF and applies this file (``GGSERVE_LORA_PATH``), so one
base can serve several adapters and an adapter can be swapped without re-quantizing the base.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from convert import merge, to_gguf
from convert.errors import ConvertError
from convert.inputs import read_adapter, resolve_base
from convert.progress import Reporter, SilentReporter
from convert.toolchain import ensure_converter

ADAPTER_OUTTYPES = ("f32", "f16", "bf16", "q8_0")


@dataclass
class AdapterExportOptions:
    """What ``ggserve convert-adapter`` was asked to do."""

    base: Path
    adapter: Path
    out: Path
    outtype: str = "f32"
    force: bool = False
    cache_dir: Path | None = None
    sdist: Path | None = None


def export_adapter_gguf(options: AdapterExportOptions, reporter: Reporter | None = None) -> Path:
    """Check the adapter fits the base, convert it, and return the GGUF LoRA's path."""
    reporter = reporter or SilentReporter()
    if options.outtype not in ADAPTER_OUTTYPES:
        raise ConvertError(
            f"unknown adapter type {options.outtype}", f"choose from {', '.join(ADAPTER_OUTTYPES)}"
        )
    if options.out.suffix != ".gguf":
        raise ConvertError(f"output {options.out} is not a .gguf file name", "end --out in .gguf")
    if options.out.exists() and not options.force:
        raise ConvertError(f"{options.out} already exists", "choose another --out or pass --force")
    base = resolve_base(options.base)
    adapter = read_adapter(options.adapter)

    started = time.perf_counter()
    with reporter.step("check base, adapter and converter"):
        converter = ensure_converter(options.cache_dir, options.sdist)
        config = merge.load_config(base)
        converter.require_supported(config.architectures[0])
        merge.check_adapter_fits(merge.skeleton_model(config), adapter)
    reporter.done("check base, adapter and converter", time.perf_counter() - started)

    options.out.parent.mkdir(parents=True, exist_ok=True)
    partial = options.out.with_name(f".{options.out.name}.partial")
    started = time.perf_counter()
    with (
        reporter.step("convert adapter to GGUF LoRA (llama.cpp)"),
        tempfile.TemporaryDirectory(prefix="ggserve-lora-") as scratch,
    ):
        config_dir = to_gguf.write_base_config(base, Path(scratch) / "base-config")
        log = Path(scratch) / "convert_lora_to_gguf.log"
        try:
            to_gguf.export_adapter(
                converter, adapter, config_dir, partial, log, outtype=options.outtype
            )
        except ConvertError as exc:
            kept = options.out.with_name(options.out.name + ".log")
            kept.write_text(log.read_text(errors="replace"), encoding="utf-8")
            raise ConvertError(exc.problem, f"see the converter log in {kept}") from exc
        os.replace(partial, options.out)
    reporter.done("convert adapter to GGUF LoRA (llama.cpp)", time.perf_counter() - started)
    return options.out
