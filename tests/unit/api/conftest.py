"""App fixtures over the scripted FakeEngine: the whole HTTP stack, no model."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.runtime.services import ModelMeta
from server.security.api_keys import hash_key
from server.settings import Settings
from tests.fakes import FakeEngine

KEY_A = "ggs-test-key-alpha"
KEY_B = "ggs-test-key-bravo"


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def make_client(
    monkeypatch: pytest.MonkeyPatch, fake_engine: FakeEngine, tmp_path: Any
) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def _create_engine(settings: Settings) -> tuple[FakeEngine, ModelMeta]:
        return fake_engine, ModelMeta(architecture="fake")

    monkeypatch.setattr("server.runtime.loading.create_engine", _create_engine)

    def make(peer: tuple[str, int] = ("testclient", 50000), **overrides: Any) -> TestClient:
        values: dict[str, Any] = {
            "api_keys": [f"alpha:{hash_key(KEY_A)}", f"bravo:Bravo:{hash_key(KEY_B)}"],
            "warmup": False,
            "log_format": "text",
            "feedback_db": tmp_path / "feedback.db",
        }
        values.update(overrides)
        client = TestClient(create_app(Settings(_env_file=None, **values)), client=peer)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    c = make_client()
    _wait_ready(c)
    return c


def _wait_ready(c: TestClient) -> None:
    import time

    for _ in range(100):
        if c.get("/ready").status_code == 200:
            return
        time.sleep(0.02)
    raise AssertionError(c.get("/ready").json())


def auth(key: str = KEY_A) -> dict[str, str]:
    return {"X-API-KEY": key}
