"""Capture from the generation service and /v1/feedback over the whole HTTP stack (FakeEngine)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from server.feedback.records import Interaction
from server.feedback.store import FeedbackStore, StoreError
from tests.unit.api.conftest import KEY_B, _wait_ready, auth

CHAT = {"messages": [{"role": "user", "content": "Capital of France? I am eve@example.com"}]}


def captured(db: Path, response_id: str) -> Interaction:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with contextlib.suppress(StoreError):  # the writer may still be creating the file
            record = FeedbackStore(db, create=False).get_interaction(response_id)
            if record is not None:
                return record
        time.sleep(0.02)
    raise AssertionError(f"{response_id} was not captured")


def test_default_metadata_capture_keeps_no_text(client: TestClient, tmp_path: Path) -> None:
    body = client.post("/v1/chat/completions", json=CHAT, headers=auth()).json()
    record = captured(tmp_path / "feedback.db", body["id"])
    assert record.level == "metadata" and record.key_id == "alpha"
    assert record.route == "/v1/chat/completions" and record.finish_reason == "stop"
    assert record.completion_tokens == body["usage"]["completion_tokens"]
    assert (record.messages, record.answer, record.params) == (None, None, None)
    rated = client.post(
        "/v1/feedback", json={"response_id": body["id"], "rating": 1}, headers=auth()
    )
    assert rated.status_code == 201


def test_full_capture_of_a_streamed_chat_holds_what_was_sent(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    client = make_client(capture="full")
    _wait_ready(client)
    with client.stream(
        "POST", "/v1/chat/completions", json={**CHAT, "stream": True}, headers=auth()
    ) as response:
        chunks = [
            json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")
        ]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    record = captured(tmp_path / "feedback.db", chunks[0]["id"])
    assert record.answer == text == "Paris is the capital of France."
    assert record.messages == [{"role": "user", "content": "Capital of France? I am [EMAIL]"}]
    assert record.params is not None and record.params["constrained"] is False


def test_full_capture_of_completions_and_ask(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    client = make_client(capture="full")
    _wait_ready(client)
    completion = client.post(
        "/v1/completions", json={"prompt": "Once upon", "max_tokens": 4}, headers=auth()
    ).json()
    record = captured(tmp_path / "feedback.db", completion["id"])
    assert record.prompt == "Once upon" and record.messages is None
    ask = client.post("/v1/ask", json={"question": "Capital of France?"}, headers=auth()).json()
    record = captured(tmp_path / "feedback.db", ask["id"])
    assert record.route == "/v1/ask" and record.answer == ask["answer"]
    assert record.messages is not None and record.messages[-1]["role"] == "user"
    assert "Capital of France?" in record.messages[-1]["content"]
    assert record.sources == []


def test_another_key_cannot_rate_and_ids_are_not_probed(client: TestClient) -> None:
    body = client.post("/v1/chat/completions", json=CHAT, headers=auth()).json()
    other = client.post(
        "/v1/feedback", json={"response_id": body["id"], "rating": -1}, headers=auth(KEY_B)
    )
    unknown = client.post(
        "/v1/feedback", json={"response_id": "chatcmpl-unknown", "rating": -1}, headers=auth()
    )
    assert other.status_code == unknown.status_code == 404
    assert other.json()["error"]["message"].replace(body["id"], "X") == unknown.json()["error"][
        "message"
    ].replace("chatcmpl-unknown", "X")


def test_capture_off_answers_404_and_writes_no_file(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    client = make_client(capture="off")
    _wait_ready(client)
    body = client.post("/v1/chat/completions", json=CHAT, headers=auth()).json()
    rated = client.post(
        "/v1/feedback", json={"response_id": body["id"], "rating": 1}, headers=auth()
    )
    assert rated.status_code == 404 and rated.json()["error"]["code"] == "capture_off"
    assert not (tmp_path / "feedback.db").exists()


def test_ui_is_served_with_a_strict_policy_and_can_be_turned_off(
    make_client: Callable[..., TestClient],
) -> None:
    on = make_client()
    page = on.get("/ui")
    assert page.status_code == 200 and "sessionStorage" in on.get("/ui/app.js").text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="/ui/app.js">' in page.text and "<script>" not in page.text
    off = make_client(ui=False)
    assert off.get("/ui").status_code == 404 and off.get("/ui/app.js").status_code == 404


def test_ask_answered_without_the_model_is_captured_once(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    policy = tmp_path / "guardrails.txt"
    policy.write_text("forbidden topic\n")
    client = make_client(capture="full", guardrails_file=policy)
    _wait_ready(client)
    refused = client.post(
        "/v1/ask", json={"question": "Tell me about the forbidden topic"}, headers=auth()
    ).json()
    record = captured(tmp_path / "feedback.db", refused["id"])
    assert record.finish_reason == "content_filter" and record.answer == refused["answer"]
    assert record.messages == [{"role": "user", "content": "Tell me about the forbidden topic"}]
    answered = client.post("/v1/ask", json={"question": "Capital?"}, headers=auth()).json()
    assert captured(tmp_path / "feedback.db", answered["id"]).answer == answered["answer"]
    metrics = client.get("/metrics").text
    assert 'ggserve_capture_records_total{outcome="duplicate"} 0.0' in metrics
