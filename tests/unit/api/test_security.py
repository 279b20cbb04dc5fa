"""Rate limits per key, CORS, keyed metrics and guardrails, through the whole HTTP stack."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.security.api_keys import hash_key, metrics_label
from server.settings import Settings
from tests.unit.api.conftest import KEY_A, KEY_B, _wait_ready, auth

ALPHA = metrics_label("alpha", hash_key(KEY_A))  # what /metrics shows for key "alpha"
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
    assert f'ggserve_rate_limited_total{{key_id="{ALPHA}",limit="requests"}} 1.0' in metrics


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


def test_metrics_public_on_loopback_and_keyed_when_configured(
    make_client: Callable[..., TestClient], client: TestClient
) -> None:
    assert client.get("/metrics").status_code == 200  # the default host is 127.0.0.1
    assert "ggserve_model_load_state" in client.get("/metrics").text
    keyed = make_client(metrics_public=False)
    assert keyed.get("/metrics").status_code == 401
    assert keyed.get("/metrics", headers=auth()).status_code == 200


def test_metrics_count_requests_tokens_and_slots(client: TestClient) -> None:
    client.post("/v1/chat/completions", json=CHAT, headers=auth())
    text = client.get("/metrics").text
    assert (
        f'ggserve_requests_total{{key_id="{ALPHA}",route="/v1/chat/completions",status="200"}}'
        in text
    )
    assert f'ggserve_completion_tokens_total{{key_id="{ALPHA}"}} 6.0' in text
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


def test_metrics_need_a_key_on_a_network_address_unless_made_public(
    make_client: Callable[..., TestClient],
) -> None:
    on_network = make_client(host="0.0.0.0")
    assert on_network.get("/metrics").status_code == 401
    assert on_network.get("/metrics", headers=auth("wrong")).status_code == 401
    assert on_network.get("/metrics", headers=auth()).status_code == 200
    public = make_client(host="0.0.0.0", metrics_public=True)
    assert public.get("/metrics").status_code == 200


def test_metrics_never_show_key_ids_in_clear(make_client: Callable[..., TestClient]) -> None:
    client = make_client(rate_limit_rpm=1)
    _wait_ready(client)
    for key in (KEY_A, KEY_A, KEY_B):  # alpha's second request is refused: rate_limited too
        client.post("/v1/chat/completions", json=CHAT, headers=auth(key))
    text = client.get("/metrics").text
    assert f'key_id="{ALPHA}"' in text  # still one series per key, for per-tenant dashboards
    assert 'key_id="alpha"' not in text and 'key_id="bravo"' not in text
    assert "Bravo" not in text  # nor key names
    bravo = metrics_label("bravo", hash_key(KEY_B))
    assert bravo != ALPHA and f'key_id="{bravo}"' in text
    # stable across restarts and replicas: the label depends only on the key's configuration
    assert metrics_label("alpha", hash_key(KEY_A)) == ALPHA


@pytest.mark.parametrize("value", ["maybe", "2", "[]"])
def test_a_bad_metrics_public_value_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("GGSERVE_METRICS_PUBLIC", value)
    with pytest.raises(ValueError, match="metrics_public"):
        Settings(_env_file=None)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "ggserve.internal", ""])
def test_auth_disabled_on_a_network_address_is_refused_unless_allowed(host: str) -> None:
    with pytest.raises(ValueError, match="GGSERVE_AUTH_DISABLED_ALLOW_NETWORK"):
        Settings(_env_file=None, auth_disabled=True, host=host)
    allowed = Settings(
        _env_file=None, auth_disabled=True, host=host, auth_disabled_allow_network=True
    )
    assert allowed.auth_disabled


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"])
def test_auth_disabled_on_loopback_needs_nothing_more(host: str) -> None:
    assert Settings(_env_file=None, auth_disabled=True, host=host).auth_disabled


def test_auth_disabled_on_a_network_address_logs_a_loud_warning(
    make_client: Callable[..., TestClient], capsys: pytest.CaptureFixture[str]
) -> None:
    make_client(auth_disabled=True, host="0.0.0.0", auth_disabled_allow_network=True)
    assert "AUTH IS DISABLED on 0.0.0.0" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["yes-please", "2", "[]"])
def test_a_bad_allow_network_value_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("GGSERVE_AUTH_DISABLED_ALLOW_NETWORK", value)
    with pytest.raises(ValueError, match="auth_disabled_allow_network"):
        Settings(_env_file=None)
