"""The one streaming path, on every streaming endpoint: admission before the first byte,
one error event after it, refusals that stream.

Runs the whole HTTP stack over the scripted engine; tests/integration/test_streaming_http.py
checks the same promises over real HTTP against the real model.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.fakes import FakeEngine
from tests.unit.api.conftest import _wait_ready, auth

QUESTION = "What is the capital of France?"
# (path, body) of a streaming request on each streaming endpoint
ENDPOINTS: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", {"messages": [{"role": "user", "content": QUESTION}]}),
    "completions": ("/v1/completions", {"prompt": QUESTION, "max_tokens": 32}),
    "ask": ("/v1/ask", {"question": QUESTION}),
}


def _stream(client: TestClient, endpoint: str, **extra: Any) -> tuple[int, str, str]:
    path, body = ENDPOINTS[endpoint]
    with client.stream(
        "POST", path, json={**body, **extra, "stream": True}, headers=auth()
    ) as response:
        text = response.read().decode()
        return response.status_code, response.headers.get("content-type", ""), text


def _events(text: str) -> list[tuple[str, str]]:
    """(event name, data) of each server-sent event; 'message' when unnamed."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        lines = [ln for ln in block.split("\n") if ln and not ln.startswith(":")]
        if not lines:
            continue
        name = next((ln[7:] for ln in lines if ln.startswith("event: ")), "message")
        data = "\n".join(ln[6:] for ln in lines if ln.startswith("data: "))
        events.append((name, data))
    return events


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_full_queue_is_a_json_503_before_the_first_byte(
    client: TestClient, fake_engine: FakeEngine, endpoint: str
) -> None:
    fake_engine.queue_full = True
    status, content_type, text = _stream(client, endpoint)
    assert status == 503 and content_type.startswith("application/json")
    assert json.loads(text)["error"]["code"] == "overloaded"


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_max_tokens_over_the_limit_is_a_json_400_before_the_first_byte(
    client: TestClient, endpoint: str
) -> None:
    status, content_type, text = _stream(client, endpoint, max_tokens=100_000)
    assert status == 400 and content_type.startswith("application/json")
    assert json.loads(text)["error"]["param"] == "max_tokens"


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_context_overflow_is_a_json_400_before_the_first_byte(
    client: TestClient, fake_engine: FakeEngine, endpoint: str
) -> None:
    fake_engine.n_ctx = 8  # the fake counts one token per word: the prompt alone overflows
    status, content_type, text = _stream(client, endpoint, max_tokens=4)
    assert status == 400 and content_type.startswith("application/json")
    assert json.loads(text)["error"]["code"] in ("context_length_exceeded", "question_too_long")


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_error_after_the_first_byte_is_one_error_event_and_a_clean_end(
    client: TestClient, fake_engine: FakeEngine, endpoint: str
) -> None:
    fake_engine.explode = True  # fails after the first token
    status, content_type, text = _stream(client, endpoint)
    assert status == 200 and content_type.startswith("text/event-stream")
    events = _events(text)
    errors = [data for name, data in events if "error" in data and name in ("message", "error")]
    assert len(errors) == 1
    error = json.loads(errors[0])["error"]
    assert error["type"] == "server_error" and error["request_id"]
    assert "/secret/path" not in text and "Traceback" not in text
    if endpoint == "ask":
        assert events[-1][0] == "error"
    else:
        assert events[-1] == ("message", "[DONE]")
    # the server is fine afterwards
    fake_engine.explode = False
    assert _stream(client, endpoint)[0] == 200


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_a_refusal_streams_when_the_client_streams(
    make_client: Callable[..., TestClient], tmp_path: Path, endpoint: str
) -> None:
    policy = tmp_path / "policy.txt"
    policy.write_text("capital\n")
    client = make_client(guardrails_file=policy)
    _wait_ready(client)
    status, content_type, text = _stream(client, endpoint)
    assert status == 200 and content_type.startswith("text/event-stream")
    events = _events(text)
    if endpoint == "ask":
        assert [name for name, _ in events] == ["token", "done"]
        assert json.loads(events[-1][1])["finish_reason"] == "content_filter"
    else:
        assert events[-1] == ("message", "[DONE]")
        chunks = [json.loads(data) for _, data in events[:-1]]
        finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
        assert finishes[-1] == "content_filter"


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_a_normal_stream_ends_as_its_protocol_says(client: TestClient, endpoint: str) -> None:
    status, _, text = _stream(client, endpoint)
    assert status == 200
    events = _events(text)
    if endpoint == "ask":
        assert events[0][0] == "sources" and events[-1][0] == "done"
        tokens = "".join(data for name, data in events if name == "token")
        assert tokens == "Paris is the capital of France."
    else:
        assert events[-1] == ("message", "[DONE]")
