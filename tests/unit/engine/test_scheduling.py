from dataclasses import dataclass, field

import pytest

from server.engine.scheduling import AdmissionQueue, choose_slot, common_prefix_length


@dataclass
class FakeSlot:
    name: str
    cached_tokens: list[int] = field(default_factory=list)
    last_used: float = 0.0


def test_common_prefix_length() -> None:
    assert common_prefix_length([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix_length([1, 2], [1, 2, 3]) == 2
    assert common_prefix_length([], [1]) == 0


def test_slot_with_longest_common_prefix_is_chosen() -> None:
    slots = [FakeSlot("a", [1, 2, 9]), FakeSlot("b", [1, 2, 3, 4, 8]), FakeSlot("c", [7])]
    slot, reuse = choose_slot([1, 2, 3, 4, 5, 6], slots)
    assert (slot.name, reuse) == ("b", 4)


def test_last_prompt_token_is_always_left_to_evaluate() -> None:
    slot, reuse = choose_slot([1, 2, 3], [FakeSlot("a", [1, 2, 3, 4])])
    assert (slot.name, reuse) == ("a", 2)


def test_tie_goes_to_least_recently_used_slot() -> None:
    slots = [FakeSlot("recent", [5], last_used=10.0), FakeSlot("old", [6], last_used=1.0)]
    slot, reuse = choose_slot([1, 2], slots)
    assert (slot.name, reuse) == ("old", 0)


def test_choose_slot_needs_a_free_slot() -> None:
    with pytest.raises(ValueError):
        choose_slot([1], [])


def test_queue_admits_in_arrival_order() -> None:
    queue: AdmissionQueue[str] = AdmissionQueue(n_slots=1, max_waiting=10)
    for name in "abcd":
        assert queue.try_put(name)
    assert [queue.pop_oldest() for _ in range(5)] == ["a", "b", "c", "d", None]


def test_queue_rejects_beyond_slots_plus_waiting_and_accepts_after_a_finish() -> None:
    queue: AdmissionQueue[str] = AdmissionQueue(n_slots=2, max_waiting=1)
    assert all(queue.try_put(name) for name in "abc")
    assert not queue.try_put("d")
    queue.pop_oldest()  # admitted: still in flight, so still no room
    assert not queue.try_put("d")
    queue.finished()
    assert queue.try_put("d")


def test_zero_waiting_room_means_only_free_slots_accept() -> None:
    queue: AdmissionQueue[str] = AdmissionQueue(n_slots=1, max_waiting=0)
    assert queue.try_put("a")
    assert not queue.try_put("b")


def test_withdrawn_request_leaves_order_of_others_intact() -> None:
    queue: AdmissionQueue[str] = AdmissionQueue(n_slots=1, max_waiting=5)
    for name in "abc":
        queue.try_put(name)
    assert queue.remove("b")
    assert not queue.remove("b")
    assert queue.snapshot() == ["a", "c"]
    assert queue.waiting == 2
