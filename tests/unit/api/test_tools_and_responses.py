"""Tool-call and Responses wire shapes over the scripted engine (no model)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.fakes import FakeEngine
from tests.unit.api.conftest import auth

CALL_REPLY = (
    'Checking. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}'
    "\n</tool_call>"
)
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            },
        },
    }
]
CHAT: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "Weather?"}]}


def _sse(body: str) -> list[dict[str, Any]]:
    lines = [line[5:].strip() for line in body.splitlines() if line.startswith("data:")]
    return [json.loads(line) for line in lines if line != "[DONE]"]


def test_tool_choice_decides_grammar_and_laziness(
    client: TestClient, fake_engine: FakeEngine
) -> None:
    for choice, lazy in (("auto", True), ("required", False)):
        client.post(
            "/v1/chat/completions",
            json={**CHAT, "tools": TOOLS, "tool_choice": choice},
            headers=auth(),
        )
        params = fake_engine.requests[-1].params
        assert params.grammar and "get-weather-call" in params.grammar
        assert (params.grammar_trigger is not None) == lazy
    client.post("/v1/chat/completions", json=CHAT, headers=auth())
    assert fake_engine.requests[-1].params.grammar is None


def test_reply_with_a_call_has_tool_calls_and_finish_reason(
    client: TestClient, fake_engine: FakeEngine
) -> None:
    fake_engine.reply = CALL_REPLY
    body = client.post("/v1/chat/completions", json={**CHAT, "tools": TOOLS}, headers=auth()).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Checking."
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris", "days": 2}


def test_streamed_call_sends_header_then_argument_fragments(
    client: TestClient, fake_engine: FakeEngine
) -> None:
    fake_engine.reply = CALL_REPLY
    payload = {**CHAT, "tools": TOOLS, "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=payload, headers=auth()) as resp:
        chunks = _sse(resp.read().decode())
    deltas = [c["choices"][0]["delta"] for c in chunks]
    calls = [d["tool_calls"][0] for d in deltas if d.get("tool_calls")]
    assert calls[0]["id"].startswith("call_") and calls[0]["function"]["name"] == "get_weather"
    assert all(c["index"] == 0 and c.get("id") is None for c in calls[1:])
    arguments = "".join(c["function"]["arguments"] or "" for c in calls)
    assert json.loads(arguments) == {"city": "Paris", "days": 2}
    content = "".join(d.get("content") or "" for d in deltas)
    assert content.strip() == "Checking."
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_responses_stream_events_for_text_then_a_call(
    client: TestClient, fake_engine: FakeEngine
) -> None:
    fake_engine.reply = CALL_REPLY
    payload = {
        "model": "m",
        "input": "Weather?",
        "stream": True,
        "tools": [{"type": "function", **TOOLS[0]["function"]}],
    }
    with client.stream("POST", "/v1/responses", json=payload, headers=auth()) as resp:
        events = _sse(resp.read().decode())
    kinds = [e["type"] for e in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * kinds.count("response.output_text.delta"),
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        *["response.function_call_arguments.delta"]
        * kinds.count("response.function_call_arguments.delta"),
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = events[-1]["response"]
    assert [item["type"] for item in final["output"]] == ["message", "function_call"]
    assert json.loads(final["output"][1]["arguments"]) == {"city": "Paris", "days": 2}
    assert final["output"][1]["call_id"].startswith("call_")


def test_responses_without_stream_returns_a_response_object(
    client: TestClient, fake_engine: FakeEngine
) -> None:
    body = client.post(
        "/v1/responses",
        json={"model": "m", "input": "Capital?", "instructions": "Be brief."},
        headers=auth(),
    ).json()
    assert body["object"] == "response" and body["status"] == "completed"
    assert body["output"][0]["content"][0]["text"] == fake_engine.reply
    assert body["store"] is False and body["instructions"] == "Be brief."
    assert body["usage"]["output_tokens"] == 6


@pytest.mark.parametrize("depth", [450, 3000])
def test_deeply_nested_tool_schema_is_a_4xx_not_a_crash(client: TestClient, depth: int) -> None:
    deep = '{"type": "object", "properties": {"x": ' * depth + '{"type": "string"}' + "}}" * depth
    body = (
        '{"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": '
        '"function", "function": {"name": "f", "parameters": ' + deep + "}}]}"
    )
    response = client.post(
        "/v1/chat/completions",
        content=body,
        headers={**auth(), "content-type": "application/json"},
    )
    assert 400 <= response.status_code < 500, response.text


NAMED = {"type": "function", "function": {"name": "get_weather"}}
PREFILL = '<tool_call>\n{"name": "get_weather", "arguments": '


def test_a_named_call_generates_only_its_arguments(
    client: TestClient, fake_engine: FakeEngine
) -> None:
    """The marker and the name are known: they go into the prompt, not the budget (issue 21)."""
    fake_engine.reply = '{"city": "Paris", "days": 2}}\n</tool_call>'
    payload = {**CHAT, "tools": TOOLS, "tool_choice": NAMED}
    body = client.post("/v1/chat/completions", json=payload, headers=auth()).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris", "days": 2}
    request = fake_engine.requests[-1]
    assert request.prompt_tokens[-len(PREFILL.split()) :] == [len(w) for w in PREFILL.split()]
    rules = dict(line.split(" ::= ", 1) for line in request.params.grammar.splitlines() if line)
    assert rules["root"] == "first-call" and "get_weather" not in rules["first-call"]


def test_a_forced_call_cut_by_max_tokens_is_length_with_nothing_leaked(
    client: TestClient, fake_engine: FakeEngine
) -> None:
    fake_engine.reply = '{"city": "Paris", "days": 2}}\n</tool_call>'
    for choice in (NAMED, "required"):
        payload = {**CHAT, "tools": TOOLS, "tool_choice": choice, "max_tokens": 1}
        body = client.post("/v1/chat/completions", json=payload, headers=auth()).json()
        (only,) = body["choices"]
        assert only["finish_reason"] == "length"
        assert only["message"]["content"] is None and only["message"]["tool_calls"] is None


def test_a_streamed_named_call_opens_at_once_and_a_cut_leaks_no_content(
    client: TestClient, fake_engine: FakeEngine
) -> None:
    fake_engine.reply = '{"city": "Paris", "days": 2}}\n</tool_call>'
    payload = {**CHAT, "tools": TOOLS, "tool_choice": NAMED, "stream": True, "max_tokens": 2}
    with client.stream("POST", "/v1/chat/completions", json=payload, headers=auth()) as resp:
        chunks = _sse(resp.read().decode())
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    calls = [d["tool_calls"][0] for d in deltas if d.get("tool_calls")]
    assert calls[0]["function"]["name"] == "get_weather"  # before any generated token
    assert "".join(d.get("content") or "" for d in deltas) == ""
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_required_picks_the_name_from_a_grammar_over_the_tool_names(
    client: TestClient, fake_engine: FakeEngine
) -> None:
    fake_engine.reply = 'get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    payload = {**CHAT, "tools": TOOLS, "tool_choice": "required"}
    body = client.post("/v1/chat/completions", json=payload, headers=auth()).json()
    (call,) = body["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}


def test_responses_api_reads_a_forced_call_the_same_way(
    client: TestClient, fake_engine: FakeEngine
) -> None:
    fake_engine.reply = '{"city": "Paris"}}\n</tool_call>'
    tools = [{"type": "function", **TOOLS[0]["function"]}]
    payload = {
        "model": "m",
        "input": "Weather?",
        "tools": tools,
        "tool_choice": {"type": "function", "name": "get_weather"},
    }
    body = client.post("/v1/responses", json=payload, headers=auth()).json()
    calls = [item for item in body["output"] if item["type"] == "function_call"]
    assert [c["name"] for c in calls] == ["get_weather"]
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris"}


THINKING = "<think>\nA city in France.\n</think>\n\nParis is the capital."


def test_reasoning_content_is_split_when_asked_for(
    client: TestClient, fake_engine: FakeEngine
) -> None:
    fake_engine.reply = THINKING
    payload = {**CHAT, "reasoning_format": "deepseek"}
    message = client.post("/v1/chat/completions", json=payload, headers=auth()).json()["choices"][
        0
    ]["message"]
    assert message["reasoning_content"] == "A city in France.\n"
    assert message["content"] == "Paris is the capital."
    plain = client.post(
        "/v1/chat/completions", json={**CHAT, "reasoning_format": "none"}, headers=auth()
    ).json()["choices"][0]["message"]
    assert plain["content"] == THINKING and "reasoning_content" not in plain


def test_streamed_reasoning_arrives_as_reasoning_deltas(
    client: TestClient, fake_engine: FakeEngine
) -> None:
    fake_engine.reply = THINKING
    payload = {**CHAT, "reasoning_format": "deepseek", "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=payload, headers=auth()) as resp:
        chunks = _sse(resp.read().decode())
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == "A city in France.\n"
    assert "".join(d.get("content") or "" for d in deltas) == "Paris is the capital."


def test_a_model_without_thinking_tags_is_left_alone(
    client: TestClient, fake_engine: FakeEngine
) -> None:
    """The default follows the template: the fake's (and SmolLM2's) has no <think>."""
    fake_engine.reply = THINKING
    message = client.post("/v1/chat/completions", json=CHAT, headers=auth()).json()["choices"][0][
        "message"
    ]
    assert message["content"] == THINKING


def test_a_bad_reasoning_format_is_a_400(client: TestClient) -> None:
    response = client.post(
        "/v1/chat/completions", json={**CHAT, "reasoning_format": "r1"}, headers=auth()
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "reasoning_format"
