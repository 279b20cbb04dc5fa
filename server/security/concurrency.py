"""Per-key concurrency cap: how many requests (choices) one key may have in flight at once.

Rate limits bound how much a key asks for per minute; they do not stop one key from holding
every slot at once (``n`` = slots, or many parallel streams), which starves every other key
until those finish. A request takes ``weight`` units (its ``n`` choices) from its key when it
is admitted and gives them back when its response has ended, streams included; a request that
would take a key past the cap is refused (429) before it reaches the engine.

Counts are per process (per replica): with N replicas behind a balancer a key can have N times
the cap in flight, which still keeps one key from holding every slot of a replica.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass


class ConcurrencyLimiter:
    """In-flight units per key id, capped at ``max_per_key`` (0 = no cap)."""

    def __init__(self, max_per_key: int) -> None:
        if max_per_key < 0:
            raise ValueError("max_per_key must be >= 0")
        self.max_per_key = max_per_key
        self._in_flight: Counter[str] = Counter()
        self._lock = threading.Lock()  # leases may be returned from a worker thread

    def in_flight(self, key_id: str) -> int:
        with self._lock:
            return self._in_flight[key_id]

    def try_acquire(self, key_id: str, weight: int = 1) -> Lease | None:
        """A lease of ``weight`` units for ``key_id``; None when that would pass the cap."""
        if weight < 1:
            raise ValueError("weight must be >= 1")
        with self._lock:
            if self.max_per_key and self._in_flight[key_id] + weight > self.max_per_key:
                return None
            self._in_flight[key_id] += weight
        return Lease(self, key_id, weight)

    def _release(self, key_id: str, weight: int) -> None:
        with self._lock:
            self._in_flight[key_id] -= weight
            if self._in_flight[key_id] <= 0:
                del self._in_flight[key_id]  # bounded memory: only keys in flight are kept


@dataclass
class Lease:
    """Units one request holds; ``release`` gives them back (once, however often called)."""

    limiter: ConcurrencyLimiter
    key_id: str
    weight: int
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.limiter._release(self.key_id, self.weight)


def requested_choices(body: object) -> int | None:
    """The ``n`` a JSON body asks for, when it is a plain positive integer; else None.

    Anything else (a string, a float, a bool, a negative number, no ``n``) is left to the
    route's own validation, which refuses it or takes the default of 1.
    """
    if not isinstance(body, dict):
        return None
    n = body.get("n")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        return None
    return n
