"""CPU thread defaults for a server whose event loop shares the cores with llama.cpp.

llama.cpp's CPU backend here is built with OpenMP: every graph node ends in a barrier where all
decode threads meet. When the threads use every core, any other runnable thread (the asyncio
event loop streaming tokens, a neighbour process) preempts one of them and the others wait at
the barrier for a whole scheduler time slice; decoding collapses. Leaving one core free avoids
that. Measured on the 2-core benchmark machine (docs/engine.md): 31 tok/s with 1 thread vs
2-18 tok/s with 2, whatever the OpenMP spin policy (GOMP_SPINCOUNT 0 / 10k / 300k), so the
spin policy is left at libgomp's default; export GOMP_SPINCOUNT / OMP_WAIT_POLICY to override.
"""

from __future__ import annotations

import os

import psutil


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
