"""/v1/responses: reasoning items, and text.format answers held to the same check as chat."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient

from tests.fakes import FakeEngine
from tests.unit.api.conftest import auth

THINKING = "<think>\nA city in France.\n</think>\n\nParis is the capital."
CITY = {
    "type": "json_schema",
    "name": "City",
    "strict": True,
    "schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
}


def _sse(body: str) -> list[dict[str, Any]]:
    lines = [line[5:].strip() for line in body.splitlines() if line.startswith("data:")]
    return [json.loads(line) for line in lines if line != "[DONE]"]


def test_thinking_is_a_reasoning_item_before_the_message(
    client: TestClient, fake_engine: FakeEngine
) -> None:
    fake_engine.reply = THINKING
    payload = {"model": "m", "input": "Capital?", "reasoning_format": "deepseek"}
    body = client.post("/v1/responses", json=payload, headers=auth()).json()
    reasoning, message = body["output"]
    assert reasoning["type"] == "reasoning" and reasoning["id"].startswith("rs_")
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "A city in France.\n"}]
    assert message["content"][0]["text"] == "Paris is the capital."


def test_streamed_thinking_arrives_as_reasoning_text_events(
    client: TestClient, fake_engine: FakeEngine
) -> None:
    fake_engine.reply = THINKING
    payload = {"model": "m", "input": "Capital?", "reasoning_format": "deepseek", "stream": True}
    with client.stream("POST", "/v1/responses", json=payload, headers=auth()) as resp:
        events = _sse(resp.read().decode())
    kinds = [e["type"] for e in events]
    deltas = kinds.count("response.reasoning_text.delta")
    assert deltas and kinds[: 3 + deltas + 2] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        *["response.reasoning_text.delta"] * deltas,
        "response.reasoning_text.done",
        "response.output_item.done",
    ]
    thought = "".join(e["delta"] for e in events if e["type"] == "response.reasoning_text.delta")
    assert thought == "A city in France.\n"
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == "Paris is the capital."
    final = events[-1]["response"]
    assert [item["type"] for item in final["output"]] == ["reasoning", "message"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


def test_reasoning_format_none_keeps_the_thinking_in_the_text(
    client: TestClient, fake_engine: FakeEngine
) -> None:
    fake_engine.reply = THINKING
    payload = {"model": "m", "input": "Capital?", "reasoning_format": "none"}
    body = client.post("/v1/responses", json=payload, headers=auth()).json()
    assert [item["type"] for item in body["output"]] == ["message"]
    assert body["output"][0]["content"][0]["text"] == THINKING


def test_an_invalid_json_schema_answer_is_a_refusal_never_text(
    client: TestClient, fake_engine: FakeEngine
) -> None:
    fake_engine.reply = '{"town": "Paris"}'  # ends with stop, but breaks the schema
    payload = {"model": "m", "input": "City?", "text": {"format": CITY}}
    body = client.post("/v1/responses", json=payload, headers=auth()).json()
    (message,) = body["output"]
    (part,) = message["content"]
    assert part["type"] == "refusal" and "city" in part["refusal"]
    fake_engine.reply = '{"city": "Paris"}'
    body = client.post("/v1/responses", json=payload, headers=auth()).json()
    assert body["output"][0]["content"] == [
        {"type": "output_text", "text": '{"city": "Paris"}', "annotations": []}
    ]


def test_a_streamed_invalid_json_schema_answer_ends_with_an_error_event(
    client: TestClient, fake_engine: FakeEngine
) -> None:
    fake_engine.reply = '{"town": "Paris"}'
    payload = {"model": "m", "input": "City?", "text": {"format": CITY}, "stream": True}
    with client.stream("POST", "/v1/responses", json=payload, headers=auth()) as resp:
        events = _sse(resp.read().decode())
    kinds = [e["type"] for e in events]
    assert "response.completed" not in kinds
    assert "error" in kinds, kinds


def test_strict_text_format_refuses_keywords_the_grammar_cannot_enforce(
    client: TestClient,
) -> None:
    schema = {**CITY["schema"], "properties": {"city": {"type": "string", "format": "email"}}}
    payload = {"model": "m", "input": "City?", "text": {"format": {**CITY, "schema": schema}}}
    response = client.post("/v1/responses", json=payload, headers=auth())
    assert response.status_code == 400
    assert response.json()["error"]["param"].startswith("text.format")


def test_a_reasoning_item_sent_back_as_input_is_accepted(
    client: TestClient, fake_engine: FakeEngine
) -> None:
    payload = {
        "model": "m",
        "input": [
            {"type": "message", "role": "user", "content": "Capital?"},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "message", "role": "assistant", "content": "Paris."},
            {"type": "message", "role": "user", "content": "And Italy?"},
        ],
    }
    assert client.post("/v1/responses", json=payload, headers=auth()).status_code == 200
