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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from server.engine.micro_batches import graph_passes

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
    """The cost of a decode step as ``fixed + per_pass * extra_passes + per_token * n_tokens``,
    fitted online.

    A least-squares fit over recent small steps (exponentially weighted), so the engine knows
    what a draft token costs on this machine: on a compute-bound CPU nearly as much as a step
    of its own, on a GPU almost nothing. ``extra_passes`` counts the micro-batches beyond the
    first (``micro_batches.graph_passes``): a draft beside other decoding sequences, or an idle
    slot between busy ones, makes llama.cpp run the weights once more (on the 2-core CPU 8
    sequences cost 37 ms in one pass, 47 ms in two). Until the steps seen vary in size, a
    token is priced like the fixed part of a step; until they vary in passes, so is an extra
    pass.
    """

    def __init__(self, decay: float = 0.98, max_tokens: int = 64) -> None:
        self._decay = decay
        self._max_tokens = max_tokens  # larger steps are prompt chunks: another regime
        # Weighted sums of 1, t (tokens), p (extra passes), y (seconds) and their products.
        self._w = self._t = self._p = self._y = 0.0
        self._tt = self._pp = self._tp = self._ty = self._py = 0.0
        self._fitted: tuple[float, float, float] | None = None
        self._stale = False  # _fitted is None and right until the first observation

    def observe(self, n_tokens: int, seconds: float, passes: int = 1) -> None:
        """One decode of ``n_tokens`` in ``passes`` micro-batches took ``seconds``."""
        if not 0 < n_tokens <= self._max_tokens or seconds <= 0:
            return
        self._stale = True
        d, t, p, y = self._decay, float(n_tokens), float(max(passes - 1, 0)), seconds
        self._w = self._w * d + 1.0
        self._t = self._t * d + t
        self._p = self._p * d + p
        self._y = self._y * d + y
        self._tt = self._tt * d + t * t
        self._pp = self._pp * d + p * p
        self._tp = self._tp * d + t * p
        self._ty = self._ty * d + t * y
        self._py = self._py * d + p * y

    def fit(self) -> tuple[float, float, float] | None:
        """(fixed, per_pass, per_token) seconds; None until steps of different sizes were seen.

        ``per_pass`` is ``fixed`` until steps with and without extra passes were seen (or
        when passes and tokens rose together, so the two cannot be told apart). Solved once per
        observation: a step reads it several times (thresholds, draft choice)."""
        if self._stale:
            self._fitted, self._stale = self._solve(), False
        return self._fitted

    def _solve(self) -> tuple[float, float, float] | None:
        w = self._w
        if w < 4:
            return None
        mt, mp, my = self._t / w, self._p / w, self._y / w
        vtt = self._tt / w - mt * mt
        if vtt < 0.25:  # every step the same size: no slope to read
            return None
        vpp, vtp = self._pp / w - mp * mp, self._tp / w - mt * mp
        vty, vpy = self._ty / w - mt * my, self._py / w - mp * my
        det = vtt * vpp - vtp * vtp
        if vpp >= 0.02 and det >= 0.1 * vtt * vpp:
            per_token = (vty * vpp - vpy * vtp) / det
            per_pass = max((vpy * vtt - vty * vtp) / det, 0.0)
            fixed = my - per_token * mt - per_pass * mp
        else:
            per_token = vty / vtt
            fixed = my - per_token * mt
            per_pass = -1.0  # unknown: priced as the fixed part below
        if per_token <= 0:
            return max(fixed, 0.0), max(per_pass, 0.0), 0.0  # extra tokens measured free (a GPU)
        fixed = max(fixed, 0.0)
        return fixed, per_pass if per_pass >= 0 else fixed, per_token

    def line(self) -> tuple[float, float]:
        """(fixed, per_token) seconds; (1.0, 1.0) as a prior until the fit is determined."""
        fitted = self.fit()
        return (1.0, 1.0) if fitted is None else (fitted[0], fitted[2])

    def per_token_seconds(self) -> float | None:
        """What one more token adds to a step; None until the fit is determined."""
        fitted = self.fit()
        return None if fitted is None else fitted[2]

    def step_seconds(self, n_tokens: int, passes: int) -> float:
        """Predicted seconds of a step (the prior prices a token and a pass like a step)."""
        fixed, per_pass, per_token = self.fit() or (1.0, 1.0, 1.0)
        return fixed + per_pass * max(passes - 1, 0) + per_token * n_tokens

    def draft_threshold(self, decoding: int) -> float:
        """The acceptance probability a draft token needs to raise throughput when
        ``decoding`` sequences share the step: its share of the step's cost per token."""
        fixed, per_token = self.line()
        busy = max(decoding, 1) * per_token
        return busy / (fixed + busy) if busy > 0 else 0.0


class StepCosts:
    """``StepCost`` fitted separately per number of decoding sequences (1, 2, 3–4, 5–8, ...).

    On a CPU a token is dearer in a small micro-batch than in a large one (on the 2-core box
    9 ms alone, 4 ms among 8: ``python -m bench pass_costs``), so one line over every step
    would price a lone sequence's draft at the 8-sequence rate and draft far too much. Each
    bucket starts from the prior (a token priced like a step's fixed part); ``overall`` fits
    every step, for what does not depend on the batch (the prefix-reuse thresholds).
    """

    def __init__(self) -> None:
        self.overall = StepCost()
        self._buckets: dict[int, StepCost] = {}
        self._prior = StepCost()  # never observed: what an unseen bucket answers

    @staticmethod
    def bucket(decoding: int) -> int:
        """The bucket of a step with ``decoding`` sequences: the next power of two."""
        return 1 if decoding <= 1 else 1 << (decoding - 1).bit_length()

    def observe(self, decoding: int, n_tokens: int, seconds: float, passes: int = 1) -> None:
        """A step with ``decoding`` decoding sequences ran ``n_tokens`` in ``passes``."""
        self.overall.observe(n_tokens, seconds, passes)
        if decoding <= 0:
            return  # a prompt-only step says nothing about what a draft costs
        key = self.bucket(decoding)
        if key not in self._buckets:
            self._buckets[key] = StepCost()
        self._buckets[key].observe(n_tokens, seconds, passes)

    def for_decoding(self, decoding: int) -> StepCost:
        """The cost model of steps with ``decoding`` sequences (the prior until seen)."""
        return self._buckets.get(self.bucket(decoding), self._prior)


def expected_yield(rate: float, length: int) -> float:
    """Expected accepted tokens of a ``length``-token draft whose j-th token is accepted with
    probability ``rate ** j`` (acceptance stops at the first miss)."""
    return sum(rate**j for j in range(1, length + 1))


def choose_drafts(
    decoding: Sequence[int],
    drafts: Mapping[int, tuple[float, int]],
    cost: StepCost,
    n_ubatch: int = 512,
) -> set[int]:
    """The sequences whose drafts the next step should verify, for the most tokens per second.

    ``decoding``: the seq ids decoding one token each; ``drafts``: seq id -> (acceptance
    rate, draft length) of the candidates, each already worth its tokens on their own
    (``draft_length``). What they miss is that a draft beside other sequences adds a pass
    over the weights (``graph_passes``), shared only by drafts of equal length on consecutive
    seq ids. Greedy: add the draft that raises expected tokens per second the most, while one
    does; then the whole set is tried too (two drafts can pay for one shared pass together).
    """
    if not drafts:
        return set()
    base = {seq_id: 1 for seq_id in decoding}

    def tokens_per_second(chosen: Iterable[int]) -> float:
        rows = dict(base)
        produced = float(len(base))
        for seq_id in chosen:
            rate, length = drafts[seq_id]
            rows[seq_id] = rows.get(seq_id, 0) + length
            produced += expected_yield(rate, length)
        seconds = cost.step_seconds(sum(rows.values()), graph_passes(rows.items(), n_ubatch))
        return produced / seconds if seconds > 0 else produced

    chosen: set[int] = set()
    best = tokens_per_second(chosen)
    while True:
        options = [(tokens_per_second(chosen | {s}), s) for s in drafts if s not in chosen]
        if not options:
            break
        value, seq_id = max(options)
        if value <= best:
            break
        chosen.add(seq_id)
        best = value
    if len(chosen) < len(drafts) and tokens_per_second(drafts) > best:
        return set(drafts)
    return chosen


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
