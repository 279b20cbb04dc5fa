"""POST /admin/models/activate over scripted engines: the switch, its refusals, hostile bodies.

The real swap under load (real model, real server, a load generator) is in
tests/integration/test_flywheel_loop.py; here each engine is a FakeEngine whose reply names the
file it was "loaded" from, so the test sees which version answered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from artifacts.digest import sha256_file
from artifacts.registry import ModelRegistry
from server.feedback.store import FeedbackStore
from server.runtime.services import ModelMeta
from server.settings import Settings
from tests.fakes import FakeEngine
from tests.unit.api.conftest import KEY_A, KEY_B, _wait_ready, auth

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


class ClosingEngine(FakeEngine):
    def close(self) -> None:
        self.closed = True


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    store = ModelRegistry(tmp_path / "registry.json")
    for name in ("one", "two", "broken"):
        path = tmp_path / f"{name}.gguf"
        path.write_bytes(b"GGUF" + name.encode())
        store.register(path, sha256_file(path), name=name)
    store.promote(1, "setup")
    return store


@pytest.fixture
def engines(monkeypatch: pytest.MonkeyPatch) -> dict[str, ClosingEngine]:
    loaded: dict[str, ClosingEngine] = {}

    def create_engine(settings: Settings) -> tuple[FakeEngine, ModelMeta]:
        stem = Path(settings.model_path).stem
        if stem == "broken":
            raise RuntimeError("tensor 'blk.0.attn_q.weight' has wrong shape")
        engine = ClosingEngine(reply=f"answer from {stem}")
        loaded[stem] = engine
        return engine, ModelMeta(architecture="fake", file_name=f"{stem}.gguf")

    monkeypatch.setattr("server.runtime.loading.create_engine", create_engine)
    return loaded


@pytest.fixture
def admin_client(
    make_client: Callable[..., TestClient], registry: ModelRegistry, engines: Any
) -> TestClient:
    client = make_client(registry_path=registry.path, admin_key_ids=["alpha"])
    _wait_ready(client)
    return client


def _activate(client: TestClient, body: Any, key: str = KEY_A, **kwargs: Any) -> Any:
    return client.post("/admin/models/activate", json=body, headers=auth(key), **kwargs)


def _answer(client: TestClient) -> str:
    response = client.post("/v1/chat/completions", json=CHAT, headers=auth())
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


def test_the_registry_active_version_is_served_at_start(admin_client: TestClient) -> None:
    assert _answer(admin_client) == "answer from one"
    models = admin_client.get("/v1/models", headers=auth()).json()["data"]
    assert models[0]["version"] == "v1"
    assert admin_client.get("/ready").json()["model_version"] == "v1"


def test_activation_switches_new_requests_frees_the_old_engine_and_records_it(
    admin_client: TestClient, registry: ModelRegistry, engines: dict[str, ClosingEngine]
) -> None:
    response = _activate(admin_client, {"version": 2})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["version"], body["previous"], body["draining"]) == ("v2", "v1", 0)
    assert _answer(admin_client) == "answer from two"
    assert admin_client.get("/ready").status_code == 200
    assert admin_client.get("/v1/models", headers=auth()).json()["data"][0]["version"] == "v2"
    metrics = admin_client.get("/metrics").text
    assert 'ggserve_model_info{model="two",version="v2"} 1.0' in metrics
    assert 'ggserve_model_activations_total{result="ok"} 1.0' in metrics
    assert 'ggserve_model_requests_total{version="v2"} 1.0' in metrics
    state = registry.read()
    assert state.active == 2 and state.get(2).promoted_by == "alpha"
    assert getattr(engines["one"], "closed", False)
    reply = admin_client.post("/v1/chat/completions", json=CHAT, headers=auth()).json()
    record = _captured(registry.path.parent / "feedback.db", reply["id"])
    assert (record.model.name, record.model.sha256) == ("v2", state.get(2).sha256)


def _captured(db: Path, response_id: str) -> Any:
    store = FeedbackStore(db, create=False)
    deadline = time.monotonic() + 5
    while (record := store.get_interaction(response_id)) is None:
        assert time.monotonic() < deadline, "the response was never captured"
        time.sleep(0.02)
    return record


def test_a_version_that_fails_to_load_leaves_the_old_one_serving(
    admin_client: TestClient, registry: ModelRegistry
) -> None:
    response = _activate(admin_client, {"version": 3})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "load_failed" and "wrong shape" in error["message"]
    assert _answer(admin_client) == "answer from one"
    assert admin_client.get("/ready").status_code == 200
    assert registry.read().active == 1
    assert 'ggserve_model_activations_total{result="load_failed"} 1.0' in (
        admin_client.get("/metrics").text
    )


def test_a_file_changed_after_registration_is_refused(
    admin_client: TestClient, tmp_path: Path
) -> None:
    (tmp_path / "two.gguf").write_bytes(b"GGUF swapped behind our back")
    response = _activate(admin_client, {"version": 2})
    assert response.status_code == 400 and response.json()["error"]["code"] == "file_changed"
    assert _answer(admin_client) == "answer from one"


def test_unknown_version_is_404_and_a_non_admin_key_is_403(admin_client: TestClient) -> None:
    missing = _activate(admin_client, {"version": 99})
    assert missing.status_code == 404 and "known: v1, v2, v3" in missing.json()["error"]["message"]
    assert _activate(admin_client, {"version": 2}, key=KEY_B).status_code == 403
    assert admin_client.post("/admin/models/activate", json={"version": 2}).status_code == 401


def test_without_a_registry_activation_says_how_to_configure_one(
    make_client: Callable[..., TestClient], engines: Any
) -> None:
    client = make_client(admin_key_ids=["alpha"])
    _wait_ready(client)
    response = _activate(client, {"version": 1})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "registry_not_configured"
    assert client.get("/ready").json()["model_version"] == "unregistered"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"version": "2"}, "version"),
        ({"version": True}, "version"),
        ({"version": 2.5}, "version"),
        ({"version": 0}, "version"),
        ({"version": -1}, "version"),
        ({"version": 10**30}, "version"),
        ({"version": None}, "version"),
        ({}, "version"),
        ({"version": 2, "action": "delete"}, "action"),
        ({"version": 2, "model_path": "/etc/passwd"}, "model_path"),
        ([2], None),
        ("x" * 10_000, None),
    ],
)
def test_hostile_bodies_are_400_naming_the_field(
    admin_client: TestClient, body: Any, param: str | None
) -> None:
    response = _activate(admin_client, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param
    assert _answer(admin_client) == "answer from one"


@pytest.mark.parametrize("raw", [b"{not json", b'{"version": "\xff\xfe"}', b"", b"\x00" * 64])
def test_malformed_and_non_utf8_bodies_are_400(admin_client: TestClient, raw: bytes) -> None:
    response = admin_client.post(
        "/admin/models/activate",
        content=raw,
        headers={**auth(), "content-type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert "error" in response.json()


def test_a_stream_in_flight_finishes_on_the_old_engine_which_is_freed_after_it(
    admin_client: TestClient, engines: dict[str, ClosingEngine]
) -> None:
    engines["one"].token_delay_s = 0.3
    streamed: dict[str, str] = {}

    def consume() -> None:
        with admin_client.stream(
            "POST", "/v1/chat/completions", json={**CHAT, "stream": True}, headers=auth()
        ) as response:
            streamed["body"] = "".join(response.iter_text())

    reader = threading.Thread(target=consume)
    reader.start()
    deadline = time.monotonic() + 5
    while engines["one"].active == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    response = _activate(admin_client, {"version": 2})
    assert response.status_code == 200 and response.json()["draining"] == 1
    assert _answer(admin_client) == "answer from two"  # new requests: the new engine
    assert not getattr(engines["one"], "closed", False)  # still streaming
    reader.join(timeout=10)
    assert " one" in streamed["body"] and " two" not in streamed["body"]
    assert "[DONE]" in streamed["body"]
    while not getattr(engines["one"], "closed", False) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert getattr(engines["one"], "closed", False)
    health = admin_client.get("/health").json()
    assert health["model_version"] == "v2" and "models_draining" not in health
