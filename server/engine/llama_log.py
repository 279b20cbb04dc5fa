"""Route llama.cpp's C logging into Python logging and keep recent errors for messages.

llama.cpp logs through one process-wide callback. Its INFO chatter (hundreds of lines per
load) goes to DEBUG; warnings and errors go to the ``llama_cpp`` logger. The last error lines
are kept so a failed load can tell the user *why* ("failed to allocate buffer", "invalid
magic") instead of only "it failed".
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections import deque

import llama_cpp

logger = logging.getLogger("llama_cpp")

# ggml.h: NONE=0, DEBUG=1, INFO=2, WARN=3, ERROR=4, CONT=5 (continues the previous line)
_GGML_LEVELS = {
    0: logging.DEBUG,
    1: logging.DEBUG,
    2: logging.INFO,
    3: logging.WARNING,
    4: logging.ERROR,
}
_recent_problems: deque[str] = deque(maxlen=20)
_lock = threading.Lock()
_last_level = logging.DEBUG


@llama_cpp.llama_log_callback
def _on_log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    global _last_level
    python_level = _GGML_LEVELS.get(level, _last_level if level == 5 else logging.DEBUG)
    _last_level = python_level
    message = text.decode("utf-8", errors="replace").rstrip("\n")
    if not message:
        return
    if python_level >= logging.WARNING:
        with _lock:
            _recent_problems.append(message.strip())
        logger.log(python_level, message)
    else:
        logger.debug(message)


def install() -> None:
    """Make llama.cpp log through Python logging (idempotent)."""
    llama_cpp.llama_log_set(_on_log, ctypes.c_void_p(0))


def clear_problems() -> None:
    """Forget earlier warnings/errors (call before an operation whose failure you explain)."""
    with _lock:
        _recent_problems.clear()


def recent_problems() -> list[str]:
    """Warnings and errors llama.cpp logged since the last ``clear_problems``."""
    with _lock:
        return list(_recent_problems)
