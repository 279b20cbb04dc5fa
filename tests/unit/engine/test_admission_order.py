"""Who gets a free slot first: priority (lower first, as vLLM), then tenants take turns
(start-time fair queuing over the API keys), then arrival."""

from __future__ import annotations

from dataclasses import dataclass, field

from server.engine.planner import plan
from server.engine.scheduling import FairShare, admission_order
from tests.unit.engine.test_planner import FakeSeq, FakeSlot, question, state


@dataclass
class Waiting:
    name: str
    tenant: str
    priority: int = 0
    tag: float | None = None


@dataclass
class Queue:
    """The engine's use of FairShare: tag on first sight, admit one per step, in order."""

    fair: FairShare = field(default_factory=FairShare)
    waiting: list[Waiting] = field(default_factory=list)

    def arrive(self, *items: Waiting) -> None:
        self.waiting.extend(items)

    def admit(self, slots: int = 1) -> list[str]:
        for item in self.waiting:
            if item.tag is None:
                item.tag = self.fair.tag(item.tenant)
        ranked = admission_order(
            self.waiting, priority=lambda w: w.priority, tag=lambda w: w.tag or 0.0
        )
        taken = ranked[:slots]
        for item in taken:
            self.fair.admitted(item.tag or 0.0)
            self.waiting.remove(item)
        return [w.name for w in taken]

    def drain(self) -> list[str]:
        out: list[str] = []
        while self.waiting:
            out += self.admit()
        return out


def test_one_tenant_alone_is_served_in_arrival_order() -> None:
    queue = Queue()
    queue.arrive(*(Waiting(f"a{i}", "A") for i in range(4)))
    assert queue.drain() == ["a0", "a1", "a2", "a3"]


def test_a_heavy_tenant_cannot_starve_a_light_one_across_steps() -> None:
    """Fifty queued requests of A delay B's one by one request, not by fifty, although one
    slot is given per step (a stateless ordering would hand A the tie every step)."""
    queue = Queue()
    queue.arrive(*(Waiting(f"a{i}", "A") for i in range(50)), Waiting("b0", "B"))
    assert queue.drain()[:3] == ["a0", "b0", "a1"]


def test_tenants_take_turns() -> None:
    queue = Queue()
    queue.arrive(Waiting("a0", "A"), Waiting("a1", "A"), Waiting("a2", "A"))
    queue.arrive(Waiting("b0", "B"), Waiting("b1", "B"), Waiting("c0", "C"))
    assert queue.drain() == ["a0", "b0", "c0", "a1", "b1", "a2"]


def test_a_tenant_back_from_idle_rejoins_at_the_current_turn() -> None:
    """B was idle while A was served 20 times: B gets the next turn, not 20 turns in a row."""
    queue = Queue()
    queue.arrive(*(Waiting(f"a{i}", "A") for i in range(30)))
    for _ in range(20):
        queue.admit()
    queue.arrive(Waiting("b0", "B"), Waiting("b1", "B"), Waiting("b2", "B"))
    assert queue.drain()[:6] == ["b0", "a20", "b1", "a21", "b2", "a22"]


def test_lower_priority_values_go_first_whatever_the_tenant() -> None:
    queue = Queue()
    queue.arrive(Waiting("batch", "A", priority=10), Waiting("normal", "B"))
    queue.arrive(Waiting("urgent", "A", priority=-5))
    assert queue.drain() == ["urgent", "normal", "batch"]


def test_the_planner_admits_in_the_order_it_is_given() -> None:
    """The engine passes the waiting sequences in admission order; the planner keeps it."""
    slots = [FakeSlot(0), FakeSlot(1)]
    waiting = [FakeSeq(3, question(3)), FakeSeq(1, question(1)), FakeSeq(2, question(2))]
    step = plan(state(slots, waiting=waiting))
    assert [a.key for a in step.admissions] == [3, 1]
