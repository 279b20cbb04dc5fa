"""Tracing: spans nest under the request, stages are laid back to back, off means no-op."""

from __future__ import annotations

import sys

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from server.observability.tracing import Tracing, build_tracing, request_span


@pytest.fixture
def exported() -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    return build_tracing(None, processor=SimpleSpanProcessor(exporter)), exporter


def test_stage_spans_are_children_of_the_request_span(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    with request_span(tracing, "POST /v1/ask", "req-1", {"http.route": "/v1/ask"}):
        with tracing.span("auth"):
            pass
        tracing.stages([("queue_wait", 5.0), ("prefill", 20.0), ("decode", 100.0)])
    spans = {s.name: s for s in exporter.get_finished_spans()}
    root = spans["POST /v1/ask"]
    assert root.attributes is not None and root.attributes["ggserve.request_id"] == "req-1"
    for name in ("auth", "queue_wait", "prefill", "decode"):
        assert spans[name].parent is not None
        assert spans[name].parent.span_id == root.context.span_id
        assert spans[name].context.trace_id == root.context.trace_id


def test_stages_are_back_to_back_with_their_durations(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    tracing.stages([("queue_wait", 5.0), ("prefill", 20.0), ("decode", 100.0)], end_ns=10**12)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert spans["decode"].end_time == 10**12
    assert spans["decode"].start_time == spans["prefill"].end_time
    assert spans["prefill"].start_time == spans["queue_wait"].end_time
    durations = {n: (s.end_time - s.start_time) / 1e6 for n, s in spans.items()}
    assert durations == {"queue_wait": 5.0, "prefill": 20.0, "decode": 100.0}


def test_negative_durations_are_clamped(exported: tuple[Tracing, InMemorySpanExporter]) -> None:
    tracing, exporter = exported
    tracing.stages([("prefill", -3.0)], end_ns=10**12)
    (span,) = exporter.get_finished_spans()
    assert span.start_time == span.end_time


def test_off_records_nothing_and_imports_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m.startswith("opentelemetry")]:
        monkeypatch.delitem(sys.modules, name)
    tracing = build_tracing(None)
    assert not tracing.enabled
    with request_span(tracing, "GET /x", "r"), tracing.span("auth"):
        tracing.stages([("decode", 1.0)])
    tracing.shutdown()
    assert not [m for m in sys.modules if m.startswith("opentelemetry")]


def test_the_otlp_endpoint_gets_the_traces_path() -> None:
    tracing = build_tracing("http://collector:4318")
    try:
        processor = tracing._provider._active_span_processor._span_processors[0]  # type: ignore[union-attr]
        assert processor.span_exporter._endpoint == "http://collector:4318/v1/traces"
    finally:
        tracing.shutdown()


def test_a_generation_span_holds_the_engine_stages_inside_its_own_time(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    with request_span(tracing, "POST /v1/chat/completions", "req-2"):
        tracing.generation(
            "chat smollm2",
            {"gen_ai.operation.name": "chat", "gen_ai.response.finish_reasons": ("stop",)},
            [("queue_wait", 5.0), ("prefill", 20.0), ("decode", 100.0)],
            {"ggserve.completion_tokens": 3},
            start_ns=10**12 - 200_000_000,
            end_ns=10**12,
        )
    spans = {s.name: s for s in exporter.get_finished_spans()}
    call, root = spans["chat smollm2"], spans["POST /v1/chat/completions"]
    assert call.parent is not None and call.parent.span_id == root.context.span_id
    assert (call.start_time, call.end_time) == (10**12 - 200_000_000, 10**12)
    assert call.attributes is not None
    assert call.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    for name in ("queue_wait", "prefill", "decode"):
        assert spans[name].parent is not None
        assert spans[name].parent.span_id == call.context.span_id
    assert spans["decode"].end_time == call.end_time
    assert spans["decode"].attributes == {"ggserve.completion_tokens": 3}


def test_a_generation_span_never_starts_after_it_ends(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    tracing.generation("chat m", {}, [], start_ns=10**12 + 5, end_ns=10**12)
    (span,) = exporter.get_finished_spans()
    assert span.start_time == span.end_time == 10**12


def test_a_generation_span_stretches_to_cover_stages_longer_than_its_own_clock(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    tracing.generation("chat m", {}, [("decode", 50.0)], start_ns=10**12 - 1_000, end_ns=10**12)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert spans["chat m"].start_time == spans["decode"].start_time == 10**12 - 50_000_000
