"""CPU thread defaults for a server whose event loop shares the cores with llama.cpp.

llama.cpp's CPU backend here is built with OpenMP: every graph node ends in a barrier where all
decode threads meet, and libgomp's idle threads spin for GOMP_SPINCOUNT iterations (300,000 by
default) before sleeping. In a server, the event loop wakes after every decode step to stream
tokens. When that cost a millisecond or more per step, a spinning worker held the core the
event loop (and then the preempted decode thread) needed, and libgomp's default spin collapsed
throughput (8 clients on 2 cores: 12 tok/s), so the spin was bounded to 10,000. With the
event loop's share down to 0.12 ms of CPU per streamed token (one wake-up per step, our own
SSE response), that short spin became the cost: a worker fell asleep in the Python part of
every step and paid a futex wake-up at the next one. 100,000 keeps it awake across a step's
Python part and still yields the core within about a millisecond: over HTTP on 2 cores it
measured 91-100 / 151-192 / 185-193 tok/s at 1 / 8 / 16 clients against 65-94 / 145-186 /
154-186 with 10,000, in the same runs (docs/engine.md, "Threads"). So the default is all
physical cores and GOMP_SPINCOUNT=100000, unless the environment already sets a policy.

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


GOMP_SPINCOUNT_DEFAULT = "100000"


def apply_openmp_defaults() -> None:
    """Bound libgomp's spin-wait unless the operator chose a policy; call before llama_cpp loads.

    libgomp reads its environment once, when the shared library is loaded.
    """
    if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = GOMP_SPINCOUNT_DEFAULT


def default_threads() -> int:
    """All physical cores (SMT siblings do not speed up the matmuls); see the module doc."""
    return physical_cores()


def resolve_threads(n_threads: int, n_threads_batch: int) -> tuple[int, int]:
    """Turn the ``0 = auto`` settings into concrete thread counts for decode and prompt."""
    decode = n_threads if n_threads > 0 else default_threads()
    batch = n_threads_batch if n_threads_batch > 0 else decode
    return decode, batch
