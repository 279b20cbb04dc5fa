"""Check what the user asked for before any slow work: files, quant names, output, disk space.

Each check raises ConvertError with the problem and the fix; nothing here imports torch.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from artifacts.digest import sha256_file
from convert.errors import ConvertError

# Quant name → llama_ftype. Only types that need no importance matrix: the IQ* types would
# silently produce garbage without one.
QUANT_FTYPES: dict[str, int] = {
    "F16": 1,
    "Q4_0": 2,
    "Q4_1": 3,
    "Q8_0": 7,
    "Q5_0": 8,
    "Q5_1": 9,
    "Q2_K": 10,
    "Q3_K_S": 11,
    "Q3_K_M": 12,
    "Q3_K_L": 13,
    "Q4_K_S": 14,
    "Q4_K_M": 15,
    "Q5_K_S": 16,
    "Q5_K_M": 17,
    "Q6_K": 18,
    "BF16": 32,
}
# Bits per weight, only to estimate the disk space a run needs.
_QUANT_BITS: dict[str, float] = {"F16": 16, "BF16": 16, "Q8_0": 8.5, "Q6_K": 6.6}

BaseKind = Literal["hf", "gguf"]


@dataclass(frozen=True)
class BaseSpec:
    """The base model: a Hugging Face folder with safetensors, or a GGUF file."""

    path: Path
    kind: BaseKind
    architecture: str | None  # HF class name when known before loading (HF folders)

    def sha256(self) -> str:
        """sha256 of the GGUF file, or of the folder's safetensors files in name order."""
        if self.kind == "gguf":
            return sha256_file(self.path)
        import hashlib

        digest = hashlib.sha256()
        for weights in sorted(self.path.glob("*.safetensors")):
            digest.update(sha256_file(weights).encode())
        return digest.hexdigest()


@dataclass(frozen=True)
class AdapterSpec:
    """A PEFT LoRA adapter folder and the parts of its config the manifest records."""

    path: Path
    weights: Path
    rank: int
    alpha: float
    target_modules: list[str]
    base_model_name_or_path: str | None
    config: dict[str, Any] = field(default_factory=dict, repr=False)

    def sha256(self) -> str:
        """sha256 of the adapter weights file."""
        return sha256_file(self.weights)


def resolve_base(path: Path) -> BaseSpec:
    """Describe the base model at ``path`` or say why it cannot be one."""
    hint = "pass a Hugging Face model folder (config.json + *.safetensors) or a .gguf file"
    if not path.exists():
        raise ConvertError(f"base model {path} does not exist", hint)
    if path.is_file():
        with path.open("rb") as handle:
            magic = handle.read(4)
        if magic != b"GGUF":
            raise ConvertError(f"base model {path} is neither a GGUF file nor a folder", hint)
        return BaseSpec(path=path, kind="gguf", architecture=None)
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ConvertError(f"base model folder {path} has no config.json", hint)
    if not any(path.glob("*.safetensors")):
        raise ConvertError(
            f"base model folder {path} has no *.safetensors weights",
            "save the model with save_pretrained(safe_serialization=True)",
        )
    config = _read_json(config_path, "base model config")
    architectures = config.get("architectures") or []
    return BaseSpec(path=path, kind="hf", architecture=architectures[0] if architectures else None)


def read_adapter(path: Path) -> AdapterSpec:
    """Describe the PEFT LoRA adapter in folder ``path`` or say why it is not one."""
    hint = "pass the folder written by peft's save_pretrained (adapter_config.json + weights)"
    if not path.is_dir():
        raise ConvertError(f"adapter folder {path} does not exist", hint)
    config_path = path / "adapter_config.json"
    if not config_path.is_file():
        raise ConvertError(f"adapter folder {path} has no adapter_config.json", hint)
    weights = path / "adapter_model.safetensors"
    if not weights.is_file():
        raise ConvertError(
            f"adapter folder {path} has no adapter_model.safetensors",
            "save the adapter with safe_serialization=True (the .bin format is not accepted)",
        )
    config = _read_json(config_path, "adapter config")
    if config.get("peft_type", "LORA") != "LORA":
        raise ConvertError(
            f"adapter {path} is a {config.get('peft_type')} adapter, not LoRA",
            "only LoRA/QLoRA adapters can be merged into GGUF",
        )
    targets = config.get("target_modules") or []
    if isinstance(targets, str):  # peft stores a regex as a plain string
        targets = [targets]
    return AdapterSpec(
        path=path,
        weights=weights,
        rank=int(config.get("r", 0)),
        alpha=float(config.get("lora_alpha", 0)),
        target_modules=sorted(targets),
        base_model_name_or_path=config.get("base_model_name_or_path"),
        config=config,
    )


def parse_quants(text: str) -> list[str]:
    """``"q4_k_m, Q5_K_M"`` → ``["Q4_K_M", "Q5_K_M"]``; unknown names raise ConvertError."""
    names = [part.strip().upper() for part in text.split(",") if part.strip()]
    if not names:
        raise ConvertError("no quant type given", f"use --quant with some of {known_quants()}")
    unknown = [name for name in names if name not in QUANT_FTYPES]
    if unknown:
        raise ConvertError(
            f"unknown quant type {', '.join(unknown)}", f"choose from {known_quants()}"
        )
    return list(dict.fromkeys(name for name in names if name != "F16"))


def known_quants() -> str:
    """The accepted quant names, comma separated."""
    return ", ".join(QUANT_FTYPES)


def check_output(out: Path, force: bool) -> None:
    """Refuse to overwrite an existing output folder unless asked to."""
    if out.exists() and not force:
        raise ConvertError(
            f"output folder {out} already exists", "choose another --out or pass --force"
        )
    if out.exists() and not out.is_dir():
        raise ConvertError(f"output {out} is a file", "choose a folder path for --out")


def estimate_bytes_needed(n_params: int, quants: list[str]) -> int:
    """Disk a run needs: merged fp32 safetensors (written even when not kept), the f16 GGUF,
    every quant, and 10 % slack."""
    merged = 4 * n_params
    f16 = 2 * n_params
    quantized = sum(int(n_params * _QUANT_BITS.get(q, 5.7) / 8) for q in quants)
    return int((merged + f16 + quantized) * 1.1)


def check_disk_space(folder: Path, needed: int) -> None:
    """Raise ConvertError when the file system holding ``folder`` has less than ``needed`` free."""
    probe = folder
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise ConvertError(
            f"not enough disk space in {probe}: {_gib(needed)} needed, {_gib(free)} free",
            "free some space or choose an --out on a larger disk",
        )


def _gib(size: int) -> str:
    return f"{size / 2**30:.2f} GiB"


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConvertError(
            f"cannot read {what} {path}: {exc}", "fix or regenerate the file"
        ) from exc
    if not isinstance(data, dict):
        raise ConvertError(f"{what} {path} is not a JSON object", "fix or regenerate the file")
    return data
