"""Per-key budgets count the whole cost: prompt tokens, embedding inputs, cut-off generations."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.runtime.services import ModelMeta, Services
from server.settings import Settings
from tests.unit.api.conftest import _wait_ready, auth
from tests.unit.api.test_disconnects import ROUTES, HoldingEngine, exchange
from tests.unit.api.test_embeddings import LockedEmbedder

LONG_PROMPT = " ".join(["word"] * 40)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": LONG_PROMPT}]}),
        ("/v1/completions", {"prompt": LONG_PROMPT}),
        ("/v1/completions", {"prompt": LONG_PROMPT, "echo": True, "logprobs": 1}),
    ],
)
def test_token_budget_charges_prompt_tokens_not_only_generated_ones(
    make_client: Callable[..., TestClient], path: str, body: dict[str, Any]
) -> None:
    client = make_client(rate_limit_tpm=30)
    _wait_ready(client)
    # One generated token, 40+ prompt tokens: a budget of 30 is spent by this one request.
    first = client.post(path, json={**body, "max_tokens": 1}, headers=auth())
    assert first.status_code == 200, first.text
    assert first.json()["usage"]["completion_tokens"] == 1
    refused = client.post(path, json={**body, "max_tokens": 1}, headers=auth())
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_tokens"


def test_embedding_inputs_are_charged_to_the_token_budget(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(rate_limit_tpm=30)
    _wait_ready(client)
    client.app.state.services.embedder._embedder = LockedEmbedder()  # type: ignore[attr-defined]
    body = {"input": [LONG_PROMPT]}
    assert client.post("/v1/embeddings", json=body, headers=auth()).status_code == 200
    refused = client.post("/v1/embeddings", json=body, headers=auth())
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_tokens"


@pytest.mark.parametrize("stream", [False, True])
async def test_a_generation_cut_off_by_its_client_is_charged_for_what_it_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, stream: bool
) -> None:
    engine = HoldingEngine(tokens_before_hold=3)
    monkeypatch.setattr(
        "server.runtime.loading.create_engine",
        lambda settings: (engine, ModelMeta(architecture="fake")),
    )
    settings = Settings(
        _env_file=None,
        auth_disabled=True,
        warmup=False,
        log_format="text",
        feedback_db=tmp_path / "feedback.db",
        rate_limit_tpm=1000,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        for _ in range(500):
            if services.readiness.snapshot().state == "ready":
                break
            await asyncio.sleep(0.01)
        path, body = ROUTES["completions"]
        result = await exchange(app, path, {**body, "stream": stream}, engine.holding)
        assert result.raised is None
        assert engine.cancelled  # the client left mid-generation
        prompt = len(engine.requests[0].prompt_tokens)
        assert services.limiter is not None
        for _ in range(100):  # the charge runs on its own task
            decision = await services.limiter.admit("anonymous")
            assert decision is not None
            if decision.remaining < 1000:
                break
            await asyncio.sleep(0.01)
        assert decision.remaining == 1000 - prompt - 3
