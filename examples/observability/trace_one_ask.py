"""Serve the real model with an index and tracing on, ask one question, and print what an
operator gets for it: the JSON log record, the spans (as an OTLP collector receives them) and
the metrics it moved. The output is what docs/observability.md shows.

    PYTHONPATH=. .venv/bin/python examples/observability/trace_one_ask.py
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import httpx

from server.rag.builder import build_index
from server.rag.embedder import Embedder
from tests.integration.otlp_sink import otlp_sink
from tests.integration.server_proc import EMBEDDER, ROOT, running_server

QUESTION = "What is the part number of the P40 impeller seal?"
METRICS = (
    "ggserve_requests_total{",
    "ggserve_request_latency_seconds_count",
    "ggserve_ttft_seconds_sum",
    "ggserve_queue_wait_seconds_sum",
    "ggserve_completion_tokens_total",
    "ggserve_generations_total",
    "ggserve_drift_observations_total",
)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copytree(ROOT / "eval" / "rag" / "docs", work / "docs")
        build_index(work / "docs", work / "index", Embedder(EMBEDDER))
        with otlp_sink() as (endpoint, sink):
            env = {
                "GGSERVE_INDEX_PATH": str(work / "index"),
                "GGSERVE_OTLP_ENDPOINT": endpoint,
                "OTEL_BSP_SCHEDULE_DELAY": "100",
                "GGSERVE_FEEDBACK_DB": str(work / "feedback.db"),
                "GGSERVE_N_SLOTS": "2",
            }
            with running_server(env, log_dir=work) as server:
                response = httpx.post(
                    server.url + "/v1/ask",
                    json={"question": QUESTION, "max_tokens": 48},
                    headers={**server.headers, "X-Request-ID": "docs-trace-1"},
                    timeout=120,
                )
                time.sleep(1.0)  # the batch exporter sends within 0.1 s
                metrics = httpx.get(server.url + "/metrics", timeout=10).text
                log = server.log()
        print("## response\n" + json.dumps(response.json(), indent=2))
        records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        for record in records:
            if record.get("request_id") == "docs-trace-1":
                print("## log record\n" + json.dumps(record))
        root = next(
            s
            for s in sink.spans
            if s["parent_span_id"] is None
            and s["attributes"].get("ggserve.request_id") == "docs-trace-1"
        )
        trace = sorted(
            (s for s in sink.spans if s["trace_id"] == root["trace_id"]),
            key=lambda s: (s["start_ns"], -s["end_ns"]),
        )
        print(f"## spans (trace {root['trace_id']})")
        for s in trace:
            offset = (s["start_ns"] - root["start_ns"]) / 1e6
            duration = (s["end_ns"] - s["start_ns"]) / 1e6
            attrs = {k: v for k, v in s["attributes"].items() if k != "ggserve.request_id"}
            indent = "" if s["parent_span_id"] is None else "  "
            print(f"{indent}{s['name']:<22} +{offset:8.1f} ms {duration:8.1f} ms  {attrs}")
        print("## metrics")
        for line in metrics.splitlines():
            if line.startswith(METRICS) and "/health" not in line and "/ready" not in line:
                print(line)


if __name__ == "__main__":
    main()
