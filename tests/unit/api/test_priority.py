"""Request priority (vLLM's ``priority``: lower is admitted first) and the tenant the engine's
turn-taking uses (the API key), over the whole HTTP stack."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.fakes import FakeEngine
from tests.unit.api.conftest import KEY_B, _wait_ready, auth

CHAT: dict[str, Any] = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


def test_priority_and_key_reach_the_engine(client: TestClient, fake_engine: FakeEngine) -> None:
    assert client.post(
        "/v1/chat/completions", json={**CHAT, "priority": 7}, headers=auth()
    ).is_success
    request = fake_engine.requests[-1]
    assert (request.priority, request.tenant) == (7, "alpha")
    client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2}, headers=auth(KEY_B))
    request = fake_engine.requests[-1]
    assert (request.priority, request.tenant) == (0, "bravo")


def test_a_request_cannot_jump_ahead_of_the_servers_floor(client: TestClient) -> None:
    response = client.post("/v1/chat/completions", json={**CHAT, "priority": -1}, headers=auth())
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "priority"


def test_an_operator_may_allow_urgent_requests(
    make_client: Callable[..., TestClient], fake_engine: FakeEngine
) -> None:
    client = make_client(min_priority=-10)
    _wait_ready(client)
    assert client.post(
        "/v1/chat/completions", json={**CHAT, "priority": -10}, headers=auth()
    ).is_success
    assert fake_engine.requests[-1].priority == -10


@pytest.mark.parametrize("bad", ["high", 2**40, 1.5, "", {"p": 1}, [1]])
def test_a_priority_that_is_not_a_32_bit_integer_is_a_400(client: TestClient, bad: Any) -> None:
    response = client.post("/v1/chat/completions", json={**CHAT, "priority": bad}, headers=auth())
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "priority"


def test_null_or_absent_priority_keeps_the_default_and_an_explicit_zero_is_zero(
    client: TestClient, fake_engine: Any
) -> None:
    _wait_ready(client)
    for body in ({**CHAT, "priority": None}, CHAT, {**CHAT, "priority": 0}):
        assert client.post("/v1/chat/completions", json=body, headers=auth()).is_success
        assert fake_engine.requests[-1].priority == 0
