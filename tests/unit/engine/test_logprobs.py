"""Log-softmax math of the logprobs hook, checked against a float64 reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from server.engine.logprobs import token_logprob
from server.engine.sampling import validate_params
from server.engine.types import InvalidRequestError, SamplingParams


def _reference(row: np.ndarray) -> np.ndarray:
    wide = row.astype(np.float64)
    return wide - math.log(np.exp(wide - wide.max()).sum()) - wide.max()


def test_logprob_is_log_softmax_of_the_raw_logits() -> None:
    row = np.random.default_rng(7).normal(0, 8, 49152).astype(np.float32)
    expected = _reference(row)
    result = token_logprob(row, 123, 5)
    assert result.logprob == pytest.approx(expected[123], abs=1e-4)
    top_ids = [t for t, _ in result.top]
    assert top_ids == list(np.argsort(-expected)[:5])
    assert [lp for _, lp in result.top] == pytest.approx(sorted(expected)[::-1][:5], abs=1e-4)


def test_top_one_is_the_argmax() -> None:
    row = np.random.default_rng(3).normal(0, 4, 1000).astype(np.float32)
    ((best, logprob),) = token_logprob(row, 0, 1).top
    assert best == int(np.argmax(row))
    assert logprob == pytest.approx(_reference(row)[best], abs=1e-4)


def test_probabilities_sum_to_one_and_extreme_logits_stay_finite() -> None:
    row = np.array([1000.0, 999.0, -1000.0, 0.0], dtype=np.float32)
    logprobs = [token_logprob(row, t, 0).logprob for t in range(4)]
    assert all(math.isfinite(lp) for lp in logprobs)
    assert sum(math.exp(lp) for lp in logprobs) == pytest.approx(1.0, abs=1e-6)
    assert token_logprob(row, 0, 0).top == ()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (SamplingParams(logprobs=21), "^logprobs must be in 0..20"),
        (SamplingParams(logprobs=-1), "^logprobs must be in"),
        (SamplingParams(prompt_logprobs=21), "^prompt_logprobs must be in"),
        (SamplingParams(max_tokens=0), "max_tokens must be >= 1"),
    ],
)
def test_out_of_range_logprob_settings_are_rejected(params: SamplingParams, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        validate_params(params, 100)


def test_scoring_requests_may_ask_for_zero_new_tokens() -> None:
    validate_params(SamplingParams(max_tokens=0, prompt_logprobs=0), 100)
