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
