"""Prompt-lookup drafting, the acceptance curves and the draft budget, without a model."""

from __future__ import annotations

import random

import pytest

from server.engine.speculation import (
    MAX_MATCH,
    RECORD_DECAY,
    SHAPE_STALE,
    AcceptanceCurve,
    AcceptanceCurves,
    NgramDrafter,
    StepCost,
    StepCosts,
    best_draft_length,
    choose_drafts,
)


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


def test_a_proposal_says_how_long_a_repeat_it_continues() -> None:
    passage = [20, 21, 22, 23, 24, 25, 26, 27]
    drafter = NgramDrafter([1, *passage, 2])
    drafter.extend([9, 20, 21])  # a 2-token repeat
    assert drafter.propose(3).tokens == (22, 23, 24) and drafter.propose(3).match == 2
    drafter.extend([22, 23, 24, 25])  # the answer quotes on: 6 tokens repeat
    assert drafter.propose(2).tokens == (26, 27) and drafter.propose(2).match == 6
    assert drafter.propose(0).tokens == () and NgramDrafter([1, 2]).propose(4).match == 0
    looped = NgramDrafter([7, 8] * 40)  # the repeat's length is capped
    assert looped.propose(1).match == MAX_MATCH


def test_acceptance_curve_learns_each_position_given_the_ones_before() -> None:
    curve = AcceptanceCurve(prior=0.8, weight=2.0, ceiling=4)
    assert curve.conditional(1) == pytest.approx(0.8)
    assert curve.expected(2) == pytest.approx(0.8 + 0.64)
    curve.record(4, 0)  # position 1 tested and rejected; 2..4 never reached
    assert curve.conditional(1) == pytest.approx(1.6 / 3)
    assert curve.conditional(2) == pytest.approx(0.8)
    curve.record(4, 4)  # positions 1..4 accepted, nothing rejected
    curve.record(3, 2)  # 1 and 2 accepted, 3 rejected
    d = RECORD_DECAY  # each record fades what came before
    tested_1, accepted_1 = d * d + d + 1, d + 1
    assert curve.conditional(1) == pytest.approx((accepted_1 + 1.6) / (tested_1 + 2))
    assert curve.conditional(2) == pytest.approx((d + 1 + 1.6) / (d + 1 + 2))
    assert curve.conditional(3) == pytest.approx((d + 1.6) / (d + 1 + 2))
    assert curve.conditional(9) == curve.conditional(4)  # past the ceiling: the last one
    before = curve.conditional(1)
    curve.record(0, 0)  # nothing drafted: nothing learnt, nothing faded
    assert curve.conditional(1) == before


def test_a_curve_priced_out_by_early_misses_is_tried_again_later() -> None:
    curve = AcceptanceCurve()
    for _ in range(30):
        curve.record(2, 0)
    assert best_draft_length(curve, 8, cpu_seconds) == 0
    skipped = 0
    while best_draft_length(curve, 8, cpu_seconds) == 0:
        curve.skipped()
        skipped += 1
    assert 500 < skipped < 5000  # thousands of steps of no drafts, then one more try
    for _ in range(200):  # and recent evidence outweighs old: the traffic turned to quotes
        curve.record(4, 4)
    assert curve.conditional(1) > 0.95


def test_drafts_are_learnt_apart_by_the_length_of_their_repeat() -> None:
    curves = AcceptanceCurves()
    assert [curves.bucket(m) for m in (2, 3, 4, 5, 6, 9, 10, 32)] == [2, 3, 5, 5, 9, 9, 32, 32]
    assert curves.curve(4) is curves.curve(5) and curves.curve(3) is not curves.curve(4)
    for _ in range(20):
        curves.curve(2).record(4, 0)
    assert (
        curves.curve(2).conditional(1) < 0.2 < 0.8 == pytest.approx(curves.curve(12).conditional(1))
    )


# A lone sequence's step on the 2-core box (ms, 1..9 tokens): the first extra token is dear.
CPU_SHAPES = (10.6, 18.3, 22.6, 26.9, 33.6, 37.9, 42.5, 45.3, 51.6)


def cpu_seconds(n: int) -> float:
    return CPU_SHAPES[n - 1] / 1000


def test_a_draft_is_as_long_as_its_expected_tokens_pay_for() -> None:
    quoting = AcceptanceCurve(prior=0.95, weight=1000)  # a long repeat: nearly always kept
    assert best_draft_length(quoting, 8, cpu_seconds) == 7  # 8 rows in 45.3 ms beat 9 in 51.6
    guessing = AcceptanceCurve(prior=0.5, weight=1000)
    assert best_draft_length(guessing, 8, cpu_seconds) == 0  # 1.5 tokens for 1.7 steps: no
    assert best_draft_length(guessing, 8, lambda n: 0.010) == 8  # rows free (a GPU): all
    assert best_draft_length(quoting, 3, cpu_seconds) == 3  # what the drafter found
    assert best_draft_length(quoting, 0, cpu_seconds) == 0


def test_step_cost_fits_a_line_and_prices_a_draft_token() -> None:
    cost = StepCost(decay=1.0)
    assert cost.line() == (1.0, 1.0)  # the prior: a token costs the fixed part
    for n in (1, 2, 3, 5, 9) * 3:
        cost.observe(n, 0.005 + 0.006 * n)
    fixed, per_token = cost.line()
    assert fixed == pytest.approx(0.005) and per_token == pytest.approx(0.006)
    assert cost.step_seconds(4) == pytest.approx(0.029)  # a shape never seen: the line
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
    assert cost.per_token_seconds() == pytest.approx(0.0, abs=1e-12)
    assert best_draft_length(AcceptanceCurve(prior=0.3), 6, cost.step_seconds) == 6


def test_a_shape_seen_a_few_times_is_priced_at_its_own_recent_mean() -> None:
    cost = StepCost(decay=1.0)
    for n in range(1, 10):  # a CPU's curve, not a line
        for _ in range(3):
            cost.observe(n, cpu_seconds(n))
    assert cost.step_seconds(2) == pytest.approx(0.0183)  # the line says ~0.0167
    assert cost.step_seconds(9) == pytest.approx(0.0516)
    fixed, per_token = cost.line()
    assert cost.step_seconds(12) == pytest.approx(fixed + 12 * per_token)  # unseen: the line
    for _ in range(30):  # the machine slowed down: the shape's mean follows
        cost.observe(2, 0.030)
    assert cost.step_seconds(2) == pytest.approx(0.030, rel=0.02)
    curve = AcceptanceCurve(prior=0.75, weight=1000)
    assert best_draft_length(curve, 8, cost.step_seconds) > 0


def test_a_shape_not_seen_lately_is_priced_by_the_line_again() -> None:
    cost = StepCost(decay=1.0)
    for n in range(1, 10):
        for _ in range(3):
            cost.observe(n, cpu_seconds(n))
    for _ in range(3):
        cost.observe(5, 0.5)  # a busy minute: 5-token steps measured absurdly slow
    assert cost.step_seconds(5) > 0.1
    for _ in range(SHAPE_STALE + 1):  # then only plain steps
        cost.observe(1, cpu_seconds(1))
    fixed, per_token = cost.line()
    assert cost.step_seconds(5) == pytest.approx(fixed + 5 * per_token)


def fitted(fixed: float, per_pass: float, per_token: float) -> StepCost:
    """A StepCost that has seen steps of this machine: sizes 1..9, some with extra passes."""
    cost = StepCost(decay=1.0)
    for n in (1, 2, 3, 5, 8, 9) * 3:
        for extra in (0, 0, 1, 2):
            cost.observe(n, fixed + per_pass * extra + per_token * n, 1 + extra)
    return cost


def test_step_cost_tells_a_pass_from_a_token() -> None:
    cost = fitted(0.012, 0.010, 0.0027)
    assert cost.fit() == pytest.approx((0.012, 0.010, 0.0027))
    assert cost.line() == pytest.approx((0.012, 0.0027))  # what a draft's tokens cost
    assert cost.step_seconds(8, 1) == pytest.approx(0.012 + 8 * 0.0027)
    assert cost.step_seconds(9, 2) == pytest.approx(0.022 + 9 * 0.0027)


def test_step_cost_prices_an_unseen_pass_like_the_fixed_part() -> None:
    cost = StepCost(decay=1.0)
    assert cost.fit() is None
    assert cost.step_seconds(3, 2) == pytest.approx(1.0 + 1.0 + 3.0)  # the prior
    for n in (1, 2, 3, 5, 9) * 3:
        cost.observe(n, 0.005 + 0.006 * n)  # one sequence: never an extra pass
    assert cost.fit() == pytest.approx((0.005, 0.005, 0.006))


def test_step_cost_keeps_a_token_price_when_passes_rise_with_tokens() -> None:
    cost = StepCost(decay=1.0)
    for n in (1, 2, 3, 4) * 4:  # every extra token came with an extra pass: no telling apart
        cost.observe(n, 0.01 * n, passes=n)
    fixed, per_pass, per_token = cost.fit() or (0, 0, 0)
    assert per_token == pytest.approx(0.01) and per_pass == pytest.approx(fixed)


CPU = (0.012, 0.010, 0.0027)  # the 2-core box, SmolLM2 Q4_1: a pass costs ~4 tokens
GPU = (0.010, 0.0005, 0.0)  # extra rows free, a pass nearly so


def test_one_draft_beside_seven_decoding_sequences_is_not_worth_its_pass_on_a_cpu() -> None:
    decoding = list(range(8))
    assert choose_drafts(decoding, {5: (3.1, 4)}, fitted(*CPU)) == set()
    assert choose_drafts(decoding, {5: (3.1, 4)}, fitted(*GPU)) == {5}


def test_a_lone_sequence_keeps_a_draft_worth_its_tokens() -> None:
    assert choose_drafts([3], {3: (3.1, 4)}, fitted(*CPU)) == {3}
    assert choose_drafts([3], {3: (0.1, 4)}, fitted(*CPU)) == set()


def test_drafts_that_share_one_pass_are_kept_together() -> None:
    decoding = list(range(8))
    cheap_tokens = (0.010, 0.010, 0.0005)
    everyone = {s: (2.4, 4) for s in decoding}  # equal drafts on all 8: still one pass
    assert choose_drafts(decoding, everyone, fitted(*cheap_tokens)) == set(decoding)
    apart = {1: (2.4, 4), 3: (2.4, 4), 5: (2.4, 4)}  # each its own pass: none pays
    assert choose_drafts(decoding, apart, fitted(*cheap_tokens)) == set()


def test_choose_drafts_with_no_candidates_is_empty() -> None:
    assert choose_drafts([0, 1], {}, fitted(*CPU)) == set()


def test_step_costs_price_a_token_by_how_many_sequences_share_the_step() -> None:
    costs = StepCosts()
    for extra in (0, 1, 3) * 4:  # a lone sequence: 9 ms, drafts 7 ms a token
        costs.observe(1, 1 + extra, 0.009 + 0.007 * extra)
    for n in (8, 9, 11) * 4:  # eight sequences: 3 ms a token
        costs.observe(8, n, 0.037 + 0.003 * (n - 8))
    costs.observe(0, 40, 0.5)  # a prompt-only step: no bucket
    assert costs.for_decoding(1).per_token_seconds() == pytest.approx(0.007)
    assert costs.for_decoding(8).per_token_seconds() == pytest.approx(0.003)
    assert costs.for_decoding(6) is costs.for_decoding(8)  # 5-8 share a bucket
    assert costs.for_decoding(2).fit() is None  # unseen: the prior
    assert [StepCosts.bucket(d) for d in (0, 1, 2, 3, 4, 5, 8, 9)] == [1, 1, 2, 4, 4, 8, 8, 16]
