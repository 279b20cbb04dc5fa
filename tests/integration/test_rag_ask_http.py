"""/v1/ask over HTTP with the real SmolLM2 engine, the real MiniLM index and the RAG agent."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.agents.rag_agent import RagAgent
from server.agents.runtime import AskRuntime
from server.app import create_app
from server.rag.builder import build_index, update_index
from server.rag.embedder import Embedder
from server.security.api_keys import hash_key
from server.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDER = ROOT / "models" / "all-MiniLM-L6-v2"
KEY = "ggs-rag-test-key"
HEADERS = {"X-API-KEY": KEY}
ADMIN_KEY = "ggs-rag-admin-key"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(EMBEDDER)


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ask") / "docs"
    shutil.copytree(ROOT / "eval" / "rag" / "docs", folder)
    return folder


@pytest.fixture(scope="module")
def client(
    docs: Path, embedder: Embedder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    index = docs.parent / "index"
    build_index(docs, index, embedder)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        model_path=MODEL,
        n_ctx=1024,
        n_slots=2,
        warmup=False,
        log_format="text",
        api_keys=[f"t:{hash_key(KEY)}", f"ops:{hash_key(ADMIN_KEY)}"],
        admin_key_ids=["ops"],
        index_path=index,
        embedder_path=EMBEDDER,
        feedback_db=tmp_path_factory.mktemp("fb") / "feedback.db",
    )
    app = create_app(settings)
    with TestClient(app) as test_client:
        for _ in range(600):
            if test_client.get("/ready").status_code == 200:
                break
            time.sleep(0.1)
        # the lifespan loaded the agent and the index as part of "ready"
        runtime = app.state.services.ask
        assert isinstance(runtime, AskRuntime) and isinstance(runtime.agent, RagAgent)
        yield test_client


def test_ask_answers_with_sources_usage_and_timing_breakdown(client: TestClient) -> None:
    question = {"question": "Which day is the Quarry Lane recycling centre closed?", "seed": 1}
    response = client.post("/v1/ask", json={**question, "temperature": 0}, headers=HEADERS)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["grounded"] is True
    assert body["sources"][0]["document"] == "recycling-rules.txt"
    assert body["sources"][0]["n"] == 1 and body["sources"][0]["score"] >= 0.3
    assert body["answer"]
    assert body["usage"]["prompt_tokens"] > 100 and body["usage"]["completion_tokens"] > 0
    timings = body["timings"]
    assert timings["embed_ms"] > 0 and timings["search_ms"] > 0 and timings["generate_ms"] > 0
    assert timings["total_ms"] >= timings["generate_ms"]


def test_streaming_ask_sends_sources_tokens_then_done(client: TestClient) -> None:
    payload = {"question": "How do I install Kestrel?", "stream": True, "max_tokens": 16}
    with client.stream("POST", "/v1/ask", json=payload, headers=HEADERS) as response:
        assert response.status_code == 200
        raw = response.read().decode()
    events = [line[6:].strip() for line in raw.splitlines() if line.startswith("event:")]
    assert events[0] == "sources" and events[-1] == "done" and "token" in events
    datas = [line[5:].strip() for line in raw.splitlines() if line.startswith("data:")]
    first, final = json.loads(datas[0]), json.loads(datas[-1])
    assert first["sources"][0]["document"] == "kestrel-cli.md"
    assert final["sources"] == first["sources"] and final["usage"]["completion_tokens"] <= 16


def test_off_topic_question_is_refused_without_generation(client: TestClient) -> None:
    body = client.post(
        "/v1/ask", json={"question": "Who painted the Mona Lisa?"}, headers=HEADERS
    ).json()
    assert body["finish_reason"] == "no_context"
    assert body["answer"].startswith("I don't know") and body["sources"] == []
    assert body["usage"]["completion_tokens"] == 0


def test_question_longer_than_the_context_is_a_clear_400(client: TestClient) -> None:
    response = client.post("/v1/ask", json={"question": "pump " * 1500}, headers=HEADERS)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "Shorten the question" in error["message"]


def test_reloaded_index_is_used_by_the_next_request(
    client: TestClient, docs: Path, embedder: Embedder
) -> None:
    runtime: AskRuntime = client.app.state.services.ask  # type: ignore[attr-defined]
    holder = runtime.retrievers
    assert holder is not None
    update_index(holder.index_dir, embedder, remove=["travel-policy.md"])
    assert client.post("/admin/reload", headers=HEADERS).status_code == 403  # not an admin key
    report = client.post("/admin/reload", headers={"X-API-KEY": ADMIN_KEY})
    assert report.status_code == 200, report.text
    assert report.json()["changed"] is True
    body = client.post(
        "/v1/ask",
        json={"question": "What is the daily meal allowance on business trips?", "max_tokens": 8},
        headers=HEADERS,
    ).json()
    assert all(s["document"] != "travel-policy.md" for s in body["sources"])
