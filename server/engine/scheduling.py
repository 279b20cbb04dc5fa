"""Pure scheduling decisions: the bounded fair admission queue and slot choice by prefix.

No llama.cpp here, so the policies are unit-tested without a model.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")


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


class SlotLike(Protocol):
    """What slot choice needs to know about a slot."""

    @property
    def cached_tokens(self) -> Sequence[int]: ...

    @property
    def last_used(self) -> float: ...


S = TypeVar("S", bound=SlotLike)


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Number of leading tokens ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def choose_slot(prompt: Sequence[int], free_slots: Sequence[S]) -> tuple[S, int]:
    """The free slot whose cached tokens share the longest prefix with ``prompt``.

    Ties go to the least recently used slot, so a popular prefix in another slot is not
    overwritten needlessly. Returns the slot and the reusable prefix length; at least the last
    prompt token is always left to evaluate, because its logits are needed to sample.
    """
    if not free_slots:
        raise ValueError("choose_slot needs at least one free slot")
    best = max(
        free_slots,
        key=lambda slot: (common_prefix_length(prompt, slot.cached_tokens), -slot.last_used),
    )
    reuse = min(common_prefix_length(prompt, best.cached_tokens), max(len(prompt) - 1, 0))
    return best, reuse
