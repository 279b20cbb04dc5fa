"""Every generation route runs through one pipeline: each answered request is captured,
counted (usage in metrics and the token budget) and fed to drift, the same way.

Before the pipeline, chat and /v1/ask fed drift and /v1/completions and /v1/responses did not.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.drift.monitor import DriftMonitor
from server.drift.observation import Observation
from server.security.api_keys import hash_key, metrics_label
from tests.unit.api.conftest import KEY_A, _wait_ready, auth
from tests.unit.api.test_feedback import captured

ROUTES: list[tuple[str, str, dict[str, Any], str]] = [
    # (drift's name, path, body, the text drift should see as the query)
    (
        "chat",
        "/v1/chat/completions",
        {
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "chat question"},
            ],
            "max_tokens": 4,
        },
        "chat question",
    ),
    ("completions", "/v1/completions", {"prompt": "once upon a time", "max_tokens": 4}, ""),
    ("responses", "/v1/responses", {"input": "responses question", "max_output_tokens": 4}, ""),
    ("ask", "/v1/ask", {"question": "ask question", "max_tokens": 4}, "ask question"),
]


def _tokens(client: TestClient, kind: str) -> float:
    metrics = client.get("/metrics").text
    label = metrics_label("alpha", hash_key(KEY_A))
    match = re.search(rf'^ggserve_{kind}_tokens_total\{{key_id="{label}"\}} (\S+)$', metrics, re.M)
    return float(match.group(1)) if match else 0.0


@pytest.fixture
def observed(make_client: Callable[..., TestClient]) -> tuple[TestClient, list[Observation]]:
    client = make_client(
        capture="full",
        drift_reference_size=10,
        drift_window_size=10,
        drift_min_samples=10,
        drift_interval_s=3600.0,
        embedder_path=Path("/nonexistent/embedder"),
    )
    _wait_ready(client)
    monitor = client.app.state.services.drift  # type: ignore[attr-defined]
    assert isinstance(monitor, DriftMonitor)
    seen: list[Observation] = []
    record = monitor.observe

    def spy(observation: Observation, vector: Any = None) -> None:
        seen.append(observation)
        record(observation, vector)

    monitor.observe = spy  # type: ignore[method-assign]
    return client, seen


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize(("kind", "path", "body", "query"), ROUTES, ids=[r[0] for r in ROUTES])
def test_every_generation_route_is_captured_counted_and_fed_to_drift(
    observed: tuple[TestClient, list[Observation]],
    tmp_path: Path,
    kind: str,
    path: str,
    body: dict[str, Any],
    query: str,
    stream: bool,
) -> None:
    client, seen = observed
    prompt_before, completion_before = _tokens(client, "prompt"), _tokens(client, "completion")
    response = client.post(path, json={**body, "stream": stream}, headers=auth())
    assert response.status_code == 200, response.text
    response_id = _response_id(response.text, stream)

    record = captured(tmp_path / "feedback.db", response_id)
    assert record.key_id == "alpha" and record.answer
    assert record.completion_tokens > 0 and record.prompt_tokens > 0

    assert _tokens(client, "prompt") - prompt_before == record.prompt_tokens
    assert _tokens(client, "completion") - completion_before == record.completion_tokens

    assert [o.route for o in seen] == [kind]
    assert seen[0].answer_tokens == record.completion_tokens
    expected_query = query or str(body.get("prompt") or body.get("input"))
    assert seen[0].query == expected_query


def _response_id(text: str, stream: bool) -> str:
    """The id the client sees (and would send back to /v1/feedback), whole or streamed."""
    if not stream:
        import json

        return str(json.loads(text)["id"])
    found = re.search(r'"id": ?"((?:chatcmpl-|cmpl-|resp_)?[^"]+)"', text)
    assert found, text[:500]
    return found.group(1)
