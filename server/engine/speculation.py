"""Draft tokens without a draft model: prompt lookup (n-gram) speculation.

An answer that quotes its context (a RAG answer, a code edit, a summary) repeats runs of
tokens the prompt already holds. ``NgramDrafter`` finds the longest recent n-gram that ends
the text so far and proposes the tokens that followed its previous occurrence; the engine
evaluates them in the same ``llama_decode`` as every other slot and keeps the run the model
agrees with. Sampling each verified row with the request's own sampler chain and stopping at
the first disagreement gives exactly the tokens (and, for temperature > 0, the distribution)
that decoding one token at a time gives.

How many tokens to draft is a cost decision. ``AcceptanceCurves`` learns, engine-wide, how
often the j-th drafted token is accepted given the ones before it were, separately by how long
the matched tail is (a 10-token repeat is a quote far more often than a 2-token one);
``StepCost`` measures what a step of each shape costs on this machine; ``best_draft_length``
drafts the length that gives the most expected tokens per second, nothing when no length beats
a plain step. On the 2-core CPU a step of 2 tokens costs 1.7 plain steps and one of 9 tokens
4.9 (the next tokens are cheaper than the first), so only likely quotes are drafted; on a GPU,
where extra rows are nearly free, drafts run to the ceiling.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from server.engine.micro_batches import graph_passes

MIN_NGRAM = 2  # a 1-gram match proposes noise far more often than a quote
MAX_NGRAM = 4
MAX_MATCH = 32  # how far back a matched tail is followed to measure its length
SHAPE_DECAY = 0.9  # a step shape's mean follows its last ~10 observations (context grows)
SHAPE_SEEN = 2.5  # decayed observations before a shape's own mean replaces the line
SHAPE_STALE = 256  # steps after a shape's last observation when its mean is no longer used
RECORD_DECAY = 0.99  # an acceptance curve weighs about its last 100 verifications
SKIP_DECAY = 0.998  # and forgets slowly while it keeps pricing drafts out


@dataclass(frozen=True)
class Draft:
    """Proposed tokens, and how many tokens before them repeat an earlier run (``match``): the
    longer the repeat, the likelier the answer is quoting and the draft is accepted."""

    tokens: tuple[int, ...] = ()
    match: int = 0


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
        return self.propose(limit).tokens

    def propose(self, limit: int) -> Draft:
        """``draft(limit)`` with the length of the repeat it continues (up to ``MAX_MATCH``)."""
        tokens = self._tokens
        if limit <= 0:
            return Draft()
        end = len(tokens)
        for n in self._sizes:
            if end < n:
                continue
            follower = self._next[n].get(tuple(tokens[end - n : end]))
            if follower is not None:
                match = n
                while (
                    match < MAX_MATCH
                    and follower > match
                    and tokens[follower - 1 - match] == tokens[end - 1 - match]
                ):
                    match += 1
                return Draft(tuple(tokens[follower : follower + limit]), match)
        return Draft()


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

    A CPU's step is not quite a line: the first extra token costs more than the next ones
    (on the 2-core box 1 token 10.6 ms, 2 tokens 18.3, 5 tokens 33.6). So a step of a shape
    (tokens, passes) seen a few times lately is priced at its own recent mean, and the line
    answers for the others.
    """

    def __init__(self, decay: float = 0.98, max_tokens: int = 64) -> None:
        self._decay = decay
        self._max_tokens = max_tokens  # larger steps are prompt chunks: another regime
        # Weighted sums of 1, t (tokens), p (extra passes), y (seconds) and their products.
        self._w = self._t = self._p = self._y = 0.0
        self._tt = self._pp = self._tp = self._ty = self._py = 0.0
        self._fitted: tuple[float, float, float] | None = None
        self._stale = False  # _fitted is None and right until the first observation
        # (tokens, passes) -> (weight, weighted seconds, step number when last seen); decayed
        # per observation of the shape
        self._shapes: dict[tuple[int, int], tuple[float, float, int]] = {}
        self._steps = 0

    def observe(self, n_tokens: int, seconds: float, passes: int = 1) -> None:
        """One decode of ``n_tokens`` in ``passes`` micro-batches took ``seconds``."""
        if not 0 < n_tokens <= self._max_tokens or seconds <= 0:
            return
        self._stale = True
        self._steps += 1
        shape = (n_tokens, max(passes, 1))
        weight, total, _ = self._shapes.get(shape, (0.0, 0.0, 0))
        self._shapes[shape] = (
            weight * SHAPE_DECAY + 1.0,
            total * SHAPE_DECAY + seconds,
            self._steps,
        )
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

    def step_seconds(self, n_tokens: int, passes: int = 1) -> float:
        """Predicted seconds of a step: once the line is fitted, the recent mean of that shape
        if it was seen a few times and lately (a mean measured on a busy minute must not price
        a shape out for good), else the line; before the fit, the prior (a token and a pass
        priced like a step)."""
        fitted = self.fit()
        weight, total, last = self._shapes.get((n_tokens, max(passes, 1)), (0.0, 0.0, 0))
        if fitted is not None and weight >= SHAPE_SEEN and self._steps - last <= SHAPE_STALE:
            return total / weight
        fixed, per_pass, per_token = fitted or (1.0, 1.0, 1.0)
        return fixed + per_pass * max(passes - 1, 0) + per_token * n_tokens


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


def choose_drafts(
    decoding: Sequence[int],
    drafts: Mapping[int, tuple[float, int]],
    cost: StepCost,
    n_ubatch: int = 512,
) -> set[int]:
    """The sequences whose drafts the next step should verify, for the most tokens per second.

    ``decoding``: the seq ids decoding one token each; ``drafts``: seq id -> (expected accepted
    tokens, draft length) of the candidates, each already worth its tokens on their own
    (``best_draft_length``). What they miss is that a draft beside other sequences adds a pass
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
            expected, length = drafts[seq_id]
            rows[seq_id] = rows.get(seq_id, 0) + length
            produced += expected
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


class AcceptanceCurve:
    """How often the j-th token of a draft is accepted when the ones before it were
    (j = 1 .. ``ceiling``), from verifications, starting from an optimistic ``prior`` over
    ``weight`` pseudo-trials so that every length gets tried. Acceptance comes in runs (a quote
    is accepted token after token, a miss at its first token), which one rate per token, raised
    to the j-th power, prices badly."""

    def __init__(self, prior: float = 0.8, weight: float = 2.0, ceiling: int = 64) -> None:
        self._prior, self._weight = prior, weight
        # Counts in units of ``_unit``, what one new observation adds: fading all the evidence
        # by f is dividing the unit by f, O(1) on the engine's hot path.
        self._accepted = [0.0] * (ceiling + 1)
        self._tested = [0.0] * (ceiling + 1)
        self._unit = 1.0

    def record(self, drafted: int, accepted: int) -> None:
        """One verification of ``drafted`` tokens of which the first ``accepted`` were kept:
        positions 1 .. accepted were accepted, position accepted + 1 (if drafted) was not.
        Older evidence fades (``RECORD_DECAY``): the traffic, and so the acceptance, changes."""
        if drafted <= 0:
            return
        self._fade(RECORD_DECAY)
        top = min(drafted, accepted + 1, len(self._tested) - 1)
        for j in range(1, top + 1):
            self._tested[j] += self._unit
            if j <= accepted:
                self._accepted[j] += self._unit

    def skipped(self) -> None:
        """A draft this curve priced out was not verified. Its evidence fades slowly
        (``SKIP_DECAY``) so that the prior comes back and a curve that a few early misses
        priced out is tried again (a few thousand skipped proposals later)."""
        self._fade(SKIP_DECAY)

    def _fade(self, factor: float) -> None:
        self._unit /= factor
        if self._unit > 1e100:  # rescale before the counts overflow
            self._accepted = [count / self._unit for count in self._accepted]
            self._tested = [count / self._unit for count in self._tested]
            self._unit = 1.0

    def conditional(self, j: int) -> float:
        """P(token j accepted | tokens 1 .. j-1 accepted)."""
        if j >= len(self._tested):
            j = len(self._tested) - 1
        accepted, tested = self._accepted[j] / self._unit, self._tested[j] / self._unit
        return (accepted + self._prior * self._weight) / (tested + self._weight)

    def expected(self, length: int) -> float:
        """Expected accepted tokens of a ``length``-token draft."""
        total, survive = 0.0, 1.0
        for j in range(1, length + 1):
            survive *= self.conditional(j)
            total += survive
        return total


class AcceptanceCurves:
    """One ``AcceptanceCurve`` per length of the repeat a draft continues: 2, 3, 4-5, 6-9,
    10+ tokens. On the RAG eval set's answers a 2-token repeat's first token was accepted
    51 % of the time, a 10+-token repeat's 94 %."""

    BOUNDS = (2, 3, 5, 9)

    def __init__(self) -> None:
        self._curves: dict[int, AcceptanceCurve] = {}

    def bucket(self, match: int) -> int:
        """The bucket of a repeat of ``match`` tokens (its upper bound; MAX_MATCH past 9)."""
        return next((bound for bound in self.BOUNDS if match <= bound), MAX_MATCH)

    def curve(self, match: int) -> AcceptanceCurve:
        """The curve for drafts continuing a ``match``-token repeat."""
        key = self.bucket(match)
        if key not in self._curves:
            self._curves[key] = AcceptanceCurve()
        return self._curves[key]


def best_draft_length(
    curve: AcceptanceCurve, limit: int, step_seconds: Callable[[int], float], rows: int = 1
) -> int:
    """The draft length (0 .. ``limit``) that gives the most expected tokens per second for a
    step of ``rows`` decode tokens plus the draft, ``step_seconds(n)`` pricing an n-token step;
    0 when no draft beats the plain step."""
    best_length, best = 0, rows / max(step_seconds(rows), 1e-9)
    expected = 0.0
    survive = 1.0
    for length in range(1, limit + 1):
        survive *= curve.conditional(length)
        expected += survive
        value = (rows + expected) / max(step_seconds(rows + length), 1e-9)
        if value > best:
            best_length, best = length, value
    return best_length
