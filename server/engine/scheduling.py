"""The bounded, fair admission queue in front of the engine's slots, and the order in which
waiting requests are offered to them.

Slot choice and prefix sharing are the planner's job (``server/engine/planner.py``); the
planner admits waiting sequences in the order ``admission_order`` gives.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class FairShare:
    """Start-time fair queuing over tenants (the API keys): the order requests get slots in.

    Each request gets a start tag when the engine first sees it waiting:
    ``max(virtual time, the tenant's last finish tag)``, and the tenant's finish tag moves one
    request on. Slots go to the smallest tag, so tenants take turns: fifty queued requests of
    one key delay another key's request by at most one of theirs, not fifty. The virtual time
    is the tag of the request admitted last, so a key that was idle rejoins at the current turn
    instead of claiming the turns it did not use. Engine thread only; no locking.
    """

    def __init__(self) -> None:
        self._virtual = 0.0
        self._last_finish: dict[str, float] = {}

    def tag(self, tenant: str) -> float:
        """The start tag of a new request of ``tenant``."""
        start = max(self._virtual, self._last_finish.get(tenant, 0.0))
        self._last_finish[tenant] = start + 1.0
        return start

    def admitted(self, tag: float) -> None:
        """A request with start tag ``tag`` got a slot: the virtual time moves to it."""
        if tag > self._virtual:
            self._virtual = tag
            # Tenants whose turns are all in the past start from the virtual time anyway.
            self._last_finish = {t: f for t, f in self._last_finish.items() if f > tag}


def admission_order(
    waiting: Sequence[T], *, priority: Callable[[T], int], tag: Callable[[T], float]
) -> list[T]:
    """``waiting`` (oldest first) in the order slots go to them: lower ``priority`` first
    (vLLM's semantics), then the smaller fair-share tag, then arrival."""
    arrival = {id(item): index for index, item in enumerate(waiting)}
    return sorted(waiting, key=lambda item: (priority(item), tag(item), arrival[id(item)]))


class AdmissionQueue(Generic[T]):
    """FIFO queue of requests waiting for a slot, bounded by ``max_waiting``.

    ``in_flight`` counts requests that were accepted and have not finished (waiting or running);
    the bound is checked against it so a burst can never queue more than ``n_slots +
    max_waiting`` requests, even before the loop thread has admitted anything.
    """

    def __init__(self, n_slots: int, max_waiting: int) -> None:
        self._capacity = n_slots + max_waiting
        self._waiting: deque[T] = deque()
        self._in_flight = 0
        self._lock = threading.Lock()

    def try_put(self, item: T) -> bool:
        """Accept ``item`` unless the engine already holds ``n_slots + max_waiting`` requests."""
        with self._lock:
            if self._in_flight >= self._capacity:
                return False
            self._in_flight += 1
            self._waiting.append(item)
            return True

    def try_put_all(self, items: Sequence[T]) -> bool:
        """Accept all of ``items`` (the choices of one request) or none of them."""
        with self._lock:
            if self._in_flight + len(items) > self._capacity:
                return False
            self._in_flight += len(items)
            self._waiting.extend(items)
            return True

    def take(self, match: Callable[[T], bool]) -> T | None:
        """Withdraw the oldest waiting item that ``match`` accepts (it is being admitted)."""
        with self._lock:
            for item in self._waiting:
                if match(item):
                    self._waiting.remove(item)
                    return item
            return None

    def pop_oldest(self) -> T | None:
        """The request that has waited longest, or None."""
        with self._lock:
            return self._waiting.popleft() if self._waiting else None

    def remove(self, item: T) -> bool:
        """Withdraw a waiting request (cancelled or timed out before admission)."""
        with self._lock:
            try:
                self._waiting.remove(item)
            except ValueError:
                return False
            return True

    def snapshot(self) -> list[T]:
        """The waiting requests, oldest first."""
        with self._lock:
            return list(self._waiting)

    def finished(self) -> None:
        """A request accepted by ``try_put`` has ended (for whatever reason)."""
        with self._lock:
            self._in_flight -= 1

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)
