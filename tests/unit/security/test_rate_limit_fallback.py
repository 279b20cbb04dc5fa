"""A failing rate-limit storage never opens the gate: the in-memory fallback decides, the switch
is logged once per outage, and every failure is counted (no Redis needed: a storage that fails
on demand stands in for it)."""

from __future__ import annotations

import logging

import pytest

from server.security.rate_limit import RateLimiter


class FlakyLimiter:
    """Stands in for the Redis-backed limiter: raises while ``down``."""

    def __init__(self, real: object) -> None:
        self.real = real
        self.down = False

    def __getattr__(self, name: str) -> object:
        method = getattr(self.real, name)

        async def call(*args: object, **kwargs: object) -> object:
            if self.down:
                raise ConnectionError("redis is gone")
            return await method(*args, **kwargs)

        return call


async def test_a_storage_outage_falls_back_to_memory_logs_once_and_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    errors: list[Exception] = []
    limiter = RateLimiter("memory://", 2, 0, on_storage_error=errors.append)
    flaky = FlakyLimiter(limiter._limiter)
    limiter._limiter = flaky  # type: ignore[assignment]
    flaky.down = True
    with caplog.at_level(logging.WARNING, logger="server.security.rate_limit"):
        decisions = [await limiter.admit("k") for _ in range(4)]
    assert [d.allowed if d else None for d in decisions] == [True, True, False, False]
    assert len(errors) == limiter.storage_errors == 4
    assert [r.message for r in caplog.records if "limiting in memory" in r.message] != []
    assert len(caplog.records) == 1  # once per outage, not once per request

    caplog.clear()
    flaky.down = False
    with caplog.at_level(logging.WARNING, logger="server.security.rate_limit"):
        assert (await limiter.admit("other")).allowed  # type: ignore[union-attr]
    assert len(caplog.records) == 1 and "resumed" in caplog.records[0].message


async def test_token_charges_during_an_outage_still_count(caplog: pytest.LogCaptureFixture) -> None:
    limiter = RateLimiter("memory://", 0, 10)
    flaky = FlakyLimiter(limiter._limiter)
    limiter._limiter = flaky  # type: ignore[assignment]
    flaky.down = True
    await limiter.charge_tokens("k", 25)  # prompt + completion of a big request, overdrawn
    refused = await limiter.admit("k")
    assert refused is not None and not refused.allowed and refused.limit_name == "tokens"
