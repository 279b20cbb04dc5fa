"""Process memory and GPU memory readings for logs and metrics."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

import psutil


def rss_mb() -> float:
    """Resident set size of this process, MiB."""
    return _process(os.getpid()).memory_info().rss / (1024 * 1024)


@lru_cache(maxsize=1)
def _process(pid: int) -> psutil.Process:
    # Built once: psutil.Process() reads /proc/PID/stat to identify the process, and this runs
    # at the end of every request. Keyed on the pid so a forked child reads its own.
    return psutil.Process(pid)


@lru_cache(maxsize=1)
def _nvml_handle() -> Any | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetHandleByIndex(0)
    except Exception:  # no NVML library or no GPU: VRAM is simply not reported
        return None


def vram_mb() -> float | None:
    """GPU 0 memory in use (MiB) through NVML, or None when there is no GPU/NVML."""
    handle = _nvml_handle()
    if handle is None:
        return None
    import pynvml

    return float(pynvml.nvmlDeviceGetMemoryInfo(handle).used) / (1024 * 1024)
