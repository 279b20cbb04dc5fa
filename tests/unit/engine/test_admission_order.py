"""Who gets a free slot first: priority (lower first, as vLLM), then tenants take turns."""

from __future__ import annotations

from dataclasses import dataclass

from server.engine.planner import plan
from server.engine.scheduling import admission_order
from tests.unit.engine.test_planner import FakeSeq, FakeSlot, question, state


@dataclass(frozen=True)
class Waiting:
    name: str
    tenant: str
    priority: int = 0
    request: str = ""  # the request a choice belongs to (n > 1); its name by default

    @property
    def of(self) -> str:
        return self.request or self.name


def order(waiting: list[Waiting]) -> list[str]:
    ranked = admission_order(
        waiting,
        priority=lambda w: w.priority,
        tenant=lambda w: w.tenant,
        request=lambda w: w.of,
    )
    return [w.name for w in ranked]


def test_one_tenant_alone_is_served_in_arrival_order() -> None:
    assert order([Waiting(f"a{i}", "A") for i in range(4)]) == ["a0", "a1", "a2", "a3"]


def test_a_heavy_tenant_cannot_starve_a_light_one() -> None:
    """Fifty queued requests of A delay B's one by one request, not by fifty."""
    waiting = [Waiting(f"a{i}", "A") for i in range(50)] + [Waiting("b0", "B")]
    assert order(waiting)[:3] == ["a0", "b0", "a1"]


def test_tenants_take_turns_in_arrival_order_of_each_turn() -> None:
    waiting = [
        Waiting("a0", "A"),
        Waiting("a1", "A"),
        Waiting("b0", "B"),
        Waiting("a2", "A"),
        Waiting("c0", "C"),
        Waiting("b1", "B"),
    ]
    assert order(waiting) == ["a0", "b0", "c0", "a1", "b1", "a2"]


def test_lower_priority_values_go_first_whatever_the_tenant() -> None:
    waiting = [
        Waiting("batch", "A", priority=10),
        Waiting("normal", "B"),
        Waiting("urgent", "A", priority=-5),
    ]
    assert order(waiting) == ["urgent", "normal", "batch"]


def test_the_choices_of_one_request_stay_together() -> None:
    waiting = [
        Waiting("a0.0", "A", request="a0"),
        Waiting("a0.1", "A", request="a0"),
        Waiting("a0.2", "A", request="a0"),
        Waiting("b0", "B"),
    ]
    assert order(waiting) == ["a0.0", "a0.1", "a0.2", "b0"]


def test_the_planner_admits_in_the_order_it_is_given() -> None:
    """The engine passes the waiting sequences in admission order; the planner keeps it."""
    slots = [FakeSlot(0), FakeSlot(1)]
    waiting = [FakeSeq(3, question(3)), FakeSeq(1, question(1)), FakeSeq(2, question(2))]
    step = plan(state(slots, waiting=waiting))
    assert [a.key for a in step.admissions] == [3, 1]
