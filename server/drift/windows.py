"""Compare a reference window with a current one, signal by signal."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from server.drift import stats
from server.drift.config import DriftConfig
from server.drift.observation import Observation, Rating
from server.drift.report import DriftReport, SignalReport
from server.drift.stats import FloatArray


@dataclass(frozen=True)
class WindowSample:
    """What one window holds at evaluation time.

    ``embeddings`` has one row per embedded query (None: no embedder, the signal is skipped).
    """

    observations: Sequence[Observation]
    embeddings: FloatArray | None = None
    ratings: Sequence[Rating] = ()


def _too_few(name: str, test: str, n_ref: int, n_cur: int, need: int) -> SignalReport:
    return SignalReport(
        name,
        test,
        n_ref,
        n_cur,
        None,
        None,
        None,
        None,
        None,
        note=f"needs {need} samples in each window (has {n_ref} reference, {n_cur} current)",
    )


def _embedding_signal(
    ref: WindowSample, cur: WindowSample, config: DriftConfig, rng: np.random.Generator
) -> SignalReport | None:
    if ref.embeddings is None or cur.embeddings is None:
        return None
    n_ref, n_cur = len(ref.embeddings), len(cur.embeddings)
    if min(n_ref, n_cur) < config.min_samples:
        return _too_few("query_embedding", "mmd_permutation", n_ref, n_cur, config.min_samples)
    result = stats.mmd_permutation_test(ref.embeddings, cur.embeddings, config.permutations, rng)
    return SignalReport(
        "query_embedding",
        "mmd_permutation",
        n_ref,
        n_cur,
        None,
        None,
        result.statistic,
        result.p_value,
        False,
    )


def _numeric_signal(
    name: str, ref: Sequence[float], cur: Sequence[float], config: DriftConfig
) -> SignalReport:
    if min(len(ref), len(cur)) < config.min_samples:
        return _too_few(name, "ks", len(ref), len(cur), config.min_samples)
    a, b = np.asarray(ref, dtype=np.float64), np.asarray(cur, dtype=np.float64)
    result = stats.ks_test(a, b)
    return SignalReport(
        name,
        "ks",
        len(a),
        len(b),
        float(a.mean()),
        float(b.mean()),
        result.statistic,
        result.p_value,
        False,
        psi=stats.psi(a, b, config.psi_bins),
    )


def _rate_signal(name: str, ref: Sequence[bool], cur: Sequence[bool], need: int) -> SignalReport:
    if min(len(ref), len(cur)) < need:
        return _too_few(name, "two_proportion", len(ref), len(cur), need)
    hits_ref, hits_cur = sum(ref), sum(cur)
    result = stats.two_proportion_test(hits_ref, len(ref), hits_cur, len(cur))
    return SignalReport(
        name,
        "two_proportion",
        len(ref),
        len(cur),
        hits_ref / len(ref),
        hits_cur / len(cur),
        result.statistic,
        result.p_value,
        False,
    )


def _per_observation(
    sample: WindowSample,
) -> tuple[list[float], list[bool], list[float], list[bool], list[bool]]:
    obs = sample.observations
    scores = [o.top_score for o in obs if o.top_score is not None]
    no_context = [o.no_context for o in obs if o.no_context is not None]
    generated = [o for o in obs if o.generated]
    return (
        scores,
        no_context,
        [float(o.answer_tokens) for o in generated],
        [o.finish_reason == "length" for o in generated],
        [o.refused for o in obs],
    )


def evaluate(
    reference: WindowSample,
    current: WindowSample,
    config: DriftConfig,
    *,
    reference_source: str = "traffic",
    reference_frozen: bool = True,
    clock: Callable[[], float] = time.time,
) -> DriftReport:
    """Every signal of ``current`` against ``reference``, with verdicts at ``config.alpha``
    shared across the signals that had enough samples."""
    started = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    r_scores, r_noctx, r_tokens, r_length, r_refused = _per_observation(reference)
    c_scores, c_noctx, c_tokens, c_length, c_refused = _per_observation(current)
    signals: list[SignalReport] = []
    embedding = _embedding_signal(reference, current, config, rng)
    if embedding is not None:
        signals.append(embedding)
    signals += [
        _numeric_signal("top1_score", r_scores, c_scores, config),
        _rate_signal("no_context", r_noctx, c_noctx, config.min_samples),
        _numeric_signal("answer_tokens", r_tokens, c_tokens, config),
        _rate_signal("refusal", r_refused, c_refused, config.min_samples),
        _rate_signal("finish_length", r_length, c_length, config.min_samples),
        _rate_signal(
            "negative_feedback",
            [r.negative for r in reference.ratings],
            [r.negative for r in current.ratings],
            config.min_feedback,
        ),
    ]
    decided = [s for s in signals if s.p_value is not None]
    threshold = config.alpha / len(decided) if decided else None
    if threshold is not None:
        signals = [
            replace(s, drifted=s.p_value < threshold) if s.p_value is not None else s
            for s in signals
        ]
    return DriftReport(
        evaluated_at=clock(),
        elapsed_s=time.perf_counter() - started,
        alpha=config.alpha,
        p_threshold=threshold,
        min_samples=config.min_samples,
        reference_size=config.reference_size,
        window_size=config.window_size,
        reference_source=reference_source,
        reference_frozen=reference_frozen,
        signals=signals,
    )
