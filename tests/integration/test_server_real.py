"""The real server with the real SmolLM2 GGUF, over real HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.integration.server_proc import ServerHandle, running_server

# SmolLM2's end-of-generation tokens: <|endoftext|> = 0, <|im_end|> = 2. Biasing them away
# makes a generation that is guaranteed to run to max_tokens.
NEVER_STOP = {"0": -100, "2": -100}


def test_ask_returns_a_non_empty_answer_with_usage_and_timings(server: ServerHandle) -> None:
    response = httpx.post(
        server.url + "/v1/ask",
        json={"question": "What is the capital of France?", "max_tokens": 32, "temperature": 0},
        headers=server.headers,
        timeout=120,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["answer"].strip()
    assert "Paris" in body["answer"]
    assert body["usage"]["prompt_tokens"] > 10
    assert 0 < body["usage"]["completion_tokens"] <= 32
    assert (
        body["timings"]["ttft_ms"] > 0 and body["timings"]["total_ms"] >= body["timings"]["ttft_ms"]
    )
    assert response.headers["x-request-id"] == body["id"]


def test_ask_without_or_with_a_wrong_key_is_401(server: ServerHandle) -> None:
    for headers in ({}, {"X-API-KEY": "wrong"}, {"Authorization": "Bearer wrong"}):
        response = httpx.post(server.url + "/v1/ask", json={"question": "hi"}, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"


def test_health_answers_while_a_long_generation_runs(server: ServerHandle) -> None:
    payload = {
        "prompt": "Once upon a time",
        "max_tokens": 150,
        "temperature": 0,
        "logit_bias": NEVER_STOP,
        "stream": True,
    }
    first_token = threading.Event()
    finished: list[float] = []

    def generate() -> None:
        with httpx.stream(
            "POST",
            server.url + "/v1/completions",
            json=payload,
            headers=server.headers,
            timeout=300,
        ) as response:
            for line in response.iter_lines():
                if line.startswith("data:"):
                    first_token.set()
        finished.append(time.monotonic())

    worker = threading.Thread(target=generate)
    worker.start()
    assert first_token.wait(120)
    started = time.monotonic()
    health = httpx.get(server.url + "/health", timeout=5)
    latency = time.monotonic() - started
    generating_during_probe = not finished
    worker.join(300)
    assert health.status_code == 200 and health.json()["status"] == "ready"
    assert generating_during_probe, "generation ended before the probe; make it longer"
    assert latency < 1.0, f"/health took {latency:.2f}s during a generation"


def test_json_logs_have_one_record_per_request_without_the_key(server: ServerHandle) -> None:
    request_id = "log-check-123"
    httpx.post(
        server.url + "/v1/ask",
        json={"question": "Say hi", "max_tokens": 4},
        headers={**server.headers, "X-Request-ID": request_id},
        timeout=120,
    )
    time.sleep(0.2)
    log = server.log()
    assert server.api_key not in log
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    mine = [
        r
        for r in records
        if r.get("client_request_id") == request_id and r.get("event") == "request"
    ]
    assert len(mine) == 1
    record = mine[0]
    assert record["route"] == "/v1/ask" and record["status"] == 200 and record["key_id"] == "test"
    for name in (
        "latency_ms",
        "ttft_ms",
        "prompt_tokens",
        "completion_tokens",
        "rss_mb",
        "finish_reason",
    ):
        assert record[name] is not None, name
    assert "vram_mb" in record


def _health_cli(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "health", "--url", url],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_health_cli_exit_codes(server: ServerHandle) -> None:
    assert _health_cli(server.url).returncode == 0
    assert _health_cli("http://127.0.0.1:9").returncode == 2


def test_missing_and_corrupt_models_keep_the_process_up_and_say_why(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF" + b"\x00garbage" * 100)
    for model in (tmp_path / "missing.gguf", corrupt):
        with running_server({"GGSERVE_MODEL_PATH": str(model)}, wait_ready=False) as srv:
            for _ in range(100):
                ready = httpx.get(srv.url + "/ready", timeout=5)
                if ready.json()["status"] == "failed":
                    break
                time.sleep(0.1)
            assert ready.status_code == 503
            assert model.name in ready.json()["reason"]
            assert httpx.get(srv.url + "/health").status_code == 200
            ask = httpx.post(srv.url + "/v1/ask", json={"question": "hi"}, headers=srv.headers)
            assert ask.status_code == 503
            assert ask.json()["error"]["code"] == "model_not_ready"
            assert _health_cli(srv.url).returncode == 1
            assert srv.proc.poll() is None


def test_client_disconnect_stops_the_generation(server: ServerHandle) -> None:
    def generated() -> float:
        metrics = httpx.get(server.url + "/metrics").text
        line = next(
            ln
            for ln in metrics.splitlines()
            if ln.startswith("ggserve_engine_tokens_generated_total")
        )
        return float(line.split()[-1])

    before = generated()
    payload = {
        "prompt": "Count: 1, 2, 3,",
        "max_tokens": 1000,
        "temperature": 0,
        "logit_bias": NEVER_STOP,
        "stream": True,
    }
    with httpx.stream(
        "POST", server.url + "/v1/completions", json=payload, headers=server.headers, timeout=60
    ) as response:
        chunks = 0
        for line in response.iter_lines():
            if line.startswith("data:"):
                chunks += 1
            if chunks >= 5:
                break  # leaving the block closes the connection mid-stream
    time.sleep(1.5)
    after_stop = generated()
    time.sleep(1.5)
    assert generated() == after_stop, "the engine kept decoding after the client left"
    assert after_stop - before < 200, "generation ran far past the disconnect"
    slots = httpx.get(server.url + "/health").json()["slots_active"]
    assert slots == 0


def _write_manifest(folder: Path, model: Path, sha256: str) -> None:
    from artifacts.manifest import Artifact, Manifest, Source, write_manifest

    manifest = Manifest(
        name="smollm2-demo",
        created_at="2026-11-23T00:00:00Z",
        tools={},
        base=Source(path="base", sha256="0" * 64),
        adapter=None,
        artifacts=[
            Artifact(file=model.name, quant="Q4_1", size_bytes=model.stat().st_size, sha256=sha256)
        ],
    )
    write_manifest(manifest, folder)


def test_manifest_name_and_quant_are_reported_and_sha256_is_verified(tmp_path: Path) -> None:
    from artifacts.digest import sha256_file
    from tests.integration.server_proc import MODEL

    model = tmp_path / MODEL.name
    model.symlink_to(MODEL)
    _write_manifest(tmp_path, model, sha256_file(MODEL))
    env = {"GGSERVE_MODEL_PATH": str(model), "GGSERVE_VERIFY_SHA256": "true"}
    with running_server(env) as srv:
        models = httpx.get(srv.url + "/v1/models", headers=srv.headers).json()
        assert models["data"][0]["id"] == "smollm2-demo"
        assert models["data"][0]["quantization"] == "Q4_1"
        health = httpx.get(srv.url + "/health").json()
        assert health["manifest_name"] == "smollm2-demo" and health["quantization"] == "Q4_1"

    _write_manifest(tmp_path, model, "f" * 64)
    with running_server(env, wait_ready=False) as srv:
        for _ in range(100):
            ready = httpx.get(srv.url + "/ready", timeout=5).json()
            if ready["status"] == "failed":
                break
            time.sleep(0.1)
        assert ready["status"] == "failed"
        assert "does not match the manifest" in ready["reason"]


def test_full_queue_answers_503_at_once_and_loses_nothing() -> None:
    env = {"GGSERVE_N_SLOTS": "1", "GGSERVE_MAX_QUEUE": "0"}
    payload = {
        "prompt": "Once upon a time",
        "max_tokens": 60,
        "temperature": 0,
        "logit_bias": NEVER_STOP,
        "stream": True,
    }
    with running_server(env) as srv:
        with httpx.stream(
            "POST", srv.url + "/v1/completions", json=payload, headers=srv.headers, timeout=120
        ) as busy:
            lines = busy.iter_lines()
            next(line for line in lines if line.startswith("data:"))  # the slot is taken
            started = time.monotonic()
            refused = httpx.post(
                srv.url + "/v1/completions",
                json={**payload, "stream": False},
                headers=srv.headers,
                timeout=30,
            )
            waited = time.monotonic() - started
            rest = [line for line in lines if line.startswith("data:")]
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "overloaded"
        assert int(refused.headers["retry-after"]) >= 1
        assert waited < 2.0
        assert rest[-1] == "data: [DONE]"  # the request in flight finished normally
        texts = [json.loads(line[5:])["choices"] for line in rest[:-1]]
        assert any(c and c[0]["finish_reason"] == "length" for c in texts)


def test_router_metrics_follow_a_running_generation(server: ServerHandle) -> None:
    """What a Gateway API / llm-d router scores by: a streamed generation holds a slot and KV
    cells while it runs, and gives them back when it ends (4 slots x 2048 tokens here)."""

    def scrape() -> dict[str, float]:
        values = {}
        for line in httpx.get(server.url + "/metrics", timeout=10).text.splitlines():
            name = line.split(" ")[0]
            if name.startswith(("ggserve_requests_running", "ggserve_kv_cache_usage_ratio")):
                values[name] = float(line.split(" ")[1])
            if name.startswith("ggserve_kv_cache_config_info"):
                values[name] = 1.0
        return values

    assert 'ggserve_kv_cache_config_info{block_size="64",num_blocks="128",slots="4"}' in scrape()
    body = {
        "messages": [{"role": "user", "content": "Count from 1 to 100."}],
        "max_tokens": 200,
        "temperature": 0,
        "stream": True,
    }
    with httpx.stream(
        "POST", server.url + "/v1/chat/completions", json=body, headers=server.headers, timeout=120
    ) as response:
        lines = response.iter_lines()
        for line in lines:  # the first tokens are out: the request holds its slot now
            if line.startswith("data: {") and '"content":"' in line and '"content":""' not in line:
                break
        during = scrape()
        for _ in lines:
            pass
    assert during["ggserve_requests_running"] >= 1
    assert 0 < during["ggserve_kv_cache_usage_ratio"] < 1
    deadline = time.monotonic() + 5
    while scrape()["ggserve_requests_running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    after = scrape()
    assert after["ggserve_requests_running"] == 0 and after["ggserve_kv_cache_usage_ratio"] == 0
