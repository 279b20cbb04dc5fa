"""The monitor: windows fill and slide, embeddings are computed once, feedback is pulled."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from server.drift.config import DriftConfig
from server.drift.monitor import DriftMonitor
from server.drift.observation import MAX_QUERY_CHARS, Rating, observation
from tests.unit.drift.conftest import COOKING, NETWORK, HashingEmbedder, observations, questions

CONFIG = DriftConfig(
    reference_size=100, window_size=100, min_samples=50, min_feedback=20, permutations=200
)


class ListFeedback:
    def __init__(self) -> None:
        self.ratings: list[Rating] = []

    def ratings_since(self, after: float, limit: int) -> Sequence[Rating]:
        return [r for r in self.ratings if r.at > after][:limit]


def test_reference_fills_first_then_the_current_window_slides() -> None:
    rng = np.random.default_rng(0)
    monitor = DriftMonitor(CONFIG, HashingEmbedder())
    for o in observations(questions(COOKING, 100, rng), rng):
        monitor.observe(o)
    report = monitor.evaluate()
    assert report.reference_frozen and report.drifted is None  # current window still empty
    for o in observations(questions(COOKING, 150, rng), rng):
        monitor.observe(o)
    report = monitor.evaluate()
    assert report.signal("query_embedding").current_n == 100  # the last 100 only
    assert report.drifted is False
    for o in observations(questions(NETWORK, 100, rng), rng):
        monitor.observe(o)
    assert monitor.evaluate().signal("query_embedding").drifted is True
    assert monitor.latest is not None and monitor.evaluations == 3


def test_each_query_is_embedded_once() -> None:
    rng = np.random.default_rng(1)
    embedder = HashingEmbedder()
    monitor = DriftMonitor(CONFIG, embedder)
    for o in observations(questions(COOKING, 160, rng), rng):
        monitor.observe(o)
    monitor.evaluate()
    monitor.evaluate()
    assert embedder.embedded == 160


def test_reset_starts_a_new_reference() -> None:
    rng = np.random.default_rng(2)
    monitor = DriftMonitor(CONFIG, HashingEmbedder())
    for o in observations(questions(COOKING, 200, rng), rng):
        monitor.observe(o)
    monitor.evaluate()
    monitor.reset_reference()
    assert monitor.latest is None
    for o in observations(questions(NETWORK, 200, rng), rng):
        monitor.observe(o)
    assert monitor.evaluate().drifted is False  # network is the new normal


def test_a_reference_file_is_frozen_at_once() -> None:
    rng = np.random.default_rng(3)
    monitor = DriftMonitor(CONFIG, HashingEmbedder())
    kept = monitor.set_reference(observations(questions(COOKING, 300, rng), rng), "ref.jsonl")
    assert kept == 100
    for o in observations(questions(NETWORK, 60, rng), rng):
        monitor.observe(o)
    report = monitor.evaluate()
    assert report.reference_source == "ref.jsonl"
    assert report.signal("query_embedding").drifted is True


def test_a_promotion_restarts_a_traffic_reference_but_keeps_a_reference_file() -> None:
    rng = np.random.default_rng(5)
    from_traffic = DriftMonitor(CONFIG, HashingEmbedder())
    for o in observations(questions(COOKING, 200, rng), rng):
        from_traffic.observe(o)
    from_traffic.evaluate()
    assert from_traffic.model_promoted() is True and from_traffic.latest is None
    from_file = DriftMonitor(CONFIG, HashingEmbedder())
    from_file.set_reference(observations(questions(COOKING, 300, rng), rng), "ref.jsonl")
    assert from_file.model_promoted() is False
    for o in observations(questions(NETWORK, 60, rng), rng):
        from_file.observe(o)
    assert from_file.evaluate().reference_source == "ref.jsonl"


def test_feedback_is_pulled_into_its_own_windows() -> None:
    rng = np.random.default_rng(4)
    feedback = ListFeedback()
    monitor = DriftMonitor(CONFIG, None, feedback, clock=lambda: 0.0)
    for o in observations(questions(COOKING, 200, rng), rng):
        monitor.observe(o)
    feedback.ratings += [Rating(1.0 + i, i % 10 == 0) for i in range(100)]
    monitor.evaluate()
    feedback.ratings += [Rating(200.0 + i, i % 2 == 0) for i in range(40)]
    signal = monitor.evaluate().signal("negative_feedback")
    assert (signal.reference_n, signal.current_n) == (100, 40)
    assert signal.drifted is True


def test_observation_bounds_the_query() -> None:
    o = observation(
        at=0.0, route="chat", query="x" * 10_000, finish_reason="stop", answer_tokens=-3
    )
    assert len(o.query) == MAX_QUERY_CHARS and o.answer_tokens == 0


async def test_the_loop_evaluates_on_schedule_and_survives_a_failure() -> None:
    import asyncio
    import contextlib
    from dataclasses import replace

    from server.drift.schedule import run_drift_loop

    rng = np.random.default_rng(5)
    monitor = DriftMonitor(replace(CONFIG, interval_s=0.01), HashingEmbedder())
    for o in observations(questions(COOKING, 200, rng), rng):
        monitor.observe(o)
    ticks = 0

    async def before_each() -> None:
        nonlocal ticks
        ticks += 1
        if ticks == 1:
            raise RuntimeError("embedder not loadable yet")

    task = asyncio.create_task(run_drift_loop(monitor, before_each))
    for _ in range(500):
        await asyncio.sleep(0.01)
        if monitor.evaluations >= 2:
            break
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert ticks >= 3 and monitor.evaluations >= 2
    assert monitor.latest is not None and monitor.latest.drifted is False


def test_a_vector_given_with_the_observation_is_not_embedded_again() -> None:
    rng = np.random.default_rng(6)
    embedder = HashingEmbedder()
    monitor = DriftMonitor(CONFIG, embedder)
    obs = observations(questions(COOKING, 150, rng), rng)
    vectors = HashingEmbedder().embed([o.query for o in obs])
    for o, v in zip(obs[:100], vectors[:100], strict=True):
        monitor.observe(o, v)  # as /v1/ask does with the retriever's embedding
    for o in obs[100:]:
        monitor.observe(o)
    report = monitor.evaluate()
    assert embedder.embedded == 50
    assert report.signal("query_embedding").reference_n == 100
    assert report.signal("query_embedding").current_n == 50
