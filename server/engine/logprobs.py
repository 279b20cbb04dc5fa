"""Log-probabilities of tokens from the model's raw logits (a log-softmax over the vocabulary).

The values are those of the model itself, before any sampler (temperature, top-p, penalties,
grammar) touched the distribution — what OpenAI's logprobs and evaluation harnesses expect.
Only the engine thread calls these, right after the ``llama_decode`` that produced the logits.
"""

from __future__ import annotations

import llama_cpp
import numpy as np

from server.engine.types import TokenLogprob

# Prompt tokens scored per llama_decode: logits of every scored token are materialized
# (n x n_vocab floats: 64 x 49152 x 4 B = 12.6 MB for SmolLM2), so long prompts go in chunks.
PROMPT_LOGPROB_CHUNK = 64


def logits_row(ctx: int, batch_index: int, n_vocab: int) -> np.ndarray:
    """A read-only view of the logits the last decode produced at ``batch_index``."""
    pointer = llama_cpp.llama_get_logits_ith(ctx, batch_index)
    return np.ctypeslib.as_array(pointer, shape=(n_vocab,))


def _log_normalizer(row: np.ndarray) -> float:
    peak = float(row.max())
    return peak + float(np.log(np.exp(row - peak).sum(dtype=np.float64)))


def token_logprob(row: np.ndarray, token: int, n_top: int) -> TokenLogprob:
    """The log-probability of ``token`` under ``row`` and the ``n_top`` most likely tokens."""
    normalizer = _log_normalizer(row)
    top: tuple[tuple[int, float], ...] = ()
    if n_top == 1:  # the common case (evaluation harnesses ask for 1): argmax, no partition
        best = int(row.argmax())
        top = ((best, float(row[best]) - normalizer),)
    elif n_top > 1:
        candidates = np.argpartition(row, -n_top)[-n_top:]
        ordered = candidates[np.argsort(-row[candidates], kind="stable")]
        top = tuple((int(t), float(row[t]) - normalizer) for t in ordered)
    return TokenLogprob(token, float(row[token]) - normalizer, top)


def prompt_logprobs(
    ctx: int,
    n_vocab: int,
    first_batch_index: int,
    next_tokens: list[int],
    n_top: int,
) -> list[TokenLogprob]:
    """Logprobs of ``next_tokens``; row ``first_batch_index + i`` predicts ``next_tokens[i]``."""
    return [
        token_logprob(logits_row(ctx, first_batch_index + i, n_vocab), token, n_top)
        for i, token in enumerate(next_tokens)
    ]
