"""``/v1/responses`` with the official client, and ``/tokenize`` / ``/detokenize``."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from tests.integration.server_proc import ServerHandle

CITY_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
    "required": ["city", "country"],
    "additionalProperties": False,
}
WEATHER_TOOL: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture(scope="module")
def client(server: ServerHandle) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=server.api_key, timeout=120)


def test_responses_create_answers_a_string_input(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model="m",
        instructions="Answer in one short sentence.",
        input="What is the capital of France?",
        max_output_tokens=24,
        temperature=0,
    )
    assert response.object == "response" and response.id.startswith("resp_")
    assert "Paris" in response.output_text
    assert response.status in ("completed", "incomplete")
    assert response.usage is not None and response.usage.output_tokens > 0
    assert response.store is False


def test_responses_json_schema_format_is_enforced(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model="m",
        input=[{"role": "user", "content": "Name a city and its country as JSON."}],
        text={"format": {"type": "json_schema", "name": "place", "schema": CITY_SCHEMA}},
        max_output_tokens=60,
        temperature=0,
    )
    jsonschema.validate(json.loads(response.output_text), CITY_SCHEMA)


def test_responses_function_call_and_its_output_round_trip(client: openai.OpenAI) -> None:
    first = client.responses.create(
        model="m",
        input="What's the weather in Oslo?",
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "name": "get_weather"},
        max_output_tokens=60,
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert isinstance(json.loads(calls[0].arguments)["city"], str)
    second = client.responses.create(
        model="m",
        input=[
            {"role": "user", "content": "What's the weather in Oslo?"},
            {
                "type": "function_call",
                "call_id": calls[0].call_id,
                "name": "get_weather",
                "arguments": calls[0].arguments,
            },
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "4C, rain"},
        ],
        tools=[WEATHER_TOOL],
        tool_choice="none",
        max_output_tokens=30,
        temperature=0,
    )
    assert second.output_text.strip()


def test_responses_stream_sends_typed_events_in_order(client: openai.OpenAI) -> None:
    with client.responses.stream(
        model="m", input="Say hello to Ada.", max_output_tokens=16, temperature=0
    ) as stream:
        events = list(stream)
    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:-1] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    done = next(e for e in events if e.type == "response.output_text.done")
    assert deltas and deltas == done.text
    assert events[-1].response.output[0].content[0].text == deltas  # type: ignore[union-attr]


def test_responses_stream_function_call_and_final_response(client: openai.OpenAI) -> None:
    with client.responses.stream(
        model="m",
        input="Weather in Rome?",
        tools=[WEATHER_TOOL],
        tool_choice="required",
        parallel_tool_calls=False,  # one call, then the grammar ends the output
        max_output_tokens=80,
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" in kinds
    assert kinds.index("response.function_call_arguments.done") < kinds.index("response.completed")
    calls = [item for item in final.output if item.type == "function_call"]
    assert calls and calls[0].name == "get_weather"
    json.loads(calls[0].arguments)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"previous_response_id": "resp_123"}, "previous_response_id"),
        ({"input": []}, "input"),
        ({"input": 5}, "input"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"temperature": 3}, "temperature"),
        ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
        ({"tools": [{**WEATHER_TOOL, "name": "no spaces allowed"}]}, "tools[0].name"),
        (
            {"tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "name": "x"}},
            "tool_choice",
        ),
        (
            {"input": [{"type": "function_call_output", "call_id": "c9", "output": "x"}]},
            "input[0]",
        ),
    ],
)
def test_bad_responses_requests_name_the_field(
    server: ServerHandle, body: dict[str, Any], param: str
) -> None:
    payload = {"model": "m", "input": "Hi", "max_output_tokens": 4, **body}
    response = httpx.post(server.url + "/v1/responses", json=payload, headers=server.headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"].startswith(param)


def test_tokenize_round_trips_with_pieces(server: ServerHandle) -> None:
    text = "Hello <|im_start|> wörld"
    tokens = httpx.post(
        server.url + "/tokenize", json={"content": text}, headers=server.headers
    ).json()["tokens"]
    assert all(isinstance(t, int) for t in tokens)
    pieces = httpx.post(
        server.url + "/tokenize",
        json={"content": text, "with_pieces": True},
        headers=server.headers,
    ).json()["tokens"]
    assert [p["id"] for p in pieces] == tokens
    assert "<|im_start|>" in [p["piece"] for p in pieces]  # parsed as one control token
    back = httpx.post(server.url + "/detokenize", json={"tokens": tokens}, headers=server.headers)
    assert back.status_code == 200
    assert back.json()["content"].replace("<|im_start|>", "") in (text.replace("<|im_start|>", ""),)


def test_tokenize_matches_the_prompt_count_of_completions(server: ServerHandle) -> None:
    text = "Count these tokens, please."
    tokens = httpx.post(
        server.url + "/tokenize",
        json={"content": text, "add_special": True},
        headers=server.headers,
    ).json()["tokens"]
    reply = httpx.post(
        server.url + "/v1/completions",
        json={"prompt": text, "max_tokens": 1, "temperature": 0},
        headers=server.headers,
        timeout=60,
    ).json()
    assert reply["usage"]["prompt_tokens"] == len(tokens)


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/tokenize", {}, "content"),
        ("/tokenize", {"content": 5}, "content"),
        ("/tokenize", {"content": "x", "with_pieces": "yes"}, "with_pieces"),
        ("/detokenize", {"tokens": [1, 2**31]}, "tokens[1]"),
        ("/detokenize", {"tokens": [-1]}, "tokens[0]"),
        ("/detokenize", {"tokens": ["5"]}, "tokens[0]"),
        ("/detokenize", {"tokens": "5"}, "tokens"),
    ],
)
def test_bad_tokenizer_requests_name_the_field(
    server: ServerHandle, path: str, body: dict[str, Any], param: str
) -> None:
    response = httpx.post(server.url + path, json=body, headers=server.headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert httpx.get(server.url + "/health").status_code == 200  # the process is still up


def test_tokenizer_endpoints_need_a_key(server: ServerHandle) -> None:
    response = httpx.post(server.url + "/tokenize", json={"content": "x"})
    assert response.status_code == 401


def test_invalid_utf8_body_is_a_400(server: ServerHandle) -> None:
    response = httpx.post(
        server.url + "/tokenize",
        content=b'{"content": "\xff\xfe"}',
        headers={**server.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
