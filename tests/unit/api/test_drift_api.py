"""Drift over HTTP: requests become observations, GET /admin/drift, the gauges on /metrics."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.drift.monitor import DriftMonitor
from server.runtime.drift import StoredRatings
from tests.unit.api.conftest import KEY_A, KEY_B, _wait_ready, auth

DRIFT = {
    "admin_key_ids": ["alpha"],
    "drift_reference_size": 10,
    "drift_window_size": 10,
    "drift_min_samples": 10,
    "drift_permutations": 140,
    "drift_interval_s": 3600.0,  # the test triggers evaluations itself
    "embedder_path": Path("/nonexistent/embedder"),  # the embedding test is skipped, and said
}


def _chat(text: str) -> dict[str, Any]:
    return {
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]
    }


@pytest.fixture
def drift_client(make_client: Callable[..., TestClient]) -> TestClient:
    client = make_client(**DRIFT)
    _wait_ready(client)
    return client


def _monitor(client: TestClient) -> DriftMonitor:
    monitor = client.app.state.services.drift  # type: ignore[attr-defined]
    assert isinstance(monitor, DriftMonitor)
    return monitor


def test_chat_and_ask_requests_become_observations(
    drift_client: TestClient, make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    for i in range(3):
        assert (
            drift_client.post(
                "/v1/chat/completions", json=_chat(f"q{i}"), headers=auth()
            ).status_code
            == 200
        )
    with drift_client.stream(
        "POST", "/v1/chat/completions", json={**_chat("streamed"), "stream": True}, headers=auth()
    ) as response:
        assert response.status_code == 200
        response.read()
    assert (
        drift_client.post("/v1/ask", json={"question": "what is up?"}, headers=auth()).status_code
        == 200
    )
    monitor = _monitor(drift_client)
    assert monitor.observed == 5
    reference = monitor._observations.reference
    assert [o.observation.query for o in reference] == ["q0", "q1", "q2", "streamed", "what is up?"]
    chat, ask = reference[0].observation, reference[4].observation
    assert (chat.route, chat.finish_reason, chat.answer_tokens) == ("chat", "stop", 6)
    assert (ask.route, ask.top_score, ask.no_context) == ("ask", None, None)  # no index


def test_admin_drift_reports_after_enough_requests(drift_client: TestClient) -> None:
    first = drift_client.get("/admin/drift", headers=auth()).json()
    assert first["report"] is None and first["observed"] == 0
    for i in range(20):
        drift_client.post("/v1/chat/completions", json=_chat(f"question {i}"), headers=auth())
    body = drift_client.get("/admin/drift", params={"evaluate": "true"}, headers=auth()).json()
    assert body["observed"] == 20 and body["evaluations"] == 1 and body["embeddings"] is False
    signals = {s["name"]: s for s in body["report"]["signals"]}
    assert "query_embedding" not in signals  # the embedder could not load
    assert signals["answer_tokens"]["drifted"] is False  # same fake reply every time
    assert signals["top1_score"]["drifted"] is None  # chat has no retrieval
    metrics = drift_client.get("/metrics").text
    assert 'ggserve_drift_signal_drifted{signal="answer_tokens"} 0.0' in metrics
    assert 'ggserve_drift_window_size{window="reference"} 10.0' in metrics


def test_admin_drift_needs_an_admin_key(drift_client: TestClient) -> None:
    assert drift_client.get("/admin/drift").status_code == 401
    denied = drift_client.get("/admin/drift", headers=auth(KEY_B))
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "not_admin"
    assert drift_client.get("/admin/drift", headers=auth(KEY_A)).status_code == 200


@pytest.mark.parametrize("value", ["maybe", "", "1" * 5000, "%ff%fe"])
def test_admin_drift_refuses_a_bad_evaluate_flag(drift_client: TestClient, value: str) -> None:
    response = drift_client.get(f"/admin/drift?evaluate={value}", headers=auth())
    assert 400 <= response.status_code < 500
    assert "evaluate" in response.json()["error"]["message"]


def test_drift_off_is_a_clear_404(make_client: Callable[..., TestClient]) -> None:
    client = make_client(admin_key_ids=["alpha"], drift_enabled=False)
    _wait_ready(client)
    response = client.get("/admin/drift", headers=auth())
    assert response.status_code == 404 and response.json()["error"]["code"] == "drift_disabled"
    assert client.post("/v1/chat/completions", json=_chat("hi"), headers=auth()).status_code == 200
    assert "ggserve_drift_" not in client.get("/metrics").text


def test_a_failing_observation_never_fails_the_request(
    drift_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_observation: object) -> None:
        raise RuntimeError("bug in drift")

    monkeypatch.setattr(_monitor(drift_client), "observe", broken)
    response = drift_client.post(
        "/v1/chat/completions", json=_chat("still answered"), headers=auth()
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"drift_min_samples": 50}, "min_samples"),
        ({"drift_permutations": 20}, "permutations"),
        ({"drift_reference_file": Path("/nonexistent/ref.jsonl")}, "not a file"),
    ],
)
def test_bad_drift_settings_fail_at_start(
    make_client: Callable[..., TestClient], overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make_client(**{**DRIFT, **overrides})


def test_a_reference_file_is_the_reference(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    reference = tmp_path / "reference.jsonl"
    reference.write_text("".join(f'{{"question": "ref {i}"}}\n' for i in range(12)))
    client = make_client(**DRIFT, drift_reference_file=reference)
    _wait_ready(client)
    client.post("/v1/chat/completions", json=_chat("live"), headers=auth())
    monitor = _monitor(client)
    assert len(monitor._observations.reference) == 10
    assert [e.observation.query for e in monitor._observations.current] == ["live"]
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"question": "ok"}\n{"nope": 1}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        make_client(**DRIFT, drift_reference_file=bad)


def test_ratings_from_the_feedback_store_feed_the_feedback_signal(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    from tests.unit.api.test_feedback import captured

    client = make_client(**{**DRIFT, "drift_min_feedback": 2})
    _wait_ready(client)
    monitor = _monitor(client)
    ids = []
    for i in range(3):
        body = client.post("/v1/chat/completions", json=_chat(f"q{i}"), headers=auth()).json()
        captured(tmp_path / "feedback.db", body["id"])
        ids.append(body["id"])
    for response_id, rating in zip(ids, (1, -1, -1), strict=True):
        rated = client.post(
            "/v1/feedback", json={"response_id": response_id, "rating": rating}, headers=auth()
        )
        assert rated.status_code == 201
    monitor.evaluate()
    signal = monitor.evaluate().signal("negative_feedback")
    assert (signal.reference_n, signal.current_n) == (3, 0)  # each rating read once
    assert signal.drifted is None  # nothing in the current window yet
    source = StoredRatings(client.app.state.services.feedback)  # type: ignore[attr-defined]
    assert [r.negative for r in source.ratings_since(0.0, 10)] == [False, True, True]
    assert source.ratings_since(0.0, 1)[0].negative is False  # oldest first
