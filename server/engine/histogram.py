"""A lock-free latency histogram the engine thread fills and ``stats()`` snapshots.

Only the engine thread observes; readers take an immutable snapshot. A torn read can at worst
be one observation behind, which Prometheus tolerates.
"""

from __future__ import annotations

from bisect import bisect_left

from server.engine.types import HistogramSnapshot

TTFT_BOUNDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
INTER_TOKEN_BOUNDS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.25, 0.5, 1.0)


class LatencyHistogram:
    """Fixed buckets (seconds); ``observe`` is one bisect and two additions."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError(f"bucket bounds must increase strictly: {bounds}")
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._total = 0.0

    def observe(self, seconds: float) -> None:
        """Count one observation."""
        self._counts[bisect_left(self._bounds, seconds)] += 1
        self._total += seconds

    def snapshot(self) -> HistogramSnapshot:
        """The counts so far."""
        return HistogramSnapshot(self._bounds, tuple(self._counts), self._total)
