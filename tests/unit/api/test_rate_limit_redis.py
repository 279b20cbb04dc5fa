"""Two replicas share one budget through a real redis-server (started here, on loopback)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from tests.integration.server_proc import free_port
from tests.unit.api.conftest import KEY_A, KEY_B, _wait_ready, auth

pytestmark = pytest.mark.redis
CHAT = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def redis_url(tmp_path: object) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed (make test installs it: make system-deps)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import redis

        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def test_replicas_share_one_request_budget_in_redis(
    make_client: Callable[..., TestClient], redis_url: str
) -> None:
    replica_1 = make_client(rate_limit_rpm=3, rate_limit_storage=redis_url)
    replica_2 = make_client(rate_limit_rpm=3, rate_limit_storage=redis_url)
    _wait_ready(replica_1)
    _wait_ready(replica_2)
    assert replica_1.post("/v1/chat/completions", json=CHAT, headers=auth()).status_code == 200
    assert replica_2.post("/v1/chat/completions", json=CHAT, headers=auth()).status_code == 200
    assert replica_1.post("/v1/chat/completions", json=CHAT, headers=auth()).status_code == 200
    refused = replica_2.post("/v1/chat/completions", json=CHAT, headers=auth(KEY_A))
    assert refused.status_code == 429 and "retry-after" in refused.headers
    # the other key's budget is untouched
    assert replica_2.post("/v1/chat/completions", json=CHAT, headers=auth(KEY_B)).status_code == 200


def test_unreachable_redis_fails_at_start_not_per_request(
    make_client: Callable[..., TestClient],
) -> None:
    with pytest.raises(Exception):  # noqa: B017 - any connection error is the right outcome
        make_client(rate_limit_rpm=3, rate_limit_storage=f"redis://127.0.0.1:{free_port()}/0")
