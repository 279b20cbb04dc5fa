"""CPU thread defaults for a server whose event loop shares the cores with llama.cpp.

llama.cpp's CPU backend here is built with OpenMP. After every ``llama_decode`` the OpenMP
workers spin-wait (``GOMP_SPINCOUNT`` iterations, ~0.3 s by default) hoping for more work. In a
benchmark loop that is free speed; in a server it burns the cores the asyncio event loop and any
neighbour process need, and a second busy process can stall decoding for minutes. Fully passive
waiting costs a lot of decode speed instead. The middle ground measured in docs/engine.md: keep
the active policy but bound the spin so idle workers yield within ~a millisecond.

libgomp reads these variables once, when it is loaded, i.e. when ``llama_cpp`` is imported; so
``apply_openmp_defaults`` must run before that import (``server.engine.llama_engine`` does it at
import time). Values the user already exported always win.
"""

from __future__ import annotations

import logging
import os
import sys

import psutil

logger = logging.getLogger(__name__)

# Spin iterations before an idle OpenMP worker sleeps (libgomp's default is 300,000 with the
# active policy, about 0.3 s; see docs/engine.md for the measurement that picked this value).
DEFAULT_GOMP_SPINCOUNT = "10000"


def apply_openmp_defaults() -> None:
    """Set ``OMP_WAIT_POLICY``/``GOMP_SPINCOUNT`` defaults unless the user chose their own."""
    if "llama_cpp" in sys.modules and "GOMP_SPINCOUNT" not in os.environ:
        logger.warning(
            "llama_cpp was imported before server.engine; OpenMP spin defaults not applied "
            "(import server.engine.llama_engine first, or export GOMP_SPINCOUNT yourself)"
        )
        return
    os.environ.setdefault("OMP_WAIT_POLICY", "active")
    os.environ.setdefault("GOMP_SPINCOUNT", DEFAULT_GOMP_SPINCOUNT)


def physical_cores() -> int:
    """Physical CPU cores available to this process (SMT siblings do not speed up matmuls)."""
    physical = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = physical
    return max(1, min(physical, usable))


def default_threads() -> int:
    """All physical cores but one, which stays free for the event loop and its neighbours.

    OpenMP workers meet at a barrier after every graph node; if one of them is descheduled
    because another runnable thread wants its core, all of them wait. With every core used,
    measured here (2 cores, busy neighbours): 3.9 tok/s instead of 36.5 with one core left
    free (docs/engine.md).
    """
    return max(1, physical_cores() - 1)


def resolve_threads(n_threads: int, n_threads_batch: int) -> tuple[int, int]:
    """Turn the ``0 = auto`` settings into concrete thread counts for decode and prompt."""
    decode = n_threads if n_threads > 0 else default_threads()
    batch = n_threads_batch if n_threads_batch > 0 else decode
    return decode, batch
