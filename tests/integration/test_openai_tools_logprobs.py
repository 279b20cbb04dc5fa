"""Tool calling, logprobs and prompt scoring through the official ``openai`` client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import llama_cpp
import numpy as np
import openai
import pytest

from tests.integration.server_proc import MODEL, ServerHandle, running_server

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer"},
    },
    "required": ["city", "unit"],
}
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": WEATHER_SCHEMA,
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Current time in a timezone",
            "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}},
        },
    },
]
ASK: list[Any] = [{"role": "user", "content": "What's the weather in Paris?"}]
NAMED: Any = {"type": "function", "function": {"name": "get_weather"}}


@pytest.fixture(scope="module")
def client(server: ServerHandle) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=server.api_key, timeout=120)


def test_named_tool_call_returns_arguments_valid_under_the_schema(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="m", messages=ASK, tools=TOOLS, tool_choice=NAMED, max_tokens=80, seed=1
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    assert calls[0].type == "function" and calls[0].id.startswith("call_")
    assert calls[0].function.name == "get_weather"
    jsonschema.validate(json.loads(calls[0].function.arguments), WEATHER_SCHEMA)


def test_a_named_call_at_a_small_budget_is_a_call_or_length_never_leaked_text(
    client: openai.OpenAI,
) -> None:
    """Issue 21: at ``max_tokens: 24`` the wrapper used to eat the budget and leak, cut, into
    ``content``. The known part of the call is in the prompt now; the budget is the arguments'."""
    reply = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "What's the weather in Paris?"}],
        tools=[
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
                    },
                },
            }
        ],
        tool_choice=NAMED,
        max_tokens=24,
        temperature=0,
    )
    choice = reply.choices[0]
    assert choice.message.content is None
    if choice.finish_reason == "length":
        assert choice.message.tool_calls is None
    else:
        assert choice.finish_reason == "tool_calls"
        (call,) = choice.message.tool_calls or []
        assert call.function.name == "get_weather"
        assert isinstance(json.loads(call.function.arguments)["city"], str)
    assert reply.usage is not None and reply.usage.completion_tokens <= 24


def test_streamed_tool_call_arrives_as_indexed_fragments(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="m",
        messages=ASK,
        tools=TOOLS,
        tool_choice=NAMED,
        max_tokens=80,
        seed=2,
        stream=True,
    )
    ids, names, fragments, finish = set(), [], [], None
    for chunk in stream:
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        for call in choice.delta.tool_calls or []:
            assert call.index == 0
            if call.id:
                ids.add(call.id)
            if call.function and call.function.name:
                names.append(call.function.name)
            if call.function and call.function.arguments:
                fragments.append(call.function.arguments)
    assert finish == "tool_calls"
    assert len(ids) == 1 and names == ["get_weather"]
    assert len(fragments) > 1  # streamed as it was generated, not in one piece
    jsonschema.validate(json.loads("".join(fragments)), WEATHER_SCHEMA)


def test_required_tool_choice_always_calls_a_listed_tool(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="m", messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=120, seed=3
    )
    calls = reply.choices[0].message.tool_calls or []
    assert calls and all(c.function.name in ("get_weather", "get_time") for c in calls)
    for call in calls:
        json.loads(call.function.arguments)


def test_tool_round_trip_ends_in_a_text_answer(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(
        model="m", messages=ASK, tools=TOOLS, tool_choice=NAMED, max_tokens=80, seed=4
    )
    message = first.choices[0].message
    assert message.tool_calls
    call = message.tool_calls[0]
    follow_up: list[Any] = [
        *ASK,
        message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 18, "sky": "clear"}'},
    ]
    final = client.chat.completions.create(
        model="m", messages=follow_up, tools=TOOLS, tool_choice="none", max_tokens=40, temperature=0
    )
    answer = final.choices[0]
    assert answer.message.tool_calls is None
    assert answer.finish_reason in ("stop", "length")
    assert (answer.message.content or "").strip()


def test_greedy_chat_logprobs_rank_the_sampled_token_first(client: openai.OpenAI) -> None:
    kwargs: Any = {
        "model": "m",
        "messages": [{"role": "user", "content": "Name a colour."}],
        "max_tokens": 12,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 4,
    }
    reply = client.chat.completions.create(**kwargs)
    content = reply.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and len(content) == reply.usage.completion_tokens  # type: ignore[union-attr]
    for entry in content:
        assert len(entry.top_logprobs) == 4
        assert all(entry.logprob >= alt.logprob - 1e-6 for alt in entry.top_logprobs)
        assert entry.top_logprobs[0].token == entry.token
        assert bytes(entry.bytes or []).decode("utf-8", "replace") == entry.token
        assert sum(np.exp(alt.logprob) for alt in entry.top_logprobs) <= 1 + 1e-6
    assert "".join(e.token for e in content) == reply.choices[0].message.content

    streamed = [
        entry
        for chunk in client.chat.completions.create(**kwargs, stream=True)
        if chunk.choices and chunk.choices[0].logprobs
        for entry in chunk.choices[0].logprobs.content or []
    ]
    # Not compared with the first reply: the repeat evaluates only the last prompt token again
    # (prefix cache), a one-token batch whose logits differ in the last digits, enough to flip
    # near-ties. The same invariants hold.
    assert 0 < len(streamed) <= 12
    for entry in streamed:
        assert len(entry.top_logprobs) == 4 and entry.top_logprobs[0].token == entry.token


@pytest.fixture(scope="module")
def plain_attention_client() -> Iterator[openai.OpenAI]:
    """A server with flash attention off, like ``llama_cpp.Llama``'s default.

    Scoring is compared with llama.cpp's own logits to 1e-3; the flash-attention kernel (the
    server's default) computes a one-token batch differently by up to ~0.06 nats, which says
    nothing about the scoring arithmetic under test.
    """
    with running_server({"GGSERVE_FLASH_ATTN": "false"}) as server:
        yield openai.OpenAI(base_url=server.url + "/v1", api_key=server.api_key, timeout=120)


def test_echo_with_max_tokens_zero_scores_the_prompt_like_llama_cpp(
    plain_attention_client: openai.OpenAI,
) -> None:
    client = plain_attention_client
    prompt = "The capital of France is Paris. " * 20  # several 64-token scoring chunks
    reply = client.completions.create(
        model="m", prompt=prompt, max_tokens=0, echo=True, logprobs=1, temperature=0
    )
    choice = reply.choices[0]
    assert choice.text == prompt
    logprobs = choice.logprobs
    assert logprobs is not None and logprobs.token_logprobs is not None
    assert reply.usage is not None and reply.usage.completion_tokens == 0
    n_prompt = reply.usage.prompt_tokens
    assert len(logprobs.token_logprobs) == n_prompt
    assert logprobs.token_logprobs[0] is None
    assert "".join(logprobs.tokens or []) == prompt

    llm = llama_cpp.Llama(str(MODEL), n_ctx=2048, logits_all=True, verbose=False)
    try:
        tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=True)
        assert len(tokens) == n_prompt
        llm.eval(tokens)
        scores = np.asarray(llm.scores[: len(tokens)], dtype=np.float64)
    finally:
        llm.close()
    peak = scores.max(axis=1)
    log_norm = peak + np.log(np.exp(scores - peak[:, None]).sum(axis=1))
    expected = [scores[i - 1, tokens[i]] - log_norm[i - 1] for i in range(1, len(tokens))]
    assert logprobs.token_logprobs[1:] == pytest.approx(expected, abs=1e-3)


def test_completion_logprobs_cover_echo_and_generated_tokens(client: openai.OpenAI) -> None:
    reply = client.completions.create(
        model="m", prompt="One, two, three,", max_tokens=5, echo=True, logprobs=3, temperature=0
    )
    logprobs = reply.choices[0].logprobs
    assert reply.usage is not None and logprobs is not None
    total = reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert len(logprobs.tokens or []) == len(logprobs.token_logprobs or []) == total
    assert logprobs.text_offset == sorted(logprobs.text_offset or [])
    generated_top = (logprobs.top_logprobs or [])[reply.usage.prompt_tokens :]
    assert all(top is not None and 1 <= len(top) <= 3 for top in generated_top)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
        ),
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "parameters": {
                                "type": "object",
                                "properties": {"x": {"$ref": "#/nowhere"}},
                            },
                        },
                    }
                ]
            },
            "tools[0].function.parameters",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "bad name"}}]},
            "tools[0].function.name",
        ),
        ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logprobs": "yes"}, "logprobs"),
        ({"n": 99, "logprobs": True}, "n"),  # more choices than slots
        (
            {"messages": [{"role": "tool", "tool_call_id": "x", "content": "18C"}]},
            "messages[0].tool_call_id",
        ),
        (
            {
                "messages": [
                    *ASK,
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "c1",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": "{"},
                            }
                        ],
                    },
                ]
            },
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            {"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}},
            "response_format",
        ),
    ],
)
def test_bad_tool_and_logprob_requests_name_the_field(
    server: ServerHandle, body: dict[str, Any], param: str
) -> None:
    import httpx

    payload = {"model": "m", "messages": ASK, "max_tokens": 4, **body}
    response = httpx.post(
        server.url + "/v1/chat/completions", json=payload, headers=server.headers, timeout=60
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"logprobs": 6}, "logprobs"),
        ({"logprobs": -1}, "logprobs"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"prompt": [5, 10**9], "echo": True, "logprobs": 1, "max_tokens": 0}, "prompt[1]"),
        ({"prompt": [5, -1], "max_tokens": 2}, "prompt[1]"),
    ],
)
def test_bad_completion_logprob_requests_name_the_field(
    server: ServerHandle, body: dict[str, Any], param: str
) -> None:
    import httpx

    payload = {"model": "m", "prompt": "Hello", **body}
    response = httpx.post(
        server.url + "/v1/completions", json=payload, headers=server.headers, timeout=60
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_streamed_completion_sends_prompt_logprobs_with_the_echo(client: openai.OpenAI) -> None:
    prompt = "Once upon a time"
    chunks = list(
        client.completions.create(
            model="m",
            prompt=prompt,
            max_tokens=3,
            echo=True,
            logprobs=2,
            temperature=0,
            stream=True,
        )
    )
    first = chunks[0].choices[0]
    assert first.text == prompt
    assert first.logprobs is not None and first.logprobs.token_logprobs is not None
    assert first.logprobs.token_logprobs[0] is None
    assert all(lp is not None for lp in first.logprobs.token_logprobs[1:])
    generated = [
        lp
        for chunk in chunks[1:]
        if chunk.choices and chunk.choices[0].logprobs
        for lp in chunk.choices[0].logprobs.token_logprobs or []
    ]
    assert len(generated) == 3
    offsets = [
        off
        for chunk in chunks
        if chunk.choices and chunk.choices[0].logprobs
        for off in chunk.choices[0].logprobs.text_offset or []
    ]
    assert offsets == sorted(offsets) and offsets[0] == 0


FORCED_CALL: Any = {"model": "m", "messages": ASK, "tools": TOOLS, "tool_choice": NAMED}


def test_n_choices_each_carry_their_own_tool_call_and_logprobs(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        **FORCED_CALL,
        max_tokens=80,
        n=3,
        seed=7,
        temperature=1.0,
        logprobs=True,
        top_logprobs=2,
    )
    assert [choice.index for choice in reply.choices] == [0, 1, 2]
    arguments: set[str] = set()
    tokens = 0
    for choice in reply.choices:
        assert choice.finish_reason == "tool_calls"
        calls = choice.message.tool_calls
        assert calls is not None and calls[0].function.name == "get_weather"
        jsonschema.validate(json.loads(calls[0].function.arguments), WEATHER_SCHEMA)
        arguments.add(calls[0].function.arguments)
        assert choice.logprobs is not None and choice.logprobs.content
        assert all(entry.logprob <= 0 for entry in choice.logprobs.content)
        tokens += len(choice.logprobs.content)
    # Distinct seeds per choice (seed + index): at temperature 1 the arguments are not all one.
    assert len(arguments) > 1, arguments
    assert reply.usage is not None and reply.usage.completion_tokens == tokens


def test_streamed_n_tool_calls_keep_their_choice_index(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        **FORCED_CALL,
        max_tokens=80,
        n=2,
        seed=3,
        stream=True,
    )
    arguments = {0: "", 1: ""}
    finishes: dict[int, str] = {}
    for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                arguments[choice.index] += (call.function and call.function.arguments) or ""
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert finishes == {0: "tool_calls", 1: "tool_calls"}
    for text in arguments.values():
        jsonschema.validate(json.loads(text), WEATHER_SCHEMA)


def test_n_completions_share_one_scored_echo(client: openai.OpenAI) -> None:
    reply = client.completions.create(
        model="m",
        prompt="One, two, three,",
        max_tokens=4,
        echo=True,
        logprobs=2,
        temperature=0,
        n=2,
    )
    assert reply.usage is not None and [c.index for c in reply.choices] == [0, 1]
    first, second = (choice.logprobs for choice in reply.choices)
    assert first is not None and second is not None
    n_prompt = reply.usage.prompt_tokens
    # The prompt is scored once and both choices report it; greedy choices agree entirely.
    assert first.token_logprobs == second.token_logprobs
    assert len(first.tokens or []) == n_prompt + reply.usage.completion_tokens // 2
    assert reply.choices[0].text == reply.choices[1].text
    assert reply.choices[0].text.startswith("One, two, three,")
