"""Requests that used to kill or 500 the real server: each is a 400 naming the field, and the
process keeps serving (a C++ exception through ctypes would have aborted it)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.integration.server_proc import ServerHandle

N_VOCAB = 49152  # SmolLM2


def _post_raw(server: ServerHandle, path: str, body: bytes) -> httpx.Response:
    headers = {**server.headers, "content-type": "application/json"}
    return httpx.post(server.url + path, content=body, headers=headers, timeout=60)


def _assert_400_naming(response: httpx.Response, param: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param, error
    assert error["request_id"] == response.headers["x-request-id"]


def _assert_still_serving(server: ServerHandle) -> None:
    assert server.proc.poll() is None, server.log()[-2000:]
    response = httpx.post(
        server.url + "/v1/completions",
        json={"prompt": "Hello", "max_tokens": 2, "temperature": 0},
        headers=server.headers,
        timeout=60,
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("prompt", [[-1], [99999999], [N_VOCAB], [1, 2, 2**40]])
@pytest.mark.parametrize("echo", [False, True])
def test_token_ids_outside_the_vocabulary_are_400_and_the_server_lives(
    server: ServerHandle, prompt: list[int], echo: bool
) -> None:
    response = httpx.post(
        server.url + "/v1/completions",
        json={"prompt": prompt, "max_tokens": 2, "echo": echo},
        headers=server.headers,
        timeout=60,
    )
    bad = next(i for i, token in enumerate(prompt) if not 0 <= token < N_VOCAB)
    _assert_400_naming(response, f"prompt[{bad}]")
    _assert_still_serving(server)


def test_valid_token_ids_still_complete_with_echo(server: ServerHandle) -> None:
    response = httpx.post(
        server.url + "/v1/completions",
        json={"prompt": [19556, 28, 957], "max_tokens": 2, "echo": True, "temperature": 0},
        headers=server.headers,
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["prompt_tokens"] >= 3


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (
            "/v1/chat/completions",
            '{"messages":[{"role":"user","content":"\\ud800"}]}',
            "messages[0].content",
        ),
        (
            "/v1/chat/completions",
            '{"messages":[{"role":"user","content":"hi"}],"stop":["\\udfff"]}',
            "stop[0]",
        ),
        ("/v1/completions", '{"prompt":"a\\udc00b","max_tokens":2}', "prompt"),
        ("/v1/completions", '{"prompt":["ok","\\ud83d"],"max_tokens":2}', "prompt[1]"),
        ("/v1/embeddings", '{"input":"\\ud800"}', "input"),
        ("/v1/ask", '{"question":"why \\ud800?"}', "question"),
    ],
)
def test_lone_surrogates_are_400_naming_the_field(
    server: ServerHandle, path: str, body: str, param: str
) -> None:
    _assert_400_naming(_post_raw(server, path, body.encode()), param)
    _assert_still_serving(server)


def test_invalid_utf8_bytes_are_a_400_envelope(server: ServerHandle) -> None:
    body = b'{"messages":[{"role":"user","content":"\xff\xfe bad"}]}'
    response = _post_raw(server, "/v1/chat/completions", body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"
    _assert_still_serving(server)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"logit_bias": {"99999999": 5}}, "logit_bias"),
        ({"logit_bias": {"-1": 5}}, "logit_bias"),
        ({"logit_bias": {"5": float("inf")}}, "logit_bias"),
        ({"logit_bias": {"5": 1e30}}, "logit_bias"),
        ({"top_k": 2**40}, "top_k"),
        ({"repeat_penalty": float("inf")}, "repeat_penalty"),
    ],
)
def test_sampling_values_that_would_reach_c_out_of_range_are_400(
    server: ServerHandle, extra: dict[str, object], param: str
) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **extra}
    # json.dumps writes inf as Infinity, which Python's (and so the server's) JSON parser reads
    response = _post_raw(server, "/v1/chat/completions", json.dumps(body).encode())
    _assert_400_naming(response, param)
    _assert_still_serving(server)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "pattern": "[^\\x00-\\uffff]"},  # a character nothing can produce
        {"enum": []},
        {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}},
        {"type": "array", "items": {"type": "integer"}, "minItems": 100000000},
    ],
)
def test_json_schemas_that_the_grammar_cannot_satisfy_never_kill_the_server(
    server: ServerHandle, schema: dict[str, object]
) -> None:
    response = httpx.post(
        server.url + "/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": "Answer in JSON."}],
            "max_tokens": 4,
            "response_format": {"type": "json_schema", "json_schema": {"schema": schema}},
        },
        headers=server.headers,
        timeout=60,
    )
    assert response.status_code in (200, 400), response.text
    _assert_still_serving(server)
