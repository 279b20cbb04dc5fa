"""Verdicts: a topic shift flags, the same distribution stays quiet, small windows get none."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from server.drift.config import DriftConfig
from server.drift.observation import Observation, Rating
from server.drift.report import SIGNALS
from server.drift.windows import WindowSample, evaluate
from tests.unit.drift.conftest import COOKING, NETWORK, HashingEmbedder, observations, questions

CONFIG = DriftConfig(reference_size=200, window_size=200, min_samples=100, permutations=200)


def _sample(obs: list[Observation], embedder: HashingEmbedder, ratings=()) -> WindowSample:
    return WindowSample(obs, embedder.embed([o.query for o in obs]), list(ratings))


def test_a_topic_shift_flags_the_query_embeddings() -> None:
    rng = np.random.default_rng(0)
    embedder = HashingEmbedder()
    ref = _sample(observations(questions(COOKING, 200, rng), rng), embedder)
    cur = _sample(observations(questions(NETWORK, 200, rng), rng), embedder)
    report = evaluate(ref, cur, CONFIG)
    assert report.signal("query_embedding").drifted is True
    assert report.drifted is True


def test_the_same_distribution_stays_quiet() -> None:
    rng = np.random.default_rng(1)
    embedder = HashingEmbedder()
    flagged = 0
    for _ in range(10):
        ref = _sample(observations(questions(COOKING, 150, rng), rng), embedder)
        cur = _sample(observations(questions(COOKING, 150, rng), rng), embedder)
        report = evaluate(ref, cur, replace(CONFIG, permutations=150))
        assert report.p_threshold is not None
        flagged += bool(report.drifted)
    assert flagged <= 1  # family-wise alpha 0.05: one in ten would already be unlucky


@pytest.mark.parametrize(
    ("signal", "change"),
    [
        ("top1_score", {"score_mean": 0.45}),
        ("no_context", {"no_context_rate": 0.35}),
        ("answer_tokens", {"tokens_mean": 140.0}),
        ("finish_length", {"length_rate": 0.3}),
    ],
)
def test_each_output_signal_flags_its_own_shift(signal: str, change: dict[str, float]) -> None:
    rng = np.random.default_rng(2)
    embedder = HashingEmbedder()
    texts = questions(COOKING, 400, rng)
    ref = _sample(observations(texts[:200], rng), embedder)
    cur = _sample(observations(texts[200:], rng, **change), embedder)  # type: ignore[arg-type]
    report = evaluate(ref, cur, CONFIG)
    assert report.signal(signal).drifted is True
    assert report.signal("query_embedding").drifted is False


def test_refusals_and_negative_feedback_flag() -> None:
    rng = np.random.default_rng(3)
    embedder = HashingEmbedder()
    texts = questions(COOKING, 400, rng)
    ref_obs = observations(texts[:200], rng)
    cur_obs = [
        replace(o, finish_reason="content_filter", answer_tokens=0) if i % 4 == 0 else o
        for i, o in enumerate(observations(texts[200:], rng))
    ]
    ref_ratings = [Rating(float(i), i % 10 == 0) for i in range(100)]
    cur_ratings = [Rating(float(i), i % 2 == 0) for i in range(100)]
    report = evaluate(
        _sample(ref_obs, embedder, ref_ratings), _sample(cur_obs, embedder, cur_ratings), CONFIG
    )
    assert report.signal("refusal").drifted is True
    assert report.signal("refusal").current_value == pytest.approx(0.25)
    assert report.signal("negative_feedback").drifted is True
    assert report.signal("negative_feedback").reference_value == pytest.approx(0.1)


def test_no_verdict_below_the_minimum_sample() -> None:
    rng = np.random.default_rng(4)
    embedder = HashingEmbedder()
    ref = _sample(observations(questions(COOKING, 200, rng), rng), embedder)
    few = _sample(observations(questions(NETWORK, 99, rng), rng), embedder)
    report = evaluate(ref, few, CONFIG)
    assert report.drifted is None and report.p_threshold is None
    for s in report.signals:
        assert s.drifted is None and s.p_value is None
        assert s.note is not None and "needs" in s.note
    enough = _sample(observations(questions(NETWORK, 100, rng), rng), embedder)
    assert evaluate(ref, enough, CONFIG).signal("query_embedding").drifted is True


def test_without_an_embedder_the_other_signals_still_run() -> None:
    rng = np.random.default_rng(5)
    obs = observations(questions(COOKING, 400, rng), rng)
    report = evaluate(WindowSample(obs[:200]), WindowSample(obs[200:]), CONFIG)
    names = [s.name for s in report.signals]
    assert "query_embedding" not in names
    assert set(names) == set(SIGNALS) - {"query_embedding"}
    assert report.signal("top1_score").drifted is False


def test_chat_observations_have_no_retrieval_signals() -> None:
    rng = np.random.default_rng(6)
    chat = [
        replace(o, route="chat", top_score=None, no_context=None)
        for o in observations(questions(COOKING, 400, rng), rng)
    ]
    report = evaluate(WindowSample(chat[:200]), WindowSample(chat[200:]), CONFIG)
    assert report.signal("top1_score").drifted is None
    assert report.signal("no_context").reference_n == 0
    assert report.signal("answer_tokens").drifted is not None


def test_report_serialises_to_json() -> None:
    import json

    rng = np.random.default_rng(7)
    obs = observations(questions(COOKING, 400, rng), rng)
    body = evaluate(WindowSample(obs[:200]), WindowSample(obs[200:]), CONFIG).to_dict()
    decoded = json.loads(json.dumps(body))
    assert decoded["drifted"] is False
    assert {s["name"] for s in decoded["signals"]} >= {"top1_score", "refusal"}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_samples": 600},
        {"min_samples": 1},
        {"alpha": 0.0},
        {"alpha": 1.5},
        {"permutations": 139},
        {"interval_s": 0.0},
    ],
)
def test_config_refuses_settings_that_could_never_give_a_verdict(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        DriftConfig(**kwargs)
