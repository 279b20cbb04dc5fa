"""Champion/challenger statistics on simulated users: the right calls, at the error rate set."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from server.rollout.statistics import Decision, Policy, Rollout, confidence_sequence


@dataclass(frozen=True)
class Users:
    """How users meet one variant: 👎 probability when they rate, errors, TTFT."""

    thumbs_down: float
    error: float = 0.0
    ttft_median_s: float = 0.2
    rated_share: float = 0.5  # responses that get a thumb at all


GOOD_FACT = Users(thumbs_down=0.10)  # the challenger that fixes the fact
WRONG_FACT = Users(thumbs_down=0.60)  # the champion users keep correcting


def simulate(
    champion: Users, challenger: Users, *, seed: int, policy: Policy | None = None,
    share: float = 0.5, check_every: int = 10,
) -> tuple[Decision, int]:  # fmt: skip
    """Send requests until the rollout decides (or stops undecided); (decision, requests)."""
    rng = random.Random(seed)
    rollout = Rollout(policy or Policy(max_samples=1500))
    sent = 0
    while True:
        variant = "challenger" if rng.random() < share else "champion"
        users = challenger if variant == "challenger" else champion
        sent += 1
        failed = rng.random() < users.error
        ttft = None if failed else rng.lognormvariate(0.0, 0.3) * users.ttft_median_s
        rollout.observe(variant, error=failed, ttft_s=ttft)
        if not failed and rng.random() < users.rated_share:
            rollout.rate(variant, thumbs_down=rng.random() < users.thumbs_down)
        if sent % check_every == 0:
            decision = rollout.decide()
            if decision.verdict != "continue":
                return decision, sent


def test_a_challenger_that_fixes_a_fact_is_promoted_every_time() -> None:
    outcomes = [simulate(WRONG_FACT, GOOD_FACT, seed=seed, policy=Policy()) for seed in range(20)]
    assert [d.verdict for d, _ in outcomes] == ["promote"] * 20
    # The 👎 share is clear within ~50 requests; showing p95 TTFT no worse (5-point margin)
    # takes most of the rest (docs/flywheel.md, "Rollout").
    challenger = sorted(d.requests["challenger"] for d, _ in outcomes)
    assert challenger[-1] < Policy().max_samples and challenger[10] < 1000, challenger
    decision = outcomes[0][0]
    assert decision.intervals["thumbs_down"].high < 0 and "👎 share lower" in decision.reason
    assert decision.ttft_threshold_s is not None


def test_a_broken_challenger_is_rolled_back_fast() -> None:
    broken = Users(thumbs_down=0.10, error=0.30)  # its users are happy when it answers at all
    outcomes = [simulate(WRONG_FACT, broken, seed=seed) for seed in range(20)]
    assert {d.verdict for d, _ in outcomes} == {"rollback"}
    assert all("error rate is worse" in d.reason for d, _ in outcomes)
    assert max(sent for _, sent in outcomes) <= 400


def test_a_challenger_users_dislike_is_rolled_back() -> None:
    outcomes = [simulate(Users(0.2), Users(0.6), seed=seed) for seed in range(20)]
    assert {d.verdict for d, _ in outcomes} == {"rollback"}
    assert all("👎 share is worse" in d.reason for d, _ in outcomes)


def test_a_better_but_slower_challenger_is_rolled_back_on_p95_ttft() -> None:
    slow = Users(thumbs_down=0.10, ttft_median_s=0.6)  # 3x the champion's TTFT
    outcomes = [simulate(WRONG_FACT, slow, seed=seed) for seed in range(20)]
    assert {d.verdict for d, _ in outcomes} == {"rollback"}
    assert all("p95 TTFT is worse" in d.reason for d, _ in outcomes)


def test_a_challenger_no_different_is_neither_promoted_nor_rolled_back_beyond_alpha() -> None:
    same = Users(thumbs_down=0.3, error=0.01)
    policy = Policy(alpha=0.05, max_samples=600)
    verdicts = [
        simulate(same, same, seed=seed, policy=policy, check_every=5)[0].verdict
        for seed in range(200)
    ]
    wrong = sum(v in ("promote", "rollback") for v in verdicts)
    assert wrong <= 0.05 * len(verdicts), wrong  # checked after every 5 requests
    assert verdicts.count("undecided") == len(verdicts) - wrong


def test_a_tiny_improvement_stops_undecided_at_the_maximum_sample() -> None:
    decision, _ = simulate(Users(0.32), Users(0.30), seed=1, policy=Policy(max_samples=400))
    assert decision.verdict == "undecided"
    assert decision.requests["challenger"] >= 400 and "400 challenger requests" in decision.reason


def test_nothing_is_decided_before_the_minimum_sample() -> None:
    rollout = Rollout(Policy(min_samples=30))
    for _ in range(29):
        rollout.observe("champion", error=False, ttft_s=0.1)
        rollout.observe("challenger", error=True)  # as broken as can be
    assert rollout.decide().verdict == "continue"
    rollout.observe("champion", error=False, ttft_s=0.1)
    rollout.observe("challenger", error=True)
    assert rollout.decide().verdict == "rollback"


def test_promotion_waits_for_the_ttft_threshold() -> None:
    rollout = Rollout(Policy(ttft_warmup=1000))  # never reached here
    for _ in range(300):
        for variant, down in (("champion", True), ("challenger", False)):
            rollout.observe(variant, error=False, ttft_s=0.1)  # type: ignore[arg-type]
            rollout.rate(variant, thumbs_down=down)  # type: ignore[arg-type]
    decision = rollout.decide()
    assert decision.intervals["thumbs_down"].high < 0
    assert decision.verdict == "continue" and decision.ttft_threshold_s is None


def test_the_slow_threshold_is_the_champions_p95_of_its_warmup() -> None:
    rollout = Rollout(Policy(ttft_warmup=100))
    for ms in range(1, 101):
        rollout.observe("challenger", error=False, ttft_s=9.0)  # not counted: no threshold yet
        rollout.observe("champion", error=False, ttft_s=ms / 1000)
    assert rollout.ttft_threshold_s == pytest.approx(0.095)
    assert rollout.arms["challenger"].timed == 0


def test_the_ttft_tolerance_raises_the_slow_threshold() -> None:
    rollout = Rollout(Policy(ttft_warmup=100, ttft_tolerance=0.2))
    for ms in range(1, 101):
        rollout.observe("champion", error=False, ttft_s=ms / 1000)
    assert rollout.ttft_threshold_s == pytest.approx(0.095 * 1.2)
    rollout.observe("challenger", error=False, ttft_s=0.110)  # above p95, within 20 %
    assert (rollout.arms["challenger"].timed, rollout.arms["challenger"].slow) == (1, 0)


def test_the_confidence_sequence_narrows_and_holds_the_true_difference() -> None:
    wide = confidence_sequence((30, 100), (10, 100), alpha=0.05, tau=0.1)
    narrow = confidence_sequence((300, 1000), (100, 1000), alpha=0.05, tau=0.1)
    assert wide.estimate == narrow.estimate == pytest.approx(-0.2)
    assert wide.low < narrow.low < -0.2 < narrow.high < wide.high
    stricter = confidence_sequence((300, 1000), (100, 1000), alpha=0.001, tau=0.1)
    assert stricter.high - stricter.low > narrow.high - narrow.low


def test_no_samples_say_nothing_and_zero_events_still_give_a_finite_interval() -> None:
    empty = confidence_sequence((0, 0), (0, 10), alpha=0.05, tau=0.1)
    assert (empty.low, empty.high) == (-1.0, 1.0)
    zero = confidence_sequence((0, 500), (0, 500), alpha=0.05, tau=0.1)
    assert -0.05 < zero.low < 0 < zero.high < 0.05


@pytest.mark.parametrize(
    "kwargs",
    [{"alpha": 0.0}, {"alpha": 1.0}, {"tau": 0.0}, {"min_samples": 0},
     {"min_samples": 10, "max_samples": 5}, {"ttft_quantile": 1.0}, {"ttft_warmup": 0},
     {"ttft_tolerance": -0.1}, {"alpha": 1e-320}, {"tau": 1e-200}, {"tau": float("nan")},
     {"error_margin": float("inf")}],
)  # fmt: skip
def test_a_policy_out_of_range_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Policy(**kwargs)  # type: ignore[arg-type]
