"""The real server, traced and watched: one /v1/ask over HTTP produces a JSON log record, an
OTLP trace with every stage under its request id, a drift observation and drift gauges."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator

import httpx
import pytest

pytest.importorskip("opentelemetry.exporter.otlp.proto.http")

from server.rag.builder import build_index
from server.rag.embedder import Embedder
from server.security.api_keys import hash_key
from tests.integration.otlp_sink import SpanSink, otlp_sink
from tests.integration.server_proc import EMBEDDER, ROOT, TEST_KEY, ServerHandle, running_server

ENGINE_STAGES = ("queue_wait", "prefill", "decode")
STAGES = ("auth", "retrieval.embed", "retrieval.search", *ENGINE_STAGES)


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerHandle, SpanSink]]:
    work = tmp_path_factory.mktemp("observability")
    docs = work / "docs"
    shutil.copytree(ROOT / "eval" / "rag" / "docs", docs)
    build_index(docs, work / "index", Embedder(EMBEDDER))
    with otlp_sink() as (endpoint, sink):
        env = {
            "GGSERVE_INDEX_PATH": str(work / "index"),
            "GGSERVE_OTLP_ENDPOINT": endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # export within 0.1 s instead of 5 s
            "GGSERVE_API_KEYS": f"test:{hash_key(TEST_KEY)}",
            "GGSERVE_ADMIN_KEY_IDS": "test",
            "GGSERVE_DRIFT_REFERENCE_SIZE": "10",
            "GGSERVE_DRIFT_WINDOW_SIZE": "10",
            "GGSERVE_DRIFT_MIN_SAMPLES": "10",
            "GGSERVE_DRIFT_PERMUTATIONS": "200",
            "GGSERVE_FEEDBACK_DB": str(work / "feedback.db"),
            "GGSERVE_N_SLOTS": "2",
        }
        with running_server(env, log_dir=work) as handle:
            yield handle, sink


def _wait_for(sink: SpanSink, request_id: str, names: tuple[str, ...]) -> list[dict]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with sink.lock:
            root = [
                s for s in sink.spans if s["attributes"].get("ggserve.request_id") == request_id
            ]
            trace = [s for s in sink.spans if root and s["trace_id"] == root[0]["trace_id"]]
        if {s["name"] for s in trace} >= set(names):
            return trace
        time.sleep(0.1)
    raise AssertionError(f"spans for {request_id}: {[s['name'] for s in sink.spans]}")


def test_one_ask_is_one_trace_one_log_record_and_one_observation(
    traced: tuple[ServerHandle, SpanSink],
) -> None:
    server, sink = traced
    question = "What is the part number of the P40 impeller seal?"
    response = httpx.post(
        server.url + "/v1/ask",
        json={"question": question, "max_tokens": 24},
        headers={**server.headers, "X-Request-ID": "trace-ask-1"},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-client-request-id"] == "trace-ask-1"  # kept for correlation
    request_id = response.headers["x-request-id"]  # the server's own
    trace = _wait_for(sink, request_id, ("POST /v1/ask", *STAGES))
    root = next(s for s in trace if s["name"] == "POST /v1/ask")
    assert root["parent_span_id"] is None and root["service"] == "ggserve"
    assert root["attributes"]["http.route"] == "/v1/ask"
    assert root["attributes"]["http.status_code"] == 200
    by_name = {s["name"]: s for s in trace}
    # The model call is one span named as OpenTelemetry's GenAI conventions say; the engine's
    # stages sit inside it, retrieval and auth beside it under the request.
    call = next(s for s in trace if s["name"].startswith("chat "))
    assert call["parent_span_id"] == root["span_id"]
    for stage in STAGES:
        span = by_name[stage]
        parent = call if stage in ENGINE_STAGES else root
        assert span["parent_span_id"] == parent["span_id"], stage
        assert root["start_ns"] <= span["start_ns"] <= span["end_ns"] <= root["end_ns"], stage
    gen_ai = call["attributes"]
    assert call["name"] == f"chat {gen_ai['gen_ai.request.model']}"
    assert gen_ai["gen_ai.operation.name"] == "chat"
    assert gen_ai["gen_ai.provider.name"] == "ggserve"
    assert gen_ai["gen_ai.response.model"] == gen_ai["gen_ai.request.model"]
    assert gen_ai["gen_ai.response.id"] == response.json()["id"]
    assert gen_ai["gen_ai.response.finish_reasons"] in (["stop"], ["length"])
    assert gen_ai["gen_ai.request.max_tokens"] == 24
    assert 1 <= gen_ai["gen_ai.usage.input_tokens"] <= response.json()["usage"]["prompt_tokens"]
    assert 1 <= gen_ai["gen_ai.usage.output_tokens"] <= 24
    assert gen_ai["ggserve.model.version"] == "unregistered"
    # The engine's stages run in order: queue, then prefill, then decode.
    assert by_name["queue_wait"]["end_ns"] == by_name["prefill"]["start_ns"]
    assert by_name["prefill"]["end_ns"] == by_name["decode"]["start_ns"]
    assert by_name["decode"]["attributes"]["ggserve.completion_tokens"] >= 1

    records = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    log = next(
        r for r in records if r.get("request_id") == request_id and r.get("event") == "request"
    )
    assert log["route"] == "/v1/ask" and log["status"] == 200

    drift = httpx.get(
        server.url + "/admin/drift", params={"evaluate": "true"}, headers=server.headers, timeout=60
    ).json()
    assert drift["observed"] >= 1
    signals = {s["name"]: s for s in drift["report"]["signals"]}
    assert signals["top1_score"]["reference_n"] >= 1  # the ask's pre-threshold score
    assert signals["top1_score"]["drifted"] is None  # one request: no verdict
    # The question's embedding is the retriever's, reused: the embedder is attached (loaded
    # for the index) and the ask has its row in the embedding sample.
    assert drift["embeddings"] is True
    assert signals["query_embedding"]["reference_n"] == signals["top1_score"]["reference_n"]
    metrics = httpx.get(server.url + "/metrics", timeout=10).text
    assert 'ggserve_drift_samples{signal="top1_score",window="reference"}' in metrics
    for histogram in (
        "gen_ai_server_time_to_first_token_seconds",
        "gen_ai_server_time_per_output_token_seconds",
        "gen_ai_server_request_duration_seconds",
    ):
        counts = [
            line
            for line in metrics.splitlines()
            if line.startswith(histogram + "_count{") and 'gen_ai_operation_name="chat"' in line
        ]
        assert counts and float(counts[0].split()[-1]) >= 1, histogram
