"""The official ``openai`` client works unchanged against the real server."""

from __future__ import annotations

import openai
import pytest

from tests.integration.server_proc import ServerHandle


@pytest.fixture(scope="module")
def client(server: ServerHandle) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=server.api_key, timeout=120)


def test_chat_completion(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="smollm2",
        messages=[
            {"role": "system", "content": "Answer in one short sentence."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        max_tokens=24,
        temperature=0,
    )
    assert "Paris" in (reply.choices[0].message.content or "")
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage is not None and reply.usage.completion_tokens > 0


def test_streaming_chat_completion_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Name three colours."}],
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    parts, finish, usage = [], None, None
    for chunk in stream:
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert "".join(parts).strip()
    assert finish in ("stop", "length")
    assert usage is not None
    assert usage.completion_tokens >= len([p for p in parts if p]) > 0


def test_greedy_stream_equals_non_stream(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Describe the sea in one sentence."}]
    full = client.chat.completions.create(
        model="m", messages=messages, max_tokens=30, temperature=0
    )
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model="m", messages=messages, max_tokens=30, temperature=0, stream=True
        )
        if c.choices
    )
    assert streamed == full.choices[0].message.content


def test_text_completion(client: openai.OpenAI) -> None:
    reply = client.completions.create(
        model="smollm2", prompt="The capital of France is", max_tokens=8, temperature=0
    )
    assert reply.choices[0].text.strip()
    assert reply.usage is not None and reply.usage.prompt_tokens > 0


def test_models(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert models.data[0].id == "SmolLM2-135M-Instruct.Q4_1"


def test_embeddings(client: openai.OpenAI) -> None:
    result = client.embeddings.create(
        model="all-MiniLM-L6-v2",
        input=["a cat sits on the mat", "a kitten on a rug", "quarterly tax filing deadline"],
    )
    vectors = [d.embedding for d in result.data]
    assert len(vectors) == 3 and len(vectors[0]) == 384

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2])


def test_json_object_response_format(client: openai.OpenAI) -> None:
    import json

    reply = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "Give a JSON object with a name."}],
        max_tokens=60,
        temperature=0,
        response_format={"type": "json_object"},
    )
    content = reply.choices[0].message.content or ""
    if reply.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(content), dict)
    else:
        assert content.lstrip().startswith("{")


@pytest.mark.parametrize("max_tokens", [64, 200])
def test_the_strict_city_schema_from_issue_21_answers_valid_json_or_length(
    client: openai.OpenAI, max_tokens: int
) -> None:
    """This request answered ``stop`` with raw newlines inside a string (not JSON) when the
    grammar let control characters into strings. Now ``stop`` means it parses and validates;
    a budget cut is ``length``; anything else is a refusal, never content."""
    import json

    import jsonschema

    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
        "required": ["city", "country"],
    }
    reply = client.chat.completions.create(
        model="m",
        messages=[
            {"role": "user", "content": "Paris is in which country? Answer as city and country."}
        ],
        max_tokens=max_tokens,
        temperature=0,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "City", "strict": True, "schema": schema},
        },
    )
    choice = reply.choices[0]
    assert choice.finish_reason in ("stop", "length")
    if choice.finish_reason == "stop" and choice.message.refusal is None:
        jsonschema.validate(json.loads(choice.message.content or ""), schema)
    if choice.message.refusal is not None:
        assert choice.message.content is None


def test_errors_are_typed_for_the_client(client: openai.OpenAI, server: ServerHandle) -> None:
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong")
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "word " * 3000}], max_tokens=10
        )
    assert info.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as info:  # the server runs 4 slots
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], n=5)
    assert info.value.param == "n"


def test_n_greedy_choices_are_one_forked_answer_and_usage_counts_the_prompt_once(
    client: openai.OpenAI,
) -> None:
    # Equality with a separate single request is tested in the engine tests with both cold:
    # here the second request would reuse the first one's cached prompt, and llama.cpp's
    # logits are not bit-identical between a prompt batch and a one-token batch.
    messages = [{"role": "user", "content": "Describe a forest in one sentence."}]
    many = client.chat.completions.create(
        model="m", messages=messages, max_tokens=20, temperature=0, n=3
    )
    assert [c.index for c in many.choices] == [0, 1, 2]
    texts = {c.message.content for c in many.choices}
    assert len(texts) == 1 and texts.pop()
    assert many.usage is not None
    assert many.usage.completion_tokens % 3 == 0  # three identical choices, summed
    single = client.chat.completions.create(model="m", messages=messages, max_tokens=1).usage
    assert single is not None and many.usage.prompt_tokens == single.prompt_tokens

    stream = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "Describe a river in one sentence."}],
        max_tokens=20,
        temperature=0,
        n=2,
        stream=True,
        stream_options={"include_usage": True},
    )
    texts_by_index = ["", ""]
    usage = None
    for chunk in stream:
        for choice in chunk.choices:
            texts_by_index[choice.index] += choice.delta.content or ""
        usage = chunk.usage or usage
    assert texts_by_index[0] and texts_by_index[0] == texts_by_index[1]
    assert usage is not None and usage.completion_tokens % 2 == 0
