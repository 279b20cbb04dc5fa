"""Structured output fails closed: a JSON answer that breaks its response_format is never a
success (whole: ``message.refusal`` says why, content is null; streamed: an in-band error
instead of the ``stop`` chunk), and ``strict: true`` refuses keywords no grammar enforces."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient

from tests.fakes import FakeEngine
from tests.unit.api.conftest import auth

CITY = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
    "required": ["city", "country"],
}


def _body(schema: dict[str, Any] | None, *, strict: bool = False, stream: bool = False) -> dict:
    fmt: dict[str, Any] = (
        {"type": "json_object"}
        if schema is None
        else {
            "type": "json_schema",
            "json_schema": {"name": "c", "schema": schema, "strict": strict},
        }
    )
    return {
        "messages": [{"role": "user", "content": "Paris is in which country?"}],
        "response_format": fmt,
        "stream": stream,
    }


def test_a_valid_json_answer_is_returned_as_content(
    client: TestClient, fake_engine: FakeEngine
) -> None:
    fake_engine.reply = '{"city": "Paris", "country": "France"}'
    body = client.post("/v1/chat/completions", json=_body(CITY), headers=auth()).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["message"]["refusal"] is None
    assert json.loads(choice["message"]["content"]) == {"city": "Paris", "country": "France"}


def test_an_answer_that_breaks_the_schema_is_a_refusal_not_content(
    client: TestClient, fake_engine: FakeEngine
) -> None:
    fake_engine.reply = '{"city": "Paris"}'  # "country" is required
    body = client.post("/v1/chat/completions", json=_body(CITY), headers=auth()).json()
    message = body["choices"][0]["message"]
    assert message["content"] is None
    assert "does not satisfy response_format" in message["refusal"]
    assert "country" in message["refusal"]


def test_text_that_is_not_json_is_never_a_json_object_success(
    client: TestClient, fake_engine: FakeEngine
) -> None:
    fake_engine.reply = "Paris is the capital of France."
    body = client.post("/v1/chat/completions", json=_body(None), headers=auth()).json()
    message = body["choices"][0]["message"]
    assert message["content"] is None and "not JSON" in message["refusal"]


def test_a_streamed_invalid_answer_ends_with_an_error_not_stop(
    client: TestClient, fake_engine: FakeEngine
) -> None:
    fake_engine.reply = '{"city": "Paris"}'
    with client.stream(
        "POST", "/v1/chat/completions", json=_body(CITY, stream=True), headers=auth()
    ) as response:
        assert response.status_code == 200
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["type"] == "invalid_output_error" and error["code"] == "invalid_json_answer"
    finishes = [
        c["finish_reason"]
        for e in events[:-2]
        for c in json.loads(e).get("choices", [])
        if c.get("finish_reason")
    ]
    assert finishes == []


def test_a_streamed_valid_answer_ends_with_stop(
    client: TestClient, fake_engine: FakeEngine
) -> None:
    fake_engine.reply = '{"city": "Paris", "country": "France"}'
    with client.stream(
        "POST", "/v1/chat/completions", json=_body(CITY, stream=True), headers=auth()
    ) as response:
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    finishes = [
        c["finish_reason"]
        for e in events[:-1]
        for c in json.loads(e).get("choices", [])
        if c.get("finish_reason")
    ]
    assert finishes == ["stop"]


def test_strict_refuses_a_keyword_the_grammar_cannot_enforce(client: TestClient) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 3}}}
    response = client.post("/v1/chat/completions", json=_body(schema, strict=True), headers=auth())
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "response_format.json_schema.schema.properties.n.minimum"


def test_without_strict_the_same_schema_is_checked_after_generation(
    client: TestClient, fake_engine: FakeEngine
) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 3}}}
    fake_engine.reply = '{"n": 1}'
    body = client.post("/v1/chat/completions", json=_body(schema), headers=auth()).json()
    message = body["choices"][0]["message"]
    assert message["content"] is None and "minimum" in message["refusal"]
