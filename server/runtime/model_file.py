"""Whether the served GGUF is still the file on disk: ``ok``, ``missing`` or ``changed``.

The engine reads the weights into memory at load (``GGSERVE_MODEL_MMAP=false``), so deleting,
replacing or overwriting the file never affects the model being served. What it does affect is
the next start: a pod restarted now would fail (missing) or load a different model (changed).
/health and /ready report the state, and the first time it changes a warning is logged, so an
operator sees that a rollout (or POST /admin/reload) is needed before the next restart does it
for them. Readiness is unchanged: the process serves as well as before.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from loguru import logger

ModelFileState = Literal["ok", "missing", "changed"]


@dataclass
class ModelFile:
    """The identity (device, inode, size, mtime) of the file the model was loaded from."""

    path: Path
    identity: tuple[int, int, int, int] | None
    _reported: ModelFileState = "ok"

    @classmethod
    def observe(cls, path: Path) -> ModelFile:
        """Remember ``path`` as it is now (just after loading it)."""
        return cls(path, _identity(path))

    def state(self) -> ModelFileState:
        """Compare the file on disk with the one loaded; log the first change of state."""
        now = _identity(self.path)
        state: ModelFileState = (
            "missing" if now is None else "ok" if now == self.identity else "changed"
        )
        if state != self._reported:
            self._reported = state
            logger.bind(event="model_file", state=state, path=str(self.path)).warning(
                "the model file {} is {} on disk; the loaded model keeps serving from memory, "
                "but a restart will {}",
                self.path,
                "gone" if state == "missing" else "different" if state == "changed" else "back",
                "fail" if state == "missing" else "load what is there now",
            )
        return state


def _identity(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
