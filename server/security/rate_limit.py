"""Per-key rate limits: requests per minute and tokens (prompt + generated) per minute.

Built on the ``limits`` library's moving-window limiter, in memory or in Redis (so replicas
behind one Service share one budget). Token budgets are charged after a generation with its
real token count, prompt and completion alike; a key whose token budget is spent is refused
until the window frees up.

When the storage fails mid-run (Redis killed, restarting, partitioned) the limiter falls back
to an in-memory limiter of its own: the limits still hold, per replica, instead of failing
open. Each failure is counted (``on_storage_error``, which the app wires to
``ggserve_rate_limit_storage_errors_total``); the switch to memory is logged once per outage,
and the switch back once Redis answers again. Each storage call is bounded by
``STORAGE_TIMEOUT_S`` so a hung Redis cannot stall requests. At start-up an unreachable
storage is still an error (``check``): that is a configuration mistake, better seen at once.
The in-memory windows start empty, so during an outage a key gets at most its budget again on
each replica: the bound loosens by the replica count, it never disappears.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar, cast

from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage
from limits.aio.storage import Storage as AsyncStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

logger = logging.getLogger(__name__)
T = TypeVar("T")
STORAGE_TIMEOUT_S = 1.0  # bound on one limiter round trip; a hung Redis must not hang requests


@dataclass(frozen=True)
class LimitDecision:
    allowed: bool
    limit_name: str  # "requests" | "tokens"
    limit: int
    remaining: int
    reset_after_s: float

    def headers(self) -> dict[str, str]:
        """X-RateLimit-* headers (and Retry-After when refused)."""
        headers = {
            "X-RateLimit-Limit-" + self.limit_name.capitalize(): str(self.limit),
            "X-RateLimit-Remaining-" + self.limit_name.capitalize(): str(max(self.remaining, 0)),
            "X-RateLimit-Reset-" + self.limit_name.capitalize(): f"{self.reset_after_s:.0f}s",
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.reset_after_s)))
        return headers


def _async_uri(uri: str) -> str:
    return uri if uri.startswith("async+") else "async+" + uri


class RateLimiter:
    """Request and token budgets per API key id."""

    def __init__(
        self,
        storage_uri: str,
        requests_per_minute: int,
        tokens_per_minute: int,
        *,
        on_storage_error: Callable[[Exception], None] | None = None,
    ) -> None:
        uri = _async_uri(storage_uri)
        options: dict[str, float | str | bool] = {}
        if uri.startswith("async+redis"):
            # limits' async Redis storage defaults to coredis; use redis-py, which we ship.
            options = {
                "implementation": "redispy",
                "socket_timeout": STORAGE_TIMEOUT_S,
                "socket_connect_timeout": STORAGE_TIMEOUT_S,
            }
        self._storage = cast(AsyncStorage, storage_from_string(uri, **options))
        self._limiter = MovingWindowRateLimiter(self._storage)
        # Where the limits go while the storage fails: never served unlimited (fail closed-enough).
        self._fallback = MovingWindowRateLimiter(MemoryStorage())
        self._on_fallback = False
        self._background: set[asyncio.Task[None]] = set()
        self._rpm = RateLimitItemPerMinute(requests_per_minute) if requests_per_minute else None
        self._tpm = RateLimitItemPerMinute(tokens_per_minute) if tokens_per_minute else None
        self._on_storage_error = on_storage_error
        self.storage_errors = 0

    @property
    def enabled(self) -> bool:
        return self._rpm is not None or self._tpm is not None

    async def check(self) -> None:
        """Fail fast at start-up when the storage (e.g. Redis) is unreachable."""
        if not await self._storage.check():
            raise ConnectionError("rate-limit storage is not reachable")

    async def admit(self, key_id: str) -> LimitDecision | None:
        """Count one request for ``key_id``; the refusing decision, or the request one.

        None when no limit applies. When the storage fails, the in-memory fallback decides.
        """
        return await self._guarded(lambda limiter: self._admit(limiter, key_id))

    async def charge_tokens(self, key_id: str, tokens: int) -> None:
        """Charge tokens (prompt + completion) to the key's budget (may overdraw the last one)."""
        await self._guarded(lambda limiter: self._charge_tokens(limiter, key_id, tokens))

    def charge_in_background(self, key_id: str, tokens: int) -> None:
        """Charge without awaiting: for a generation cut off by its client, whose task is being
        cancelled and cannot await. The charge completes on its own task."""
        if self._tpm is None or tokens <= 0:
            return
        task = asyncio.get_running_loop().create_task(self.charge_tokens(key_id, tokens))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _guarded(self, work: Callable[[MovingWindowRateLimiter], Awaitable[T]]) -> T:
        try:
            result = await asyncio.wait_for(work(self._limiter), STORAGE_TIMEOUT_S * 2)
        except Exception as exc:  # any storage failure: redis-py, limits, or our timeout
            self.storage_errors += 1
            if self._on_storage_error is not None:
                self._on_storage_error(exc)
            if not self._on_fallback:
                self._on_fallback = True
                logger.warning(
                    "rate-limit storage failed (%s: %s); limiting in memory on this replica "
                    "until it answers again",
                    type(exc).__name__,
                    exc,
                )
            return await work(self._fallback)
        if self._on_fallback:
            self._on_fallback = False
            logger.warning(
                "rate-limit storage answers again after %d failures; shared limits resumed",
                self.storage_errors,
            )
        return result

    async def _admit(self, limiter: MovingWindowRateLimiter, key_id: str) -> LimitDecision | None:
        decision: LimitDecision | None = None
        if self._tpm is not None:
            stats = await limiter.get_window_stats(self._tpm, "tokens", key_id)
            token_decision = self._decision("tokens", self._tpm.amount, stats)
            if stats.remaining <= 0:
                return token_decision
            decision = token_decision
        if self._rpm is not None:
            allowed = await limiter.hit(self._rpm, "requests", key_id)
            stats = await limiter.get_window_stats(self._rpm, "requests", key_id)
            request_decision = self._decision("requests", self._rpm.amount, stats, allowed)
            if not allowed:
                return request_decision
            decision = request_decision
        return decision

    async def _charge_tokens(
        self, limiter: MovingWindowRateLimiter, key_id: str, tokens: int
    ) -> None:
        if self._tpm is None or tokens <= 0:
            return
        remaining = (await limiter.get_window_stats(self._tpm, "tokens", key_id)).remaining
        cost = min(tokens, max(remaining, 0))
        if cost > 0:
            await limiter.hit(self._tpm, "tokens", key_id, cost=cost)

    @staticmethod
    def _decision(
        name: str, amount: int, stats: object, allowed: bool | None = None
    ) -> LimitDecision:
        remaining = int(getattr(stats, "remaining", 0))
        reset_time = float(getattr(stats, "reset_time", time.time()))
        return LimitDecision(
            allowed=remaining > 0 if allowed is None else allowed,
            limit_name=name,
            limit=amount,
            remaining=remaining,
            reset_after_s=max(0.0, reset_time - time.time()),
        )
