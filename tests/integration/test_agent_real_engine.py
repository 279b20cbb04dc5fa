"""The RAG agent over the real SmolLM2 engine and the real MiniLM index of the eval set."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.agents import AgentContext, Delta, RagAgent, load_agent
from server.agents.engine_chat import engine_chat, engine_token_counter
from server.agents.prompt import REFUSAL, grounded_messages
from server.engine.types import Engine, SamplingParams
from server.rag.builder import build_index
from server.rag.embedder import Embedder
from server.rag.retriever import Retriever
from server.runtime.loading import create_engine
from server.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDER = ROOT / "models" / "all-MiniLM-L6-v2"
EVAL_DOCS = ROOT / "eval" / "rag" / "docs"

pytestmark = pytest.mark.slow


def _settings(**overrides: object) -> Settings:
    base: dict[str, object] = {"model_path": MODEL, "n_slots": 2, "n_ctx": 2048, "warmup": False}
    return Settings(_env_file=None, **(base | overrides))  # type: ignore[call-arg]


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    if not MODEL.is_file():
        pytest.fail(f"{MODEL} missing: run 'ggserve models fetch' first")
    engine, _ = create_engine(_settings())
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def retriever(tmp_path_factory: pytest.TempPathFactory) -> Retriever:
    embedder = Embedder(EMBEDDER)
    index = tmp_path_factory.mktemp("agent") / "eval"
    build_index(EVAL_DOCS, index, embedder)
    return Retriever.load(index, embedder)


def _ctx(engine: Engine, retriever: Retriever | None, **settings: object) -> AgentContext:
    return AgentContext(
        settings=_settings(**settings),
        retriever=retriever,
        chat=engine_chat(engine),
        request_id="it-1",
        params=SamplingParams(max_tokens=40, temperature=0.0),
        count_tokens=engine_token_counter(engine),
        n_ctx=engine.n_ctx_per_slot,
    )


async def test_grounded_answer_cites_the_right_document_and_reports_usage(
    engine: Engine, retriever: Retriever
) -> None:
    question = "What is the part number of the impeller seal for the P40 pump?"
    ctx = _ctx(engine, retriever, rag_top_k=3)
    answer = await RagAgent().answer(question, ctx)

    assert answer.grounded and answer.sources[0].document == "aquaflow-pump.md"
    assert answer.sources[0].heading == "AquaFlow P40 Pump Manual › Maintenance"
    assert "LH-4417" in answer.text
    hits = retriever.search(question, 3, ctx.settings.rag_score_threshold).hits
    expected_prompt = engine_token_counter(engine)(
        grounded_messages(ctx.settings.system_prompt, question, hits)
    )
    assert answer.usage.prompt_tokens == expected_prompt
    assert 0 < answer.usage.completion_tokens <= 40
    t = answer.timings
    assert t.embed_ms > 0 and t.search_ms > 0 and t.generate_ms > 0
    assert t.total_ms >= t.embed_ms + t.search_ms + t.generate_ms * 0.99


async def test_unanswerable_question_is_refused_without_generating(
    engine: Engine, retriever: Retriever
) -> None:
    ctx = _ctx(engine, retriever, rag_score_threshold=0.95, rag_no_context="refuse")
    answer = await RagAgent().answer("Who won the 1998 football world cup?", ctx)
    assert answer.text == REFUSAL and answer.no_context and answer.usage.completion_tokens == 0


async def test_leaving_a_stream_early_frees_the_engine_slot(
    engine: Engine, retriever: Retriever
) -> None:
    stream = RagAgent().answer_stream("How do I install Kestrel?", _ctx(engine, retriever))
    async for event in stream:
        if isinstance(event, Delta):
            break
    await stream.aclose()
    for _ in range(50):
        if engine.stats().slots_active == 0:
            break
        await asyncio.sleep(0.05)
    assert engine.stats().slots_active == 0


async def test_example_agent_runs_on_the_real_engine(
    engine: Engine, retriever: Retriever, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "examples" / "agents"))
    agent = load_agent("glossary_agent:GlossaryAgent")
    ctx = _ctx(engine, retriever)
    assert (await agent.answer("what is LoRA?", ctx)).text.startswith("LoRA adapts")
    fallback = await agent.answer("Which day is the Quarry Lane recycling centre closed?", ctx)
    assert fallback.grounded and fallback.sources[0].document == "recycling-rules.txt"
