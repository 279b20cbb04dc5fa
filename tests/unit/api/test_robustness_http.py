"""Brute force, Redis faults, hostile log values and the model file, through the HTTP stack."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.unit.api.conftest import KEY_A, KEY_B, _wait_ready, auth
from tests.unit.security.test_rate_limit_redis_faults import RedisProcess

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def test_25_invalid_keys_from_one_address_get_429_but_never_stop_a_valid_key(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(auth_failure_limit=3, auth_failure_window_s=60)
    _wait_ready(client)
    codes = [
        client.post("/v1/chat/completions", json=CHAT, headers=auth(f"ggs-guess-{i}")).status_code
        for i in range(25)
    ]
    assert codes[:3] == [401, 401, 401]
    assert set(codes[3:]) == {429}  # the guesser is throttled...
    refused = client.post("/v1/chat/completions", json=CHAT, headers=auth("ggs-guess"))
    assert refused.json()["error"]["code"] == "too_many_auth_failures"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    for key in (KEY_A, KEY_B):  # ...and the honest clients behind the same address are not
        assert client.post("/v1/chat/completions", json=CHAT, headers=auth(key)).status_code == 200
    assert "ggserve_auth_failures_refused_total 23.0" in client.get("/metrics").text


def test_forwarded_for_names_the_client_only_behind_a_trusted_proxy(
    make_client: Callable[..., TestClient],
) -> None:
    proxied = make_client(
        peer=("10.1.2.3", 40000), auth_failure_limit=2, trusted_proxies="10.0.0.0/8"
    )
    _wait_ready(proxied)

    def guess(client: TestClient, forwarded_for: str) -> int:
        headers = {**auth("ggs-wrong"), "X-Forwarded-For": forwarded_for}
        return client.post("/v1/chat/completions", json=CHAT, headers=headers).status_code

    # Behind the trusted ingress each client has its own count: the guesser at .66 is blocked,
    # another client's first mistake is still an ordinary 401.
    assert [guess(proxied, "203.0.113.66") for _ in range(3)] == [401, 401, 429]
    assert guess(proxied, "198.51.100.7, 10.9.9.9") == 401
    # A direct (untrusted) peer cannot pick its bucket by writing the header itself.
    direct = make_client(peer=("192.0.2.1", 40000), auth_failure_limit=2)
    _wait_ready(direct)
    assert [guess(direct, f"203.0.113.{i}") for i in range(3)] == [401, 401, 429]


def test_missing_keys_do_not_count_as_guesses_and_zero_turns_the_limit_off(
    make_client: Callable[..., TestClient],
) -> None:
    limited = make_client(auth_failure_limit=2)
    _wait_ready(limited)
    for _ in range(5):
        assert limited.post("/v1/chat/completions", json=CHAT).status_code == 401
    assert limited.post("/v1/chat/completions", json=CHAT, headers=auth()).status_code == 200
    unlimited = make_client(auth_failure_limit=0)
    _wait_ready(unlimited)
    for _ in range(30):
        assert unlimited.post("/v1/models", headers=auth("nope")).status_code in (401, 405)
    assert unlimited.post("/v1/chat/completions", json=CHAT, headers=auth()).status_code == 200


@pytest.mark.redis
def test_redis_killed_mid_run_keeps_limiting_in_memory_and_counts_the_failures(
    make_client: Callable[..., TestClient],
) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed (make test installs it: make system-deps)")
    from tests.integration.server_proc import free_port

    redis = RedisProcess(binary, free_port())
    redis.start()
    try:
        client = make_client(
            rate_limit_rpm=2, rate_limit_storage=f"redis://127.0.0.1:{redis.port}/0"
        )
        _wait_ready(client)
        statuses = [
            client.post("/v1/chat/completions", json=CHAT, headers=auth()).status_code
            for _ in range(3)
        ]
        assert statuses == [200, 200, 429]
        redis.kill()
        statuses = [
            client.post("/v1/chat/completions", json=CHAT, headers=auth()).status_code
            for _ in range(3)
        ]
        assert statuses == [200, 200, 429]  # limited in memory while Redis is down: never open
        assert "ggserve_rate_limit_storage_errors_total 3.0" in client.get("/metrics").text
        redis.start()
        statuses = [
            client.post("/v1/chat/completions", json=CHAT, headers=auth()).status_code
            for _ in range(3)
        ]
        assert statuses == [200, 200, 429]  # limits are back without a restart
    finally:
        if redis.proc is not None and redis.proc.poll() is None:
            redis.kill()


def test_hostile_request_ids_and_paths_reach_the_log_bounded_and_escaped(
    make_client: Callable[..., TestClient], capsys: pytest.CaptureFixture[str]
) -> None:
    client = make_client(log_format="json")
    _wait_ready(client)
    forged = "x" * 5000
    response = client.get("/v1/" + "a%0A%1B[31m" + "b" * 3000, headers={"X-Request-ID": forged})
    assert response.status_code == 404
    assert (
        response.headers["x-request-id"] != forged and len(response.headers["x-request-id"]) == 32
    )
    response = client.get("/nope", headers={"X-Request-ID": "ok-id\nforged"})
    assert "\n" not in response.headers["x-request-id"]
    err = capsys.readouterr().err
    line = next(
        line for line in err.splitlines() if '"route": "unmatched"' in line and "bbb" in line
    )
    assert "\\\\x0a" in line and "\\\\x1b" in line  # escaped, then JSON-escaped
    assert len(line) < 2000 and "...(+" in line


def test_health_reports_a_model_file_deleted_or_replaced_while_serving(
    make_client: Callable[..., TestClient], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 64)
    client = make_client(model_path=model)
    _wait_ready(client)
    assert client.get("/health").json()["model_file"] == "ok"
    replacement = tmp_path / "new.gguf"
    replacement.write_bytes(b"GGUF" + b"\1" * 80)
    os.replace(replacement, model)
    assert client.get("/health").json()["model_file"] == "changed"
    model.unlink()
    body = client.get("/health").json()
    assert body["model_file"] == "missing"
    assert client.get("/ready").status_code == 200  # the loaded model still serves
    assert client.post("/v1/chat/completions", json=CHAT, headers=auth()).status_code == 200
    assert "a restart will fail" in capsys.readouterr().err
