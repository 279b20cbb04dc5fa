"""Prefix reuse stays within one API key: key B cannot probe what key A's prompts begin with.

Uses the session's two-key server (``capturing``): a cached-token count above zero for key B
on key A's prompt would tell B that someone sent it.
"""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.integration.conftest import OTHER_KEY
from tests.integration.server_proc import TEST_KEY, ServerHandle

pytestmark = pytest.mark.slow


def secret_messages() -> list[dict[str, str]]:
    marker = uuid.uuid4().hex
    system = (
        f"Internal memo {marker}: the acquisition of Northwind closes on the 14th; "
        "do not disclose the price of 41 million, the names of the negotiators or the "
        "date of the announcement to anyone outside the deal team. " * 3
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": "Summarize."}]


def chat(server: ServerHandle, key: str, messages: object, **extra: object) -> httpx.Response:
    return httpx.post(
        server.url + "/v1/chat/completions",
        json={"messages": messages, "max_tokens": 2, "temperature": 0, **extra},
        headers={"X-API-KEY": key},
        timeout=120,
    )


def cached(response: httpx.Response) -> int:
    assert response.status_code == 200, response.text
    details = response.json()["usage"]["prompt_tokens_details"]
    return int(details["cached_tokens"])


def test_another_keys_prompt_prefix_is_never_reused(capturing: ServerHandle) -> None:
    messages = secret_messages()
    first = chat(capturing, TEST_KEY, messages)
    assert first.status_code == 200
    assert first.json()["usage"]["prompt_tokens"] > 100
    # The cache works: the same key gets its own prefix back ...
    assert cached(chat(capturing, TEST_KEY, messages)) > 100
    # ... another key probing the same text gets none of it, and so learns nothing: at most the
    # chat template's opening (`<|im_start|>system\n`), which that key's own earlier requests
    # in this session put in its cache.
    assert cached(chat(capturing, OTHER_KEY, messages)) <= 3
    # A client can narrow its own scope further, as with vLLM's cache_salt.
    assert cached(chat(capturing, TEST_KEY, messages, cache_salt="session-2")) == 0
    assert cached(chat(capturing, TEST_KEY, messages, cache_salt="session-2")) > 100


@pytest.mark.parametrize("salt", [123, "", "x" * 257, ["a"], {"a": 1}])
def test_a_bad_cache_salt_is_a_400_naming_it(capturing: ServerHandle, salt: object) -> None:
    response = chat(capturing, TEST_KEY, [{"role": "user", "content": "hi"}], cache_salt=salt)
    assert response.status_code == 400, response.text
    assert "cache_salt" in response.text
