from server.engine.scheduling import AdmissionQueue


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


def test_all_choices_of_a_request_are_accepted_together_or_not_at_all() -> None:
    queue: AdmissionQueue[str] = AdmissionQueue(n_slots=2, max_waiting=1)
    assert queue.try_put("a")
    assert not queue.try_put_all(["b0", "b1", "b2"])  # 1 + 3 > 2 + 1
    assert queue.snapshot() == ["a"]
    assert queue.try_put_all(["b0", "b1"])
    assert queue.snapshot() == ["a", "b0", "b1"]


def test_take_withdraws_the_oldest_match_only() -> None:
    queue: AdmissionQueue[str] = AdmissionQueue(n_slots=1, max_waiting=5)
    for name in ["a1", "b1", "a2"]:
        queue.try_put(name)
    assert queue.take(lambda n: n.startswith("a")) == "a1"
    assert queue.take(lambda n: n == "zz") is None
    assert queue.snapshot() == ["b1", "a2"]
