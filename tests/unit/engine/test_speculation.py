"""Prompt-lookup drafting and the per-sequence draft budget, without a model."""

from __future__ import annotations

import random

import pytest

from server.engine.speculation import Acceptance, NgramDrafter, StepCost, draft_length


def naive_draft(tokens: list[int], limit: int, min_n: int = 2, max_n: int = 4) -> tuple[int, ...]:
    """The definition: longest tail n-gram, latest earlier occurrence with a follower."""
    for n in range(max_n, min_n - 1, -1):
        if len(tokens) < n:
            continue
        tail = tokens[-n:]
        for start in range(len(tokens) - n - 1, -1, -1):
            if tokens[start : start + n] == tail:
                return tuple(tokens[start + n : start + n + limit])
    return ()


def test_a_quoted_passage_is_drafted_from_the_prompt() -> None:
    passage = [11, 12, 13, 14, 15, 16, 17]
    drafter = NgramDrafter([1, 2, *passage, 3, 4])
    drafter.extend([9, 11, 12])  # the answer starts quoting
    assert drafter.draft(4) == (13, 14, 15, 16)
    assert drafter.draft(100) == (13, 14, 15, 16, 17, 3, 4, 9, 11, 12)


def test_the_latest_occurrence_wins_and_longer_ngrams_first() -> None:
    drafter = NgramDrafter([5, 6, 1, 7, 6, 1, 8, 9, 5, 6, 1])
    # the 3-gram (5, 6, 1) occurred once, followed by 7; the 2-gram (6, 1) last by 8
    assert drafter.draft(1) == (7,)


def test_no_recurring_tail_no_draft() -> None:
    assert NgramDrafter([1, 2, 3, 4]).draft(5) == ()
    assert NgramDrafter([]).draft(5) == ()
    assert NgramDrafter([1, 2, 1, 2]).draft(0) == ()


@pytest.mark.parametrize("seed", range(20))
def test_matches_the_definition_on_random_sequences(seed: int) -> None:
    rng = random.Random(seed)
    tokens = [rng.randrange(6) for _ in range(rng.randrange(1, 120))]
    drafter = NgramDrafter()
    for i, token in enumerate(tokens):
        drafter.append(token)
        assert drafter.draft(5) == naive_draft(tokens[: i + 1], 5)


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        NgramDrafter(min_n=3, max_n=2)


def test_acceptance_starts_optimistic_and_learns() -> None:
    acceptance = Acceptance(prior=0.8, weight=2.0)
    assert acceptance.rate == pytest.approx(0.8)
    acceptance.record(4, 0)  # one position tested, rejected
    assert acceptance.rate == pytest.approx(1.6 / 3)
    acceptance.record(4, 4)  # four accepted, no rejection tested
    assert acceptance.rate == pytest.approx(5.6 / 7)
    acceptance.record(0, 0)  # nothing drafted: nothing learnt
    assert acceptance.rate == pytest.approx(5.6 / 7)


@pytest.mark.parametrize(
    ("rate", "threshold", "ceiling", "expected"),
    [
        (0.9, 0.5, 8, 6),  # 0.9**6 = 0.53 > 0.5 > 0.9**7
        (0.9, 0.5, 4, 4),  # the ceiling rules
        (0.6, 0.5, 8, 1),
        (0.5, 0.5, 8, 0),  # no better than its cost
        (0.8, 0.9, 8, 0),  # a busy batch: only near-certain drafts
        (0.99, 0.0, 8, 8),  # free draft tokens (a GPU)
        (1.0, 0.5, 8, 8),
        (0.0, 0.5, 8, 0),
    ],
)
def test_draft_length_weighs_yield_against_cost(
    rate: float, threshold: float, ceiling: int, expected: int
) -> None:
    assert draft_length(rate, threshold, ceiling) == expected


def test_step_cost_fits_a_line_and_prices_a_draft_token() -> None:
    cost = StepCost(decay=1.0)
    assert cost.line() == (1.0, 1.0)  # the prior: a token costs the fixed part
    assert cost.draft_threshold(1) == pytest.approx(0.5)
    for n in (1, 2, 3, 5, 9) * 3:
        cost.observe(n, 0.005 + 0.006 * n)
    fixed, per_token = cost.line()
    assert fixed == pytest.approx(0.005) and per_token == pytest.approx(0.006)
    assert cost.draft_threshold(1) == pytest.approx(0.006 / 0.011)
    assert cost.draft_threshold(8) == pytest.approx(0.048 / 0.053)
    cost.observe(512, 9.0)  # a prompt chunk: another regime, ignored
    assert cost.line() == pytest.approx((0.005, 0.006))


def test_step_cost_of_same_size_steps_keeps_the_prior() -> None:
    cost = StepCost()
    for _ in range(10):
        cost.observe(1, 0.01)
    assert cost.line() == (1.0, 1.0)


def test_free_extra_tokens_mean_drafting_is_always_worth_it() -> None:
    cost = StepCost(decay=1.0)
    for n in (1, 4, 8) * 3:
        cost.observe(n, 0.01)
    assert cost.draft_threshold(8) == pytest.approx(0.0, abs=1e-9)
