"""CPU thread defaults for a server whose event loop shares the cores with llama.cpp.

llama.cpp's CPU backend here is built with OpenMP: every graph node ends in a barrier where all
decode threads meet, and libgomp's idle threads spin for GOMP_SPINCOUNT iterations (300,000 by
default) before sleeping. In a server, the event loop wakes after every decode step to stream
tokens; with the default spin, a spinning worker holds the core the event loop (and then the
preempted decode thread) needs, and throughput collapses (8 clients on 2 cores: 12 tok/s).
A bounded spin keeps barriers fast and yields the core soon after a step: 123 tok/s with both
cores, against 63 tok/s with one decode thread (docs/engine.md, "Threads"). So the default is
all physical cores and GOMP_SPINCOUNT=10000, unless the environment already sets a policy.

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


GOMP_SPINCOUNT_DEFAULT = "10000"


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
