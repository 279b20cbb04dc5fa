"""Whether a path is a GGUF file: what the eval gate and the registry check before anything else."""

from __future__ import annotations

from pathlib import Path

GGUF_MAGIC = b"GGUF"


def gguf_problem(path: Path) -> str | None:
    """Why ``path`` is not a GGUF file (a phrase to follow its name), or None when it is one."""
    if not path.is_file():
        return "is not a file"
    with path.open("rb") as handle:
        if handle.read(len(GGUF_MAGIC)) != GGUF_MAGIC:
            return "is not a GGUF file"
    return None


def is_lora_adapter(path: Path) -> bool:
    """Whether the GGUF at ``path`` is a LoRA adapter (``general.type == "adapter"``), not a
    model; ValueError when its metadata cannot be read."""
    try:
        import gguf
    except ImportError as exc:
        raise ValueError(
            "telling a GGUF LoRA from a model needs the gguf package: "
            "pip install 'ggserve[convert]'"
        ) from exc
    try:
        reader = gguf.GGUFReader(path)
    except Exception as exc:  # gguf-py raises ValueError, struct.error, … on a torn file
        raise ValueError(f"{path} has unreadable GGUF metadata ({exc})") from exc
    field = reader.get_field("general.type")
    return field is not None and field.contents() == "adapter"
