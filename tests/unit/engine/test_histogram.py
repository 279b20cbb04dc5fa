"""Engine-side latency histograms and their Prometheus exposition."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from server.engine.histogram import LatencyHistogram
from server.engine.types import EngineStats
from server.observability.metrics import Metrics


def test_observations_land_in_the_first_bucket_whose_bound_is_not_below_them() -> None:
    hist = LatencyHistogram((0.1, 1.0))
    for seconds in (0.05, 0.1, 0.5, 3.0, 7.0):
        hist.observe(seconds)
    snap = hist.snapshot()
    assert snap.counts == (2, 1, 2)
    assert snap.total == pytest.approx(10.65)


def test_bounds_must_increase() -> None:
    with pytest.raises(ValueError):
        LatencyHistogram((1.0, 0.5))


def test_prefix_cache_counters_and_engine_histograms_are_exported() -> None:
    ttft = LatencyHistogram((0.5, 1.0))
    for seconds in (0.2, 0.7, 2.0):
        ttft.observe(seconds)
    stats = EngineStats(
        slots_total=4,
        slots_active=1,
        queue_depth=0,
        prefix_cache_hits_total=5,
        prefix_cache_misses_total=2,
        prefix_cache_tokens_saved_total=4000,
        prefix_copies_total=3,
        prefix_copy_tokens_total=3000,
        ttft_seconds=ttft.snapshot(),
        inter_token_seconds=LatencyHistogram((0.01,)).snapshot(),
    )
    text = generate_latest(Metrics(lambda: stats, lambda: "ready", str).registry).decode()
    assert "ggserve_prefix_cache_hits_total 5.0" in text
    assert "ggserve_prefix_cache_misses_total 2.0" in text
    assert "ggserve_prefix_cache_tokens_saved_total 4000.0" in text
    assert "ggserve_prefix_cache_copies_total 3.0" in text
    assert "ggserve_prefix_cache_copied_tokens_total 3000.0" in text
    assert 'ggserve_engine_ttft_seconds_bucket{le="0.5"} 1.0' in text
    assert 'ggserve_engine_ttft_seconds_bucket{le="1.0"} 2.0' in text
    assert 'ggserve_engine_ttft_seconds_bucket{le="+Inf"} 3.0' in text
    assert "ggserve_engine_ttft_seconds_count 3.0" in text
    assert "ggserve_engine_inter_token_seconds_count 0.0" in text
