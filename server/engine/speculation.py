"""Draft tokens without a draft model: prompt lookup (n-gram) speculation.

An answer that quotes its context (a RAG answer, a code edit, a summary) repeats runs of
tokens the prompt already holds. ``NgramDrafter`` finds the longest recent n-gram that ends
the text so far and proposes the tokens that followed its previous occurrence; the engine
evaluates them in the same ``llama_decode`` as every other slot and keeps the run the model
agrees with. Sampling each verified row with the request's own sampler chain and stopping at
the first disagreement gives exactly the tokens (and, for temperature > 0, the distribution)
that decoding one token at a time gives.

How many tokens to draft is a cost decision: ``StepCost`` measures what one more token in a
step costs on this machine, ``Acceptance`` how often each sequence's drafts are accepted, and
``draft_length`` drafts only the tokens whose expected yield beats their cost. On a 2-core
CPU a draft token costs about half a step, so a chat that does not quote stops drafting after
a few misses, and a busy batch (where every extra token delays every sequence) drafts only
near-certain continuations.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

MIN_NGRAM = 2  # a 1-gram match proposes noise far more often than a quote
MAX_NGRAM = 4


class NgramDrafter:
    """Proposes continuations of a token sequence from earlier occurrences of its tail."""

    def __init__(self, tokens: Iterable[int] = (), min_n: int = MIN_NGRAM, max_n: int = MAX_NGRAM):
        if not 1 <= min_n <= max_n:
            raise ValueError(f"need 1 <= min_n <= max_n, got {min_n}, {max_n}")
        self._sizes = range(max_n, min_n - 1, -1)  # longest first
        self._tokens: list[int] = []
        # n -> n-gram -> the position right after its latest occurrence that has a follower.
        self._next: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in self._sizes}
        self.extend(tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def append(self, token: int) -> None:
        """Add one token; the n-grams ending just before it now have it as a follower."""
        tokens = self._tokens
        end = len(tokens)
        for n, index in self._next.items():
            if end >= n:
                index[tuple(tokens[end - n : end])] = end
        tokens.append(token)

    def extend(self, tokens: Iterable[int]) -> None:
        """Add tokens in order."""
        for token in tokens:
            self.append(token)

    def draft(self, limit: int) -> tuple[int, ...]:
        """Up to ``limit`` tokens that followed the latest earlier occurrence of the longest
        n-gram ending the sequence; empty when no tail of at least ``min_n`` tokens recurs."""
        tokens = self._tokens
        if limit <= 0:
            return ()
        end = len(tokens)
        for n in self._sizes:
            if end < n:
                continue
            follower = self._next[n].get(tuple(tokens[end - n : end]))
            if follower is not None:
                return tuple(tokens[follower : follower + limit])
        return ()


class StepCost:
    """The cost of a decode step as ``fixed + per_token * n_tokens``, fitted online.

    A least-squares line over recent small steps (exponentially weighted), so the engine knows
    what a draft token costs on this machine: on a compute-bound CPU nearly as much as a step
    of its own, on a GPU almost nothing. Until the steps it has seen vary in size it assumes a
    draft token costs as much as the fixed part of a step.
    """

    def __init__(self, decay: float = 0.98, max_tokens: int = 64) -> None:
        self._decay = decay
        self._max_tokens = max_tokens  # larger steps are prompt chunks: another regime
        self._w = self._x = self._y = self._xx = self._xy = 0.0

    def observe(self, n_tokens: int, seconds: float) -> None:
        """One decode of ``n_tokens`` took ``seconds``."""
        if not 0 < n_tokens <= self._max_tokens or seconds <= 0:
            return
        d = self._decay
        self._w = self._w * d + 1.0
        self._x = self._x * d + n_tokens
        self._y = self._y * d + seconds
        self._xx = self._xx * d + n_tokens * n_tokens
        self._xy = self._xy * d + n_tokens * seconds

    def line(self) -> tuple[float, float]:
        """(fixed, per_token) seconds; (1.0, 1.0) as a prior until the fit is determined."""
        w = self._w
        if w < 4:
            return 1.0, 1.0
        mean_x, mean_y = self._x / w, self._y / w
        var_x = self._xx / w - mean_x * mean_x
        if var_x < 0.25:  # every step the same size: no slope to read
            return 1.0, 1.0
        per_token = (self._xy / w - mean_x * mean_y) / var_x
        fixed = mean_y - per_token * mean_x
        if per_token <= 0:
            return 1.0, 0.0  # extra tokens measured free (a GPU)
        return max(fixed, 0.0), per_token

    def per_token_seconds(self) -> float | None:
        """What one more token adds to a step; None until the fit is determined."""
        if self._w < 4:
            return None
        mean_x = self._x / self._w
        if self._xx / self._w - mean_x * mean_x < 0.25:
            return None
        return self.line()[1]

    def draft_threshold(self, decoding: int) -> float:
        """The acceptance probability a draft token needs to raise throughput when
        ``decoding`` sequences share the step: its share of the step's cost per token."""
        fixed, per_token = self.line()
        busy = max(decoding, 1) * per_token
        return busy / (fixed + busy) if fixed + busy > 0 else 1.0


@dataclass
class Acceptance:
    """How often one sequence's drafted tokens are accepted, position by position: each
    verification tests its accepted run plus the first rejected token. Starts optimistic
    (``prior`` over ``weight`` pseudo-trials) so every sequence tries a draft."""

    prior: float = 0.8
    weight: float = 2.0
    accepted: int = 0
    tested: int = 0

    def record(self, drafted: int, accepted: int) -> None:
        """The outcome of one verification of ``drafted`` tokens."""
        if drafted <= 0:
            return
        self.accepted += accepted
        self.tested += accepted + (1 if accepted < drafted else 0)

    @property
    def rate(self) -> float:
        """Estimated probability that the next drafted token is accepted."""
        return (self.accepted + self.prior * self.weight) / (self.tested + self.weight)


def draft_length(rate: float, threshold: float, ceiling: int) -> int:
    """Draft tokens worth verifying: the j-th is accepted with probability ``rate ** j`` and
    is worth its cost only above ``threshold``."""
    if not 0.0 < rate < 1.0:
        return ceiling if rate >= 1.0 else 0
    if threshold <= 0.0:
        return ceiling
    if threshold >= 1.0 or rate <= threshold:
        return 0
    return min(ceiling, int(math.log(threshold) / math.log(rate)))
