"""The Inference Gateway's headers over the whole HTTP stack: the objective sets the queue
priority, the fairness id sets whose turn it is (from a trusted proxy only), and a key may
carry a default priority."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.security.api_keys import hash_key
from tests.fakes import FakeEngine
from tests.unit.api.conftest import KEY_A, KEY_B, _wait_ready, auth

CHAT: dict[str, Any] = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
OBJECTIVE = "x-gateway-inference-objective"
FAIRNESS = "x-gateway-inference-fairness-id"
PROXY = ("10.0.0.5", 40000)
KEY_BATCH = "ggs-test-key-batch"


@pytest.fixture
def gateway_client(make_client: Callable[..., TestClient]) -> TestClient:
    client = make_client(
        peer=PROXY,
        trusted_proxies="10.0.0.0/8",
        inference_objectives="critical=-10,standard=0,sheddable=10",
        min_priority=-10,
        api_keys=[
            f"alpha:{hash_key(KEY_A)}",
            f"bravo:Bravo:{hash_key(KEY_B)}",
            f"batch:Nightly:{hash_key(KEY_BATCH)}:priority=20",
        ],
    )
    _wait_ready(client)
    return client


def _chat(
    client: TestClient, key: str = KEY_A, body: dict[str, Any] | None = None, **headers: str
) -> Any:  # the TestClient's response
    return client.post("/v1/chat/completions", json=body or CHAT, headers={**auth(key), **headers})


def test_a_named_objective_becomes_the_requests_priority(
    gateway_client: TestClient, fake_engine: FakeEngine
) -> None:
    assert _chat(gateway_client, **{OBJECTIVE: "sheddable"}).is_success
    assert fake_engine.requests[-1].priority == 10
    assert _chat(gateway_client, **{OBJECTIVE: "-7"}).is_success
    assert fake_engine.requests[-1].priority == -7


def test_the_objective_reaches_routes_without_a_priority_field(
    gateway_client: TestClient, fake_engine: FakeEngine
) -> None:
    response = gateway_client.post(
        "/v1/responses",
        json={"input": "Hi", "max_output_tokens": 2},
        headers={**auth(), OBJECTIVE: "critical"},
    )
    assert response.is_success, response.text
    assert fake_engine.requests[-1].priority == -10


def test_the_body_priority_wins_over_the_objective(
    gateway_client: TestClient, fake_engine: FakeEngine
) -> None:
    assert _chat(gateway_client, body={**CHAT, "priority": 3}, **{OBJECTIVE: "sheddable"})
    assert fake_engine.requests[-1].priority == 3


@pytest.mark.parametrize("hostile", ["urgent", "1e9", "99999999999999999999", "0x1", " "])
def test_a_bad_objective_is_a_400_naming_the_header(
    gateway_client: TestClient, fake_engine: FakeEngine, hostile: str
) -> None:
    before = len(fake_engine.requests)
    response = _chat(gateway_client, **{OBJECTIVE: hostile})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == OBJECTIVE
    assert len(fake_engine.requests) == before


def test_an_objective_cannot_jump_the_servers_floor(client: TestClient) -> None:
    response = _chat(client, **{OBJECTIVE: "-1"})  # default floor 0
    assert response.status_code == 400
    assert response.json()["error"]["param"] == OBJECTIVE


def test_a_key_default_priority_applies_when_the_request_sets_none(
    gateway_client: TestClient, fake_engine: FakeEngine
) -> None:
    assert _chat(gateway_client, KEY_BATCH).is_success
    assert fake_engine.requests[-1].priority == 20
    assert _chat(gateway_client, KEY_BATCH, **{OBJECTIVE: "standard"}).is_success
    assert fake_engine.requests[-1].priority == 0  # the gateway's objective is more specific
    assert _chat(gateway_client, KEY_A).is_success
    assert fake_engine.requests[-1].priority == 0


def test_the_fairness_id_from_a_trusted_proxy_is_the_tenant(
    gateway_client: TestClient, fake_engine: FakeEngine
) -> None:
    assert _chat(gateway_client, **{FAIRNESS: "team-a"}).is_success
    assert fake_engine.requests[-1].tenant == "fairness:team-a"
    assert _chat(gateway_client).is_success
    assert fake_engine.requests[-1].tenant == "alpha"


def test_a_client_cannot_pick_its_own_fairness_bucket(
    make_client: Callable[..., TestClient], fake_engine: FakeEngine
) -> None:
    client = make_client(peer=("203.0.113.9", 5000), trusted_proxies="10.0.0.0/8")
    _wait_ready(client)
    assert _chat(client, **{FAIRNESS: "someone-else"}).is_success
    assert fake_engine.requests[-1].tenant == "alpha"


@pytest.mark.parametrize("hostile", [b"a" * 200, b"a b", "ünïcode".encode(), b"x;y", b"a\x7fb"])
def test_a_malformed_fairness_id_from_the_proxy_is_a_400(
    gateway_client: TestClient, hostile: bytes
) -> None:
    response = gateway_client.post(
        "/v1/chat/completions", json=CHAT, headers={"x-api-key": KEY_A, FAIRNESS: hostile}
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == FAIRNESS


def test_a_key_default_below_the_floor_is_a_400_that_says_where_it_came_from(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(api_keys=[f"vip:{hash_key(KEY_A)}:priority=-5"])
    _wait_ready(client)
    response = _chat(client)
    assert response.status_code == 400
    assert "API key's default" in response.json()["error"]["message"]
