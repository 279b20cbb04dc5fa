"""Perplexity, top-1 agreement and KL on hand-made distributions with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from convert.errors import ConvertError
from convert.quality import Reference, _compare, default_eval_text, token_chunks


def _log(probs: list[list[float]]) -> np.ndarray:
    return np.log(np.asarray(probs, dtype=np.float32))


def test_identical_distributions_agree_fully_with_zero_kl() -> None:
    ref = Reference(chunks=[[0, 1, 2]], log_probs=[_log([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])])
    quality = _compare(ref, ref.log_probs)
    assert quality.top1_agreement == 1.0
    assert quality.mean_kl == pytest.approx(0.0, abs=1e-6)
    # targets 1 then 2: probabilities 0.2 and 0.8
    assert quality.ppl == pytest.approx(math.exp(-(math.log(0.2) + math.log(0.8)) / 2), rel=1e-5)


def test_disagreeing_top_token_and_kl_are_measured() -> None:
    ref = Reference(chunks=[[0, 0]], log_probs=[_log([[0.9, 0.1]])])
    other = [_log([[0.4, 0.6]])]
    quality = _compare(ref, other)
    assert quality.top1_agreement == 0.0
    expected_kl = 0.9 * math.log(0.9 / 0.4) + 0.1 * math.log(0.1 / 0.6)
    assert quality.mean_kl == pytest.approx(expected_kl, rel=1e-5)
    assert quality.ppl == pytest.approx(1 / 0.4, rel=1e-5)


def test_padded_reference_vocab_is_cut_to_the_gguf_vocab() -> None:
    ref = Reference(chunks=[[0, 1]], log_probs=[_log([[0.5, 0.5, 1e-9]])])
    quality = _compare(ref, [_log([[0.5, 0.5]])])
    assert quality.top1_agreement == 1.0


class _CharTokenizer:
    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [ord(c) % 256 for c in text]}


def test_text_is_cut_into_windows_with_a_token_cap() -> None:
    chunks = token_chunks(_CharTokenizer(), "x" * 1000, chunk_tokens=300, max_tokens=700)
    assert [len(c) for c in chunks] == [300, 300, 100]


def test_too_short_eval_text_is_refused() -> None:
    with pytest.raises(ConvertError, match="only 5 tokens"):
        token_chunks(_CharTokenizer(), "hello")


def test_default_eval_text_ships_with_the_package() -> None:
    assert len(default_eval_text()) > 3000
