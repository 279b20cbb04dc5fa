"""Per-key concurrency cap through the whole HTTP stack: parallel streams and ``n`` choices
count until their response ends; a key at its cap gets 429, other keys are served."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from server.app import create_app
from server.runtime.services import ModelMeta, Services
from server.security.api_keys import hash_key
from server.security.concurrency import ConcurrencyLimiter
from server.settings import Settings
from tests.unit.api.conftest import KEY_A, KEY_B, _wait_ready, auth
from tests.unit.api.test_disconnects import HoldingEngine, exchange

CHAT = {"messages": [{"role": "user", "content": "Capital of France?"}], "max_tokens": 4}
PATH = "/v1/chat/completions"


def _key(key: str) -> list[tuple[bytes, bytes]]:
    return [(b"x-api-key", key.encode())]


@dataclass
class App:
    app: FastAPI
    engine: HoldingEngine

    @property
    def concurrency(self) -> ConcurrencyLimiter:
        services: Services = self.app.state.services
        assert services.concurrency is not None
        return services.concurrency

    async def held(self, body: dict[str, Any], key: str) -> tuple[asyncio.Task[Any], asyncio.Event]:
        """Start a request that the engine holds (a long generation) until ``gone`` is set."""
        gone = asyncio.Event()
        self.engine.holding.clear()
        task = asyncio.create_task(exchange(self.app, PATH, body, gone, _key(key)))
        await asyncio.wait_for(self.engine.holding.wait(), 5)
        return task, gone

    async def send(self, body: dict[str, Any], key: str) -> tuple[int, dict[str, str], bytes]:
        result = await exchange(self.app, PATH, body, asyncio.Event(), _key(key))
        assert result.raised is None, repr(result.raised)
        start = next(m for m in result.sent if m["type"] == "http.response.start")
        headers = {k.decode(): v.decode() for k, v in start["headers"]}
        body_bytes = b"".join(m.get("body", b"") for m in result.sent if "body" in m)
        return start["status"], headers, body_bytes


@pytest.fixture
async def capped(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> AsyncIterator[App]:
    engine = HoldingEngine(tokens_before_hold=1)
    monkeypatch.setattr(
        "server.runtime.loading.create_engine",
        lambda settings: (engine, ModelMeta(architecture="fake")),
    )
    settings = Settings(
        _env_file=None,
        api_keys=[f"alpha:{hash_key(KEY_A)}", f"bravo:{hash_key(KEY_B)}"],
        warmup=False,
        log_format="text",
        feedback_db=tmp_path / "feedback.db",
        max_concurrent_per_key=3,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        for _ in range(500):
            if services.readiness.snapshot().state == "ready":
                break
            await asyncio.sleep(0.01)
        yield App(app, engine)


async def test_open_streams_count_until_they_end_and_a_full_key_gets_429(capped: App) -> None:
    held = [await capped.held({**CHAT, "stream": True}, KEY_A) for _ in range(3)]
    assert capped.concurrency.in_flight("alpha") == 3

    status, headers, body = await capped.send({**CHAT, "stream": True}, KEY_A)
    assert status == 429
    assert int(headers["retry-after"]) >= 1
    assert b'"code":"rate_limit_concurrency"' in body
    assert b'"type":"rate_limit_error"' in body
    assert b"at most 3 requests" in body  # the envelope names the limit

    other = await capped.held(CHAT, KEY_B)  # another key is not affected
    assert capped.concurrency.in_flight("bravo") == 1

    for task, gone in [*held, other]:
        gone.set()
        await task
    assert capped.concurrency.in_flight("alpha") == 0  # every stream gave its share back
    assert capped.concurrency.in_flight("bravo") == 0
    capped.engine.tokens_before_hold = None  # answer at once from now on
    status, _, _ = await capped.send(CHAT, KEY_A)
    assert status == 200


async def test_n_choices_count_as_n(capped: App) -> None:
    task, gone = await capped.held({**CHAT, "n": 2}, KEY_A)
    assert capped.concurrency.in_flight("alpha") == 2
    status, _, body = await capped.send({**CHAT, "n": 2}, KEY_A)
    assert status == 429 and b"rate_limit_concurrency" in body
    status, _, body = await capped.send({**CHAT, "n": 4}, KEY_A)  # never fits: not a retry
    assert status == 400 and b'"param":"n"' in body
    gone.set()
    await task
    assert capped.concurrency.in_flight("alpha") == 0


@pytest.mark.parametrize("n", ["2", 2.5, True, -1, 0, None, 10**30, "", [], {}, "9" * 5000, 1e308])
def test_hostile_n_values_never_cause_a_5xx_or_leak_a_share(
    make_client: Callable[..., TestClient], n: Any
) -> None:
    client = make_client(max_concurrent_per_key=3)
    _wait_ready(client)
    response = client.post(PATH, json={**CHAT, "n": n}, headers=auth())
    assert response.status_code < 500, response.text
    assert response.status_code in (200, 400, 422)
    assert client.app.state.services.concurrency.in_flight("alpha") == 0  # type: ignore[attr-defined]


def test_a_cap_of_zero_turns_it_off(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_concurrent_per_key=0)
    _wait_ready(client)
    assert client.app.state.services.concurrency is None  # type: ignore[attr-defined]
    assert client.post(PATH, json={**CHAT, "n": 4}, headers=auth()).status_code == 200


def test_an_empty_cap_setting_takes_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GGSERVE_MAX_CONCURRENT_PER_KEY", "")
    assert Settings(_env_file=None).max_concurrent_per_key == 0


@pytest.mark.parametrize("value", ["-1", "many", "1.5", "9" * 400])
def test_a_bad_cap_setting_is_refused_at_start(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("GGSERVE_MAX_CONCURRENT_PER_KEY", value)
    with pytest.raises(ValueError, match="max_concurrent_per_key"):
        Settings(_env_file=None)


def test_a_lease_is_returned_once_however_often_released() -> None:
    limiter = ConcurrencyLimiter(2)
    lease = limiter.try_acquire("k", 2)
    assert lease is not None and limiter.try_acquire("k") is None
    lease.release()
    lease.release()
    assert limiter.in_flight("k") == 0
    assert limiter.try_acquire("k", 2) is not None
