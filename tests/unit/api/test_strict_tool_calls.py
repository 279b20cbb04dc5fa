"""A strict tool's call is a valid call or no call; a non-strict one comes back as generated."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient

from tests.fakes import FakeEngine
from tests.unit.api.conftest import auth

PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
BAD_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"town": "Paris"}}\n</tool_call>'
GOOD_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def _chat(strict: bool, **extra: Any) -> dict[str, Any]:
    tool = {"name": "get_weather", "parameters": PARAMETERS, "strict": strict}
    return {
        "model": "m",
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [{"type": "function", "function": tool}],
        **extra,
    }


def _sse(body: str) -> list[dict[str, Any]]:
    lines = [line[5:].strip() for line in body.splitlines() if line.startswith("data:")]
    return [json.loads(line) for line in lines if line != "[DONE]"]


def test_a_strict_call_that_breaks_its_schema_is_a_refusal_not_a_call(
    client: TestClient, fake_engine: FakeEngine
) -> None:
    fake_engine.reply = BAD_CALL
    body = client.post("/v1/chat/completions", json=_chat(True), headers=auth()).json()
    choice = body["choices"][0]
    assert choice["message"]["tool_calls"] is None
    assert "get_weather" in choice["message"]["refusal"] and "city" in choice["message"]["refusal"]
    assert choice["finish_reason"] != "tool_calls"


def test_a_strict_call_that_validates_is_returned(
    client: TestClient, fake_engine: FakeEngine
) -> None:
    fake_engine.reply = GOOD_CALL
    body = client.post("/v1/chat/completions", json=_chat(True), headers=auth()).json()
    (call,) = body["choices"][0]["message"]["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert body["choices"][0]["finish_reason"] == "tool_calls"


def test_a_non_strict_call_comes_back_as_generated(
    client: TestClient, fake_engine: FakeEngine
) -> None:
    fake_engine.reply = BAD_CALL
    body = client.post("/v1/chat/completions", json=_chat(False), headers=auth()).json()
    (call,) = body["choices"][0]["message"]["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == {"town": "Paris"}


def test_a_streamed_strict_call_that_breaks_its_schema_ends_with_an_error(
    client: TestClient, fake_engine: FakeEngine
) -> None:
    fake_engine.reply = BAD_CALL
    payload = _chat(True, stream=True)
    with client.stream("POST", "/v1/chat/completions", json=payload, headers=auth()) as resp:
        events = _sse(resp.read().decode())
    finishes = [c["choices"][0]["finish_reason"] for c in events if c.get("choices")]
    assert "tool_calls" not in finishes and "stop" not in finishes
    assert any("error" in event for event in events)


def test_strict_refuses_a_schema_keyword_the_grammar_cannot_enforce(client: TestClient) -> None:
    parameters = {**PARAMETERS, "properties": {"city": {"type": "string", "maxLength": 9}}}
    parameters["properties"]["days"] = {"type": "integer", "minimum": 1}
    payload = _chat(True)
    payload["tools"][0]["function"]["parameters"] = parameters
    response = client.post("/v1/chat/completions", json=payload, headers=auth())
    assert response.status_code == 400
    assert (
        response.json()["error"]["param"] == "tools[0].function.parameters.properties.days.minimum"
    )
    payload["tools"][0]["function"]["strict"] = False  # not strict: allowed, checked by the client
    assert client.post("/v1/chat/completions", json=payload, headers=auth()).status_code == 200


def test_the_responses_api_applies_the_same_strict_rule(
    client: TestClient, fake_engine: FakeEngine
) -> None:
    fake_engine.reply = BAD_CALL
    tool = {"type": "function", "name": "get_weather", "parameters": PARAMETERS, "strict": True}
    payload = {"model": "m", "input": "Weather?", "tools": [tool]}
    body = client.post("/v1/responses", json=payload, headers=auth()).json()
    assert [item["type"] for item in body["output"]] == ["message"]
    assert body["output"][0]["content"][0]["type"] == "refusal"
