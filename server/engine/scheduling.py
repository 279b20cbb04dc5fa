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


def admission_order(
    waiting: Sequence[T],
    *,
    priority: Callable[[T], int],
    tenant: Callable[[T], str],
    request: Callable[[T], object],
) -> list[T]:
    """``waiting`` (oldest first) in the order slots should go to them.

    Lower ``priority`` first (vLLM's semantics). Within one priority, tenants take turns: each
    tenant's oldest waiting request, then each one's second, and so on, so a tenant with fifty
    queued requests delays another's one by at most one request per tenant ahead of it, not by
    fifty. Ties keep arrival order; the choices of one request (``n > 1``) stay together.
    """
    turn: dict[object, int] = {}  # request -> its rank among its tenant's waiting requests
    counts: dict[tuple[int, str], int] = {}
    for item in waiting:
        key = request(item)
        if key not in turn:
            group = (priority(item), tenant(item))
            turn[key] = counts.get(group, 0)
            counts[group] = turn[key] + 1
    arrival = {id(item): index for index, item in enumerate(waiting)}
    return sorted(
        waiting, key=lambda item: (priority(item), turn[request(item)], arrival[id(item)])
    )


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
