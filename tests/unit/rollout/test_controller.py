"""The rollout controller: sticky arms, outcomes fed to the right arm, and what each ending
changes for the requests that follow."""

from __future__ import annotations

import pytest

from server.rollout.controller import (
    Assignment,
    RolloutController,
    RolloutError,
    RolloutRun,
    RolloutSpec,
)
from server.rollout.statistics import Policy

FAST = Policy(
    min_samples=5, ttft_warmup=5, tau=0.5, max_samples=400, slow_margin=0.3, error_margin=0.1
)


def started(share: float = 0.5, sticky: str = "user") -> tuple[RolloutController, list[RolloutRun]]:
    ended: list[RolloutRun] = []
    controller = RolloutController(on_end=ended.append)
    controller.start(
        RolloutSpec("fix", share=share, sticky=sticky, policy=FAST),  # type: ignore[arg-type]
        by="admin",
    )
    return controller, ended


def test_without_a_rollout_every_request_gets_the_default_adapter() -> None:
    controller = RolloutController(default_adapter="v2")
    assert controller.assign("key", "alice") == Assignment("v2")


def test_each_user_stays_on_one_arm_and_the_share_is_respected() -> None:
    controller, _ = started(share=0.3)
    arms = {user: controller.assign("key", user) for user in (f"u{i}" for i in range(2000))}
    assert all(controller.assign("key", u) == arms[u] for u in list(arms)[:200])  # sticky
    challengers = sum(a.variant == "challenger" for a in arms.values())
    assert 0.26 < challengers / 2000 < 0.34
    assert {a.adapter for a in arms.values()} == {"", "fix"}


def test_sticky_per_key_ignores_the_user_field() -> None:
    controller, _ = started(sticky="key")
    for key in (f"k{i}" for i in range(50)):
        assert len({controller.assign(key, f"u{j}").variant for j in range(10)}) == 1


def test_a_challenger_users_prefer_is_promoted_and_then_serves_everyone() -> None:
    controller, ended = started()
    for i in range(400):
        assignment = controller.assign("key", f"u{i}")
        if assignment.variant is None:
            break
        controller.finished(assignment, f"r{i}", error=False, ttft_s=0.1)
        controller.rated(f"r{i}", thumbs_down=assignment.variant == "champion")
    assert [run.status for run in ended] == ["promoted"]
    assert controller.default_adapter == "fix" and controller.running is None
    assert controller.assign("key", "anyone") == Assignment("fix")
    assert ended[0].summary()["verdict"] == "promote"


def test_a_failing_challenger_is_rolled_back_and_the_champion_serves_everyone() -> None:
    controller, ended = started()
    for i in range(400):
        assignment = controller.assign("key", f"u{i}")
        if assignment.variant is None:
            break
        controller.finished(assignment, f"r{i}", error=assignment.variant == "challenger")
    assert [run.status for run in ended] == ["rolled_back"]
    assert "error rate" in ended[0].summary()["reason"]
    assert controller.assign("key", "anyone") == Assignment("")


def test_outcomes_of_an_ended_rollout_and_unknown_ratings_count_for_nothing() -> None:
    controller, ended = started()
    old = controller.assign("key", "alice")
    controller.finished(old, "r-old", error=False, ttft_s=0.1)
    controller.stop(by="admin")
    assert ended[0].status == "stopped" and ended[0].ended_by == "admin"
    controller.start(RolloutSpec("fix", policy=FAST), by="admin")
    controller.finished(old, "r-late", error=True)  # began under the first rollout
    assert controller.rated("r-old", thumbs_down=True) is None
    assert controller.rated("never-seen", thumbs_down=True) is None
    arms = controller.running.statistics.arms  # type: ignore[union-attr]
    assert all(arm.requests == 0 and arm.rated == 0 for arm in arms.values())


def test_a_response_is_rated_once() -> None:
    controller, _ = started()
    assignment = controller.assign("key", "alice")
    controller.finished(assignment, "r1", error=False, ttft_s=0.1)
    assert controller.rated("r1", thumbs_down=True) == assignment.variant
    assert controller.rated("r1", thumbs_down=False) is None


def test_starting_twice_stopping_none_and_a_pointless_challenger_are_refused() -> None:
    controller, _ = started()
    with pytest.raises(RolloutError) as twice:
        controller.start(RolloutSpec("other"), by="admin")
    assert twice.value.kind == "running"
    controller.stop(by="admin")
    with pytest.raises(RolloutError) as none:
        controller.stop(by="admin")
    assert none.value.kind == "none_running"
    with pytest.raises(RolloutError) as same:
        controller.start(RolloutSpec(""), by="admin")  # the champion is the base already
    assert same.value.kind == "invalid"


def test_remembered_responses_are_bounded() -> None:
    ended: list[RolloutRun] = []
    controller = RolloutController(on_end=ended.append, remembered=10)
    controller.start(RolloutSpec("fix", policy=Policy(min_samples=1000, max_samples=1000)), by="a")
    ids = []
    for i in range(30):
        assignment = controller.assign("key", f"u{i}")
        controller.finished(assignment, f"r{i}", error=False)
        ids.append(f"r{i}")
    assert [controller.rated(r, thumbs_down=False) for r in ids[:20]] == [None] * 20
    assert all(controller.rated(r, thumbs_down=False) is not None for r in ids[20:])


def test_a_promotion_waits_for_enough_distinct_users() -> None:
    ended: list[RolloutRun] = []
    controller = RolloutController(on_end=ended.append)
    controller.start(RolloutSpec("fix", policy=FAST, min_units=5), by="admin")
    for i in range(300):  # two heavy users, one per arm, rating as if the challenger won
        for user in ("alice", "bob", "carol", "dave"):
            assignment = controller.assign("key", user)
            if assignment.variant is None:
                break
            controller.finished(assignment, f"{user}{i}", error=False, ttft_s=0.1)
            controller.rated(f"{user}{i}", thumbs_down=assignment.variant == "champion")
    assert ended == [] or ended[0].status != "promoted"
    summary = controller.current.summary()  # type: ignore[union-attr]
    assert sum(arm["units"] for arm in summary["arms"].values()) == 4


def test_one_unit_on_the_champion_ends_undecided_instead_of_running_forever() -> None:
    ended: list[RolloutRun] = []
    controller = RolloutController(on_end=ended.append)
    policy = Policy(min_samples=5, max_samples=50)
    controller.start(RolloutSpec("fix", sticky="key", policy=policy), by="admin")
    key = next(
        f"k{i}" for i in range(100) if controller.assign(f"k{i}", None).variant == "champion"
    )
    for i in range(200):
        assignment = controller.assign(key, None)
        if assignment.variant is None:
            break
        controller.finished(assignment, f"r{i}", error=False, ttft_s=0.1)
    assert [run.status for run in ended] == ["undecided"]
    assert controller.assign(key, None) == Assignment("")


def test_the_base_can_challenge_a_promoted_adapter() -> None:
    controller = RolloutController(default_adapter="fix")
    run = controller.start(RolloutSpec("", policy=FAST), by="admin")
    assert run.champion == "fix"
    assert {controller.assign("key", f"u{i}").adapter for i in range(50)} == {"", "fix"}
