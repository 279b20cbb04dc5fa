"""Capture and feedback on the real server: records per route, ownership, 409, hostile bodies."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from artifacts.digest import sha256_file
from server.feedback.store import FeedbackStore
from tests.integration.conftest import OTHER_KEY
from tests.integration.server_proc import MODEL, ROOT, TEST_KEY, ServerHandle


def store(capture_db: Path) -> FeedbackStore:
    return FeedbackStore(capture_db, create=False)


def chat(server: ServerHandle, content: str, key: str = TEST_KEY) -> dict[str, object]:
    response = httpx.post(
        server.url + "/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": content}],
            "max_tokens": 8,
            "temperature": 0,
        },
        headers={"X-API-KEY": key},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def feedback(server: ServerHandle, body: object, key: str = TEST_KEY) -> httpx.Response:
    return httpx.post(
        server.url + "/v1/feedback", json=body, headers={"X-API-KEY": key}, timeout=30
    )


def metric(server: ServerHandle, name: str, **labels: str) -> float:
    text = httpx.get(server.url + "/metrics").text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if match and match.group(1) == name:
            got = ",".join(sorted((match.group(2) or "").split(","))) if match.group(2) else ""
            if got == want:
                return float(match.group(3))
    return 0.0


def test_chat_response_is_captured_in_full_with_the_model_version(
    capturing: ServerHandle, capture_db: Path
) -> None:
    body = chat(capturing, "Write to ana@example.com: what is 2+2?")
    created = feedback(capturing, {"response_id": body["id"], "rating": 1})
    assert created.status_code == 201, created.text  # feedback waits for the capture write
    record = store(capture_db).get_interaction(str(body["id"]))
    assert record is not None
    assert record.route == "/v1/chat/completions" and record.key_id == "test"
    assert record.model.sha256 == sha256_file(MODEL)
    assert record.messages == [{"role": "user", "content": "Write to [EMAIL]: what is 2+2?"}]
    choices = body["choices"]
    assert isinstance(choices, list)
    assert record.answer == choices[0]["message"]["content"]
    assert record.params is not None and record.params["max_tokens"] == 8
    assert record.completion_tokens == body["usage"]["completion_tokens"]  # type: ignore[index]
    assert record.latency_ms is not None and record.latency_ms > 0


def test_ask_stream_done_event_carries_the_captured_id(
    capturing: ServerHandle, capture_db: Path
) -> None:
    events: list[tuple[str, str]] = []
    with httpx.stream(
        "POST",
        capturing.url + "/v1/ask",
        json={"question": "Name a colour.", "max_tokens": 8, "stream": True},
        headers=capturing.headers,
        timeout=120,
    ) as response:
        assert response.status_code == 200
        name = ""
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data = line[5:]
                events.append((name, data[1:] if data.startswith(" ") else data))  # SSE rule
    done = json.loads(next(data for name, data in events if name == "done"))
    assert feedback(capturing, {"response_id": done["id"], "rating": 4}).status_code == 201
    record = store(capture_db).get_interaction(done["id"])
    assert record is not None and record.route == "/v1/ask"
    streamed = "".join(data for name, data in events if name == "token")
    assert record.answer is not None and record.answer.strip() == streamed.strip()


def test_text_completion_is_captured_with_its_prompt(
    capturing: ServerHandle, capture_db: Path
) -> None:
    response = httpx.post(
        capturing.url + "/v1/completions",
        json={"prompt": "Once upon a time", "max_tokens": 5},
        headers=capturing.headers,
        timeout=120,
    )
    rid = response.json()["id"]
    assert feedback(capturing, {"response_id": rid, "rating": -1}).status_code == 201
    record = store(capture_db).get_interaction(rid)
    assert record is not None and record.prompt == "Once upon a time" and record.messages is None


def test_feedback_overwrites_until_curated_then_409(
    capturing: ServerHandle, capture_db: Path
) -> None:
    rid = chat(capturing, "What is the capital of Zembla?")["id"]
    first = feedback(capturing, {"response_id": rid, "rating": -1, "correction": "Onhava."})
    assert first.status_code == 201 and first.json()["correction_status"] == "pending"
    second = feedback(
        capturing, {"response_id": rid, "rating": -1, "correction": "Onhava, the capital."}
    )
    assert second.status_code == 200 and second.json()["status"] == "updated"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "feedback",
            "label",
            str(rid),
            "--accept",
            "--db",
            str(capture_db),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    locked = feedback(capturing, {"response_id": rid, "rating": 1})
    assert locked.status_code == 409 and locked.json()["error"]["param"] == "response_id"
    stored = store(capture_db).get_feedback(str(rid))
    assert stored is not None and stored.feedback.correction == "Onhava, the capital."


def test_a_key_cannot_rate_another_keys_response(capturing: ServerHandle, capture_db: Path) -> None:
    rid = chat(capturing, "hello", key=OTHER_KEY)["id"]
    stolen = feedback(capturing, {"response_id": rid, "rating": -1})
    assert stolen.status_code == 404
    assert feedback(capturing, {"response_id": rid, "rating": 1}, key=OTHER_KEY).status_code == 201
    unknown = feedback(capturing, {"response_id": "chatcmpl-never", "rating": 1})
    assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "response_id"


def test_feedback_counters_by_rating(capturing: ServerHandle) -> None:
    before = metric(capturing, "ggserve_feedback_total", rating="down")
    rid = chat(capturing, "Say hi.")["id"]
    assert feedback(capturing, {"response_id": rid, "rating": -1}).status_code == 201
    assert metric(capturing, "ggserve_feedback_total", rating="down") == before + 1
    assert metric(capturing, "ggserve_capture_records_total", outcome="written") >= 1


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "response_id"),
        ({"rating": 1}, "response_id"),
        ({"response_id": "x"}, "rating"),
        ({"response_id": 5, "rating": 1}, "response_id"),
        ({"response_id": "x", "rating": "1"}, "rating"),
        ({"response_id": "x", "rating": 1.5}, "rating"),
        ({"response_id": "x", "rating": True}, "rating"),
        ({"response_id": "x", "rating": 0}, "rating"),
        ({"response_id": "x", "rating": 6}, "rating"),
        ({"response_id": "x", "rating": -1, "scale": "stars"}, "rating"),
        ({"response_id": "x", "rating": 10**30}, "rating"),
        ({"response_id": "x", "rating": 1, "scale": "emoji"}, "scale"),
        ({"response_id": "", "rating": 1}, "response_id"),
        ({"response_id": "x" * 10_000, "rating": 1}, "response_id"),
        ({"response_id": "../../etc/passwd", "rating": 1}, "response_id"),
        ({"response_id": "x", "rating": 1, "comment": "c" * 2001}, "comment"),
        ({"response_id": "x", "rating": 1, "correction": "c" * 8001}, "correction"),
        ({"response_id": "x", "rating": 1, "correction": ["a"]}, "correction"),
        ({"response_id": "x", "rating": 1, "tags": ["t"] * 17}, "tags"),
        ({"response_id": "x", "rating": 1, "tags": [""]}, "tags[0]"),
        ({"response_id": "x", "rating": 1, "tags": "good"}, "tags"),
        ({"response_id": "x", "rating": 1, "user_id": "u"}, "user_id"),
        ([1, 2], None),
        ("just a string", None),
    ],
)
def test_hostile_feedback_bodies_are_400_naming_the_field(
    capturing: ServerHandle, body: object, param: str | None
) -> None:
    response = feedback(capturing, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param, error


@pytest.mark.parametrize(
    "raw",
    [b"\xff\xfe{not json", b'{"response_id": "\xff", "rating": 1}', b"", b"{" * 10_000],
)
def test_undecodable_bodies_are_400(capturing: ServerHandle, raw: bytes) -> None:
    response = httpx.post(
        capturing.url + "/v1/feedback",
        content=raw,
        headers={**capturing.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 400 and "error" in response.json()


def test_feedback_needs_a_key(capturing: ServerHandle) -> None:
    response = httpx.post(capturing.url + "/v1/feedback", json={"response_id": "x", "rating": 1})
    assert response.status_code == 401


def test_nothing_stored_is_lost_by_bad_input(capturing: ServerHandle, capture_db: Path) -> None:
    rid = chat(capturing, "Count to three.")["id"]
    assert (
        feedback(capturing, {"response_id": rid, "rating": 5, "comment": "great"}).status_code
        == 201
    )
    for bad in ({"response_id": rid, "rating": 9}, {"response_id": rid, "rating": 1, "x": 1}):
        assert feedback(capturing, bad).status_code == 400
    stored = store(capture_db).get_feedback(str(rid))
    assert stored is not None and stored.feedback.rating.value == 5
    assert stored.feedback.comment == "great"
