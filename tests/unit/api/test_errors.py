"""Every error is the one JSON envelope, with a request id, and never a traceback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.settings import Settings
from tests.fakes import FakeEngine
from tests.unit.api.conftest import KEY_A, KEY_B, _wait_ready, auth

CHAT = {"messages": [{"role": "user", "content": "Capital of France?"}]}


def assert_envelope(body: dict[str, Any], error_type: str, code: str | None = None) -> None:
    error = body["error"]
    assert set(error) >= {"message", "type", "code", "param", "request_id"}
    assert error["type"] == error_type
    assert error["request_id"]
    if code is not None:
        assert error["code"] == code


def test_missing_key_is_401_envelope_with_request_id(client: TestClient) -> None:
    response = client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 401
    assert_envelope(response.json(), "authentication_error", "missing_api_key")
    assert response.json()["error"]["request_id"] == response.headers["x-request-id"]


def test_wrong_key_is_401_and_bearer_key_is_accepted(client: TestClient) -> None:
    wrong = client.post("/v1/chat/completions", json=CHAT, headers=auth("nope"))
    assert wrong.status_code == 401
    assert_envelope(wrong.json(), "authentication_error", "invalid_api_key")
    bearer = client.post(
        "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {KEY_A}"}
    )
    assert bearer.status_code == 200


def test_wrong_type_is_400_naming_the_field(client: TestClient) -> None:
    response = client.post(
        "/v1/chat/completions", json={**CHAT, "temperature": "hot"}, headers=auth()
    )
    assert response.status_code == 400
    assert_envelope(response.json(), "invalid_request_error")
    assert response.json()["error"]["param"] == "temperature"


def test_malformed_json_is_400(client: TestClient) -> None:
    response = client.post(
        "/v1/chat/completions",
        content=b"{not json",
        headers={**auth(), "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert_envelope(response.json(), "invalid_request_error")


@pytest.mark.parametrize("n", [5, 0, -1, "two", 2.5, 10**12, None])
def test_n_beyond_the_slots_or_not_a_count_is_a_400_naming_n(client: TestClient, n: Any) -> None:
    for route, body in (("/v1/chat/completions", CHAT), ("/v1/completions", {"prompt": "Hi"})):
        for stream in (False, True):
            response = client.post(route, json={**body, "n": n, "stream": stream}, headers=auth())
            assert response.status_code == 400, (route, n, response.text)
            assert_envelope(response.json(), "invalid_request_error")
            assert response.json()["error"]["param"] == "n"


def test_context_overflow_is_400_with_token_counts(
    client: TestClient, fake_engine: FakeEngine
) -> None:
    long = {"messages": [{"role": "user", "content": "word " * 300}], "max_tokens": 10}
    response = client.post("/v1/chat/completions", json=long, headers=auth())
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert str(fake_engine.n_ctx) in error["message"]
    assert not fake_engine.requests  # nothing was generated, nothing silently truncated


def test_max_tokens_above_the_server_cap_is_400(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_tokens_limit=8)
    _wait_ready(client)
    response = client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 9}, headers=auth())
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "max_tokens"


def test_full_queue_is_503_with_retry_after(client: TestClient, fake_engine: FakeEngine) -> None:
    fake_engine.queue_full = True
    response = client.post("/v1/chat/completions", json=CHAT, headers=auth())
    assert response.status_code == 503
    assert_envelope(response.json(), "service_unavailable", "overloaded")
    assert int(response.headers["retry-after"]) >= 1


def test_internal_exception_never_leaks_python_internals(
    client: TestClient, fake_engine: FakeEngine
) -> None:
    fake_engine.explode = True
    response = client.post("/v1/chat/completions", json=CHAT, headers=auth())
    assert response.status_code == 500
    assert_envelope(response.json(), "server_error", "internal_error")
    text = response.text
    for leak in ("Traceback", "/secret/path", "RuntimeError", ".py"):
        assert leak not in text
    # the server is still alive and serving
    fake_engine.explode = False
    assert client.post("/v1/chat/completions", json=CHAT, headers=auth()).status_code == 200


def test_internal_exception_mid_stream_ends_the_stream_with_an_error_event(
    client: TestClient, fake_engine: FakeEngine
) -> None:
    fake_engine.explode = True
    with client.stream(
        "POST", "/v1/chat/completions", json={**CHAT, "stream": True}, headers=auth()
    ) as response:
        body = response.read().decode()
    assert '"server_error"' in body and "data: [DONE]" in body
    assert "/secret/path" not in body and "Traceback" not in body


def test_body_larger_than_the_limit_is_413(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_body_bytes=2048)
    big = {"messages": [{"role": "user", "content": "x" * 5000}]}
    response = client.post("/v1/chat/completions", json=big, headers=auth())
    assert response.status_code == 413
    assert_envelope(response.json(), "invalid_request_error", "payload_too_large")


def test_request_id_is_the_servers_and_the_clients_is_only_a_correlation_id(
    client: TestClient,
) -> None:
    sent = client.get("/health", headers={"X-Request-ID": "trace-123"})
    assert sent.headers["x-request-id"] != "trace-123"
    assert len(sent.headers["x-request-id"]) == 32
    assert sent.headers["x-client-request-id"] == "trace-123"
    generated = client.get("/health", headers={"X-Request-ID": "bad id with spaces\n"})
    assert len(generated.headers["x-request-id"]) == 32
    assert "x-client-request-id" not in generated.headers  # an invalid one is not echoed


def test_a_client_cannot_choose_the_response_id_capture_and_feedback_use(
    make_client: Callable[..., TestClient],
) -> None:
    # Two keys send the same X-Request-ID (one of them to claim the other's id): each gets a
    # response id of its own, both are captured, and each can rate its own answer.
    client = make_client(capture="full")
    _wait_ready(client)
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    ids = []
    for key in (KEY_A, KEY_B):
        response = client.post(
            "/v1/chat/completions", json=chat, headers={**auth(key), "X-Request-ID": "shared-1"}
        )
        assert response.status_code == 200
        assert "shared-1" not in response.json()["id"]
        assert response.headers["x-client-request-id"] == "shared-1"
        ids.append((key, response.json()["id"]))
    assert ids[0][1] != ids[1][1]
    for key, response_id in ids:
        rated = client.post(
            "/v1/feedback", json={"response_id": response_id, "rating": 1}, headers=auth(key)
        )
        assert rated.status_code in (200, 201), rated.text


def test_unknown_route_is_404_envelope(client: TestClient) -> None:
    response = client.get("/v1/nope")
    assert response.status_code == 404
    assert_envelope(response.json(), "not_found_error")


def test_failed_model_load_keeps_process_up_and_says_why(
    make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(settings: Settings) -> None:
        raise FileNotFoundError(f"model file {settings.model_path} does not exist")

    monkeypatch.setattr("server.runtime.loading.create_engine", fail)
    client = make_client(model_path="models/missing.gguf")
    for _ in range(50):
        ready = client.get("/ready")
        if ready.json()["status"] == "failed":
            break
    assert ready.status_code == 503
    assert "models/missing.gguf" in ready.json()["reason"]
    assert client.get("/health").status_code == 200
    ask = client.post("/v1/ask", json={"question": "hi"}, headers=auth())
    assert ask.status_code == 503
    assert_envelope(ask.json(), "service_unavailable", "model_not_ready")
    assert "missing.gguf" in ask.json()["error"]["message"]
