"""Brute-force protection: too many failed API-key checks from one client address → 429.

Each address gets a sliding window of its recent 401s. Once it holds ``max_failures`` within
``window_s``, further *invalid* keys from that address get 429 and a ``Retry-After`` instead
of 401 until the window frees. A valid key is never refused here (``server/api/deps.py``):
behind a shared proxy one guesser must not lock every honest client out, and the 429 tells a
guesser nothing a 401 would not. Memory is bounded: at most ``max_addresses`` are tracked,
the least recently seen dropped first.

The address is the connection's peer, or the client named in ``X-Forwarded-For`` when the
peer is a trusted proxy (``GGSERVE_TRUSTED_PROXIES``, ``server/security/client_address.py``);
see docs/security.md, "Brute force, proxies and lockout".
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable


class AuthFailureLimiter:
    """Counts 401s per client address in a sliding window (in memory, per process)."""

    def __init__(
        self,
        max_failures: int,
        window_s: float = 60.0,
        *,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_failures < 1 or window_s <= 0 or max_addresses < 1:
            raise ValueError("max_failures, window_s and max_addresses must be positive")
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_addresses = max_addresses
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after_s(self, address: str) -> int | None:
        """Seconds until ``address`` may try again, or None when it is not blocked."""
        failures = self._recent(address)
        if failures is None or len(failures) < self.max_failures:
            return None
        wait = failures[-self.max_failures] + self.window_s - self._clock()
        return max(1, math.ceil(wait))

    def record_failure(self, address: str) -> None:
        """Count one failed key check from ``address``."""
        failures = self._recent(address)
        if failures is None:
            failures = deque(maxlen=self.max_failures)
            self._failures[address] = failures
            while len(self._failures) > self.max_addresses:
                self._failures.popitem(last=False)
        failures.append(self._clock())

    def _recent(self, address: str) -> deque[float] | None:
        failures = self._failures.get(address)
        if failures is None:
            return None
        self._failures.move_to_end(address)
        horizon = self._clock() - self.window_s
        while failures and failures[0] <= horizon:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return None
        return failures

    def __len__(self) -> int:
        return len(self._failures)
