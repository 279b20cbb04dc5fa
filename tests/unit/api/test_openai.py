"""The OpenAI wire format, over the scripted engine (tests/integration repeats it for real)."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from tests.fakes import FakeEngine
from tests.unit.api.conftest import auth

CHAT = {"model": "anything", "messages": [{"role": "user", "content": "Capital of France?"}]}


def sse_data(body: str) -> list[str]:
    return [line[5:].strip() for line in body.splitlines() if line.startswith("data:")]


def test_chat_completion_has_openai_shape_and_usage(client: TestClient) -> None:
    response = client.post("/v1/chat/completions", json=CHAT, headers=auth())
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Paris is the capital of France.",
        "refusal": None,
        "tool_calls": None,
    }
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == 6
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 6


def test_streaming_chat_sends_deltas_usage_and_done(client: TestClient) -> None:
    payload = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    with client.stream("POST", "/v1/chat/completions", json=payload, headers=auth()) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        data = sse_data(resp.read().decode())
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Paris is the capital of France."
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finals[0]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 6


def test_max_tokens_gives_finish_reason_length(client: TestClient) -> None:
    response = client.post(
        "/v1/chat/completions", json={**CHAT, "max_completion_tokens": 2}, headers=auth()
    )
    assert response.json()["choices"][0]["message"]["content"] == "Paris is"
    assert response.json()["choices"][0]["finish_reason"] == "length"


def test_sampling_fields_reach_the_engine(client: TestClient, fake_engine: FakeEngine) -> None:
    payload = {
        **CHAT,
        "temperature": 0,
        "top_p": 0.5,
        "seed": 7,
        "stop": ["capital"],
        "presence_penalty": 0.5,
        "frequency_penalty": 0.25,
        "logit_bias": {"42": -100},
        "some_future_field": {"ignored": True},
    }
    response = client.post("/v1/chat/completions", json=payload, headers=auth())
    assert response.status_code == 200
    params = fake_engine.requests[-1].params
    assert (params.temperature, params.top_p, params.seed) == (0, 0.5, 7)
    assert params.stop == ("capital",)
    assert (params.presence_penalty, params.frequency_penalty) == (0.5, 0.25)
    assert params.logit_bias == ((42, -100.0),)
    assert response.json()["choices"][0]["message"]["content"] == "Paris is the"


def test_text_completion_and_streaming(client: TestClient) -> None:
    body = client.post(
        "/v1/completions", json={"prompt": "The capital", "max_tokens": 3}, headers=auth()
    ).json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "Paris is the"
    with client.stream(
        "POST", "/v1/completions", json={"prompt": "x", "stream": True}, headers=auth()
    ) as resp:
        data = sse_data(resp.read().decode())
    assert data[-1] == "[DONE]"
    assert "".join(json.loads(d)["choices"][0]["text"] for d in data[:-1]).startswith("Paris")


def test_models_lists_the_served_model(client: TestClient) -> None:
    body = client.get("/v1/models", headers=auth()).json()
    assert body["object"] == "list"
    assert body["data"][0]["id"] == "SmolLM2-135M-Instruct.Q4_1"
    assert body["data"][0]["context_length"] == 256


def test_ask_returns_answer_usage_and_timings(client: TestClient) -> None:
    body = client.post("/v1/ask", json={"question": "Capital of France?"}, headers=auth()).json()
    assert body["answer"] == "Paris is the capital of France."
    assert body["usage"]["completion_tokens"] == 6
    assert body["timings"]["ttft_ms"] == 3.0
    assert body["sources"] == []


def test_n_choices_each_have_an_index_and_usage_counts_the_prompt_once(
    client: TestClient, fake_engine: FakeEngine
) -> None:
    single = client.post("/v1/chat/completions", json=CHAT, headers=auth()).json()
    response = client.post("/v1/chat/completions", json={**CHAT, "n": 3}, headers=auth())
    assert response.status_code == 200
    body = response.json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert {c["message"]["content"] for c in body["choices"]} == {"Paris is the capital of France."}
    assert body["usage"]["prompt_tokens"] == single["usage"]["prompt_tokens"]
    assert body["usage"]["completion_tokens"] == 3 * single["usage"]["completion_tokens"]
    assert fake_engine.requests[-1].n == 3


def test_streamed_n_choices_carry_their_index_and_one_usage_chunk(client: TestClient) -> None:
    payload = {**CHAT, "n": 2, "stream": True, "stream_options": {"include_usage": True}}
    with client.stream("POST", "/v1/chat/completions", json=payload, headers=auth()) as resp:
        data = sse_data(resp.read().decode())
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    texts = {0: "", 1: ""}
    roles, finishes = [], {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            if choice["delta"].get("role"):
                roles.append(choice["index"])
            texts[choice["index"]] += choice["delta"].get("content") or ""
            if choice["finish_reason"]:
                finishes[choice["index"]] = choice["finish_reason"]
    assert roles == [0, 1]
    assert texts == {0: "Paris is the capital of France.", 1: "Paris is the capital of France."}
    assert finishes == {0: "stop", 1: "stop"}
    usage_chunks = [c for c in chunks if c.get("usage")]
    assert len(usage_chunks) == 1 and usage_chunks[0]["usage"]["completion_tokens"] == 12


def test_completions_with_n_and_streaming_index(client: TestClient) -> None:
    body = client.post(
        "/v1/completions", json={"prompt": "Say", "n": 2, "max_tokens": 2}, headers=auth()
    ).json()
    assert [(c["index"], c["text"], c["finish_reason"]) for c in body["choices"]] == [
        (0, "Paris is", "length"),
        (1, "Paris is", "length"),
    ]
    assert body["usage"]["completion_tokens"] == 4
    payload = {"prompt": "Say", "n": 2, "max_tokens": 2, "stream": True}
    with client.stream("POST", "/v1/completions", json=payload, headers=auth()) as resp:
        chunks = [json.loads(d) for d in sse_data(resp.read().decode())[:-1]]
    by_index: dict[int, str] = {0: "", 1: ""}
    for chunk in chunks:
        for choice in chunk["choices"]:
            by_index[choice["index"]] += choice["text"]
    assert by_index == {0: "Paris is", 1: "Paris is"}
