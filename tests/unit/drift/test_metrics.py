"""The drift gauges: configuration always, verdicts only where a signal reached one."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest

from server.drift.config import DriftConfig
from server.drift.metrics import METRIC_NAMES, DriftCollector
from server.drift.monitor import DriftMonitor
from tests.unit.drift.conftest import COOKING, NETWORK, HashingEmbedder, observations, questions

CONFIG = DriftConfig(reference_size=100, window_size=100, min_samples=50, permutations=200)


def _scrape(monitor: DriftMonitor) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(DriftCollector(monitor))
    return registry


def test_before_any_evaluation_only_the_configuration_is_exported() -> None:
    registry = _scrape(DriftMonitor(CONFIG))
    assert registry.get_sample_value("ggserve_drift_window_size", {"window": "current"}) == 100
    assert registry.get_sample_value("ggserve_drift_min_samples") == 50
    assert registry.get_sample_value("ggserve_drift_evaluations_total") == 0
    assert registry.get_sample_value("ggserve_drift_drifted") is None


def test_a_flagged_signal_and_a_signal_without_verdict() -> None:
    rng = np.random.default_rng(0)
    monitor = DriftMonitor(CONFIG, HashingEmbedder())
    for o in observations(questions(COOKING, 100, rng), rng):
        monitor.observe(o)
    for o in observations(questions(NETWORK, 100, rng), rng):
        monitor.observe(o)
    monitor.evaluate()
    registry = _scrape(monitor)
    value = registry.get_sample_value
    assert value("ggserve_drift_drifted") == 1.0
    assert value("ggserve_drift_signal_drifted", {"signal": "query_embedding"}) == 1.0
    assert value("ggserve_drift_signal_drifted", {"signal": "refusal"}) == 0.0
    # No ratings at all: counts are exported, a verdict is not.
    assert value("ggserve_drift_signal_drifted", {"signal": "negative_feedback"}) is None
    assert value("ggserve_drift_samples", {"signal": "negative_feedback", "window": "current"}) == 0
    assert value("ggserve_drift_observations_total") == 200
    text = generate_latest(registry).decode()
    exported = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    assert {n.removesuffix("_total") for n in exported} == set(METRIC_NAMES)
