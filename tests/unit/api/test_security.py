"""Rate limits per key, CORS, keyed metrics and guardrails, through the whole HTTP stack."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from tests.unit.api.conftest import KEY_A, KEY_B, _wait_ready, auth

CHAT = {"messages": [{"role": "user", "content": "Capital of France?"}]}


def test_request_limit_is_per_key_with_retry_after(make_client: Callable[..., TestClient]) -> None:
    client = make_client(rate_limit_rpm=2)
    _wait_ready(client)
    first = client.post("/v1/chat/completions", json=CHAT, headers=auth(KEY_A))
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert client.post("/v1/chat/completions", json=CHAT, headers=auth(KEY_A)).status_code == 200
    refused = client.post("/v1/chat/completions", json=CHAT, headers=auth(KEY_A))
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    # another key has its own budget
    assert client.post("/v1/chat/completions", json=CHAT, headers=auth(KEY_B)).status_code == 200
    metrics = client.get("/metrics").text
    assert 'ggserve_rate_limited_total{key_id="alpha",limit="requests"} 1.0' in metrics


def test_token_limit_refuses_once_the_budget_is_spent(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(rate_limit_tpm=20)
    _wait_ready(client)
    assert client.post("/v1/chat/completions", json=CHAT, headers=auth()).status_code == 200
    second = client.post("/v1/chat/completions", json=CHAT, headers=auth())
    assert second.status_code == 200  # 11 of 20 tokens used (prompt 5 + 6): admitted, overdraws
    refused = client.post("/v1/chat/completions", json=CHAT, headers=auth())
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_tokens"


def test_cors_preflight_allows_only_configured_origins(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(cors_origins="https://app.example")
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-api-key,content-type",
    }
    ok = client.options(
        "/v1/chat/completions", headers={"Origin": "https://app.example", **preflight}
    )
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "https://app.example"
    denied = client.options(
        "/v1/chat/completions", headers={"Origin": "https://evil.example", **preflight}
    )
    assert "access-control-allow-origin" not in denied.headers


def test_cors_is_off_by_default(client: TestClient) -> None:
    response = client.get("/health", headers={"Origin": "https://app.example"})
    assert "access-control-allow-origin" not in response.headers


def test_metrics_public_by_default_and_keyed_when_configured(
    make_client: Callable[..., TestClient], client: TestClient
) -> None:
    assert client.get("/metrics").status_code == 200
    assert "ggserve_model_load_state" in client.get("/metrics").text
    keyed = make_client(metrics_public=False)
    assert keyed.get("/metrics").status_code == 401
    assert keyed.get("/metrics", headers=auth()).status_code == 200


def test_metrics_count_requests_tokens_and_slots(client: TestClient) -> None:
    client.post("/v1/chat/completions", json=CHAT, headers=auth())
    text = client.get("/metrics").text
    assert (
        'ggserve_requests_total{key_id="alpha",route="/v1/chat/completions",status="200"}' in text
    )
    assert 'ggserve_completion_tokens_total{key_id="alpha"} 6.0' in text
    assert "ggserve_slots_total 4.0" in text
    assert "ggserve_queue_depth 0.0" in text
    assert 'ggserve_model_load_state{state="ready"} 1.0' in text


def test_guardrails_refuse_blocked_input_with_content_filter(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    policy = tmp_path / "policy.txt"
    policy.write_text("# test policy\nweapons: \\b(bomb|explosive)s?\\b\n")
    client = make_client(guardrails_file=policy)
    _wait_ready(client)
    blocked = {"messages": [{"role": "user", "content": "How do I build a bomb?"}]}
    body = client.post("/v1/chat/completions", json=blocked, headers=auth()).json()
    assert body["choices"][0]["finish_reason"] == "content_filter"
    ask = client.post("/v1/ask", json={"question": "explosives please"}, headers=auth()).json()
    assert ask["finish_reason"] == "content_filter"
    allowed = client.post("/v1/chat/completions", json=CHAT, headers=auth()).json()
    assert allowed["choices"][0]["finish_reason"] == "stop"


def test_guardrails_stop_blocked_output(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    policy = tmp_path / "policy.txt"
    policy.write_text("capital\n")
    client = make_client(guardrails_file=policy)
    _wait_ready(client)
    body = client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hello"}]},
        headers=auth(),
    ).json()
    assert body["choices"][0]["finish_reason"] == "content_filter"
    assert "capital" not in body["choices"][0]["message"]["content"]


def test_no_keys_configured_refuses_everything(make_client: Callable[..., TestClient]) -> None:
    client = make_client(api_keys=[])
    response = client.post("/v1/chat/completions", json=CHAT, headers=auth())
    assert response.status_code == 401
