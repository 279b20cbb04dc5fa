"""/metrics carries the model-server protocol metrics; vLLM's names only when asked for."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from tests.unit.api.conftest import _wait_ready


def test_the_app_publishes_them_on_metrics(make_client: Callable[..., TestClient]) -> None:
    client = make_client(metrics_vllm_names=True)
    _wait_ready(client)
    text = client.get("/metrics").text
    assert "ggserve_requests_waiting 0.0" in text
    assert 'vllm:num_requests_waiting{model_name="' in text
    plain = make_client()
    _wait_ready(plain)
    assert "vllm:" not in plain.get("/metrics").text
