"""Swapping the serving model: new requests go to the new one, the old one is freed once idle."""

from __future__ import annotations

from server.registry.deployment import ActiveModel, Deployment


def _active() -> tuple[ActiveModel[str], list[str]]:
    closed: list[str] = []
    return ActiveModel(close=lambda d: closed.append(d.version)), closed


def test_a_swap_with_nothing_in_flight_frees_the_old_model_at_once() -> None:
    active, closed = _active()
    active.install(Deployment("v1", "engine-1"))
    previous = active.install(Deployment("v2", "engine-2"))
    assert previous is not None and previous.version == "v1" and previous.closed
    assert closed == ["v1"]
    assert active.current is not None and active.current.version == "v2"


def test_in_flight_requests_finish_on_the_old_model_which_is_freed_after_the_last() -> None:
    active, closed = _active()
    active.install(Deployment("v1", "engine-1"))
    with active.lease() as first, active.lease() as second:
        assert first is not None and second is not None and first.version == "v1"
        active.install(Deployment("v2", "engine-2"))
        with active.lease() as newer:
            assert newer is not None and newer.version == "v2"  # new requests: new model
        assert [d.version for d in active.draining] == ["v1"] and closed == []
        assert first.inflight == 2
    assert closed == ["v1"] and active.draining == []


def test_a_model_is_closed_once_even_when_swapped_twice_while_busy() -> None:
    active, closed = _active()
    active.install(Deployment("v1", "e1"))
    with active.lease():
        active.install(Deployment("v2", "e2"))
        active.install(Deployment("v3", "e3"))
    assert closed == ["v2", "v1"]  # v2 had no requests: freed at once; v1 after its last one
    active.close_all()
    assert closed == ["v2", "v1", "v3"]


def test_a_lease_before_any_load_is_none_and_counts_nothing() -> None:
    active, closed = _active()
    with active.lease() as deployment:
        assert deployment is None
    assert closed == []
