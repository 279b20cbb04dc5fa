"""A traced request: one root span with the request id, child spans per stage."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from server.observability.tracing import Tracing, build_tracing
from tests.unit.api.conftest import _wait_ready, auth

CHAT = {"messages": [{"role": "user", "content": "Capital of France?"}]}


@pytest.fixture
def traced(
    make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> tuple[TestClient, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()

    def in_memory(endpoint: str | None) -> Tracing:
        return build_tracing(None, processor=SimpleSpanProcessor(exporter))

    monkeypatch.setattr("server.runtime.services.build_tracing", in_memory)
    client = make_client(rate_limit_rpm=100)
    _wait_ready(client)
    exporter.clear()
    return client, exporter


def test_a_chat_request_is_one_trace_with_its_stages(
    traced: tuple[TestClient, InMemorySpanExporter],
) -> None:
    client, exporter = traced
    response = client.post(
        "/v1/chat/completions", json=CHAT, headers={**auth(), "X-Request-ID": "trace-me-1"}
    )
    assert response.status_code == 200
    spans = {s.name: s for s in exporter.get_finished_spans()}
    root = spans["POST /v1/chat/completions"]
    assert root.attributes is not None
    assert root.attributes["ggserve.request_id"] == response.headers["x-request-id"]
    assert root.attributes["ggserve.client_request_id"] == "trace-me-1"
    assert root.attributes["http.route"] == "/v1/chat/completions"
    assert root.attributes["http.status_code"] == 200
    for stage in ("auth", "rate_limit"):
        span = spans[stage]
        assert span.parent is not None and span.parent.span_id == root.context.span_id, stage
    # The model call is one gen_ai span under the request; the engine's stages sit inside it.
    model_span = next(s for s in spans.values() if s.name.startswith("chat "))
    assert model_span.parent is not None and model_span.parent.span_id == root.context.span_id
    assert root.start_time <= model_span.start_time <= model_span.end_time <= root.end_time
    for stage in ("queue_wait", "prefill", "decode"):
        span = spans[stage]
        assert span.parent is not None and span.parent.span_id == model_span.context.span_id
        assert model_span.start_time <= span.start_time <= span.end_time <= model_span.end_time
    decode = spans["decode"]
    assert (decode.end_time - decode.start_time) / 1e6 == pytest.approx(4.0)  # FakeEngine's
    assert decode.attributes is not None and decode.attributes["ggserve.completion_tokens"] == 6


def test_a_chat_span_carries_the_gen_ai_attributes_of_its_response(
    traced: tuple[TestClient, InMemorySpanExporter],
) -> None:
    client, exporter = traced
    body = {**CHAT, "max_tokens": 6, "temperature": 0.5, "seed": 7}
    response = client.post("/v1/chat/completions", json=body, headers=auth())
    assert response.status_code == 200
    answer = response.json()
    (span,) = [s for s in exporter.get_finished_spans() if s.name.startswith("chat ")]
    attributes = dict(span.attributes or {})
    model = attributes["gen_ai.request.model"]
    assert span.name == f"chat {model}"
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "ggserve"
    assert attributes["gen_ai.response.model"] == model
    assert attributes["gen_ai.response.id"] == answer["id"]
    assert attributes["gen_ai.response.finish_reasons"] == (answer["choices"][0]["finish_reason"],)
    assert attributes["gen_ai.usage.input_tokens"] == answer["usage"]["prompt_tokens"]
    assert attributes["gen_ai.usage.output_tokens"] == answer["usage"]["completion_tokens"]
    assert attributes["gen_ai.request.max_tokens"] == 6
    assert attributes["gen_ai.request.temperature"] == 0.5
    assert attributes["gen_ai.request.seed"] == 7
    assert attributes["ggserve.model.version"] == "unregistered"


def test_a_text_completion_is_named_as_one_and_lands_in_the_gen_ai_histograms(
    traced: tuple[TestClient, InMemorySpanExporter],
) -> None:
    client, exporter = traced
    response = client.post(
        "/v1/completions", json={"prompt": "Once upon", "max_tokens": 4}, headers=auth()
    )
    assert response.status_code == 200
    names = [s.name for s in exporter.get_finished_spans()]
    assert [n for n in names if n.startswith("text_completion ")], names
    metrics = client.get("/metrics").text
    for name in (
        "gen_ai_server_time_to_first_token_seconds",
        "gen_ai_server_time_per_output_token_seconds",
        "gen_ai_server_request_duration_seconds",
    ):
        counts = [
            line
            for line in metrics.splitlines()
            if line.startswith(name + "_count{")
            and 'gen_ai_operation_name="text_completion"' in line
        ]
        assert len(counts) == 1 and float(counts[0].split()[-1]) == 1.0, name


def test_a_refused_key_is_traced_and_probes_are_not(
    traced: tuple[TestClient, InMemorySpanExporter],
) -> None:
    client, exporter = traced
    assert client.post("/v1/chat/completions", json=CHAT).status_code == 401
    assert client.get("/health").status_code == 200
    names = [s.name for s in exporter.get_finished_spans()]
    assert names.count("POST /v1/chat/completions") == 1 and "auth" in names
    assert not [n for n in names if "health" in n]
    root = next(s for s in exporter.get_finished_spans() if s.name.startswith("POST"))
    assert root.attributes is not None and root.attributes["http.status_code"] == 401


def test_tracing_is_off_by_default(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    assert client.app.state.services.tracing.enabled is False  # type: ignore[attr-defined]
