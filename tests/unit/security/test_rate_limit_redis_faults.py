"""Redis killed mid-run and restarted: the limiter falls back to memory (never fails open),
counts it, and returns to Redis by itself.

Runs a real ``redis-server`` on a loopback port (``make test`` installs it: make system-deps).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from server.security.rate_limit import STORAGE_TIMEOUT_S, RateLimiter
from tests.integration.server_proc import free_port

pytestmark = pytest.mark.redis


class RedisProcess:
    """A redis-server that a test can kill and start again on the same port."""

    def __init__(self, binary: str, port: int) -> None:
        self.binary = binary
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import redis

        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        for _ in range(200):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.025)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def redis_server() -> Iterator[RedisProcess]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed (make test installs it: make system-deps)")
    server = RedisProcess(binary, free_port())
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.kill()


async def test_redis_killed_mid_run_keeps_limiting_in_memory_then_in_redis_after_restart(
    redis_server: RedisProcess,
) -> None:
    errors: list[Exception] = []
    limiter = RateLimiter(
        f"redis://127.0.0.1:{redis_server.port}/0", 2, 0, on_storage_error=errors.append
    )
    assert (await limiter.admit("k")).allowed  # type: ignore[union-attr]
    assert (await limiter.admit("k")).allowed  # type: ignore[union-attr]
    refused = await limiter.admit("k")
    assert refused is not None and not refused.allowed

    redis_server.kill()
    started = time.monotonic()
    decisions = [await limiter.admit("k") for _ in range(3)]
    # The in-memory fallback starts empty and still limits: 2 per minute, never unlimited.
    assert [d.allowed if d else None for d in decisions] == [True, True, False]
    assert time.monotonic() - started < 3 * 2 * STORAGE_TIMEOUT_S + 1
    await limiter.charge_tokens("k", 10)  # never raises either
    assert limiter.storage_errors >= 3 and len(errors) == limiter.storage_errors

    redis_server.start()  # empty: the old window is gone with the process
    decisions = [await limiter.admit("k") for _ in range(3)]
    assert [d.allowed if d else None for d in decisions] == [True, True, False]


async def test_a_hung_redis_cannot_stall_requests(redis_server: RedisProcess) -> None:
    limiter = RateLimiter(f"redis://127.0.0.1:{redis_server.port}/0", 5, 0)
    assert await limiter.admit("k") is not None
    assert redis_server.proc is not None
    redis_server.proc.send_signal(19)  # SIGSTOP: the socket stays open, nothing answers
    try:
        started = time.monotonic()
        decision = await limiter.admit("k")
        assert decision is not None and decision.allowed  # decided in memory, not skipped
        assert time.monotonic() - started < 2 * STORAGE_TIMEOUT_S + 0.5
    finally:
        redis_server.proc.send_signal(18)  # SIGCONT
