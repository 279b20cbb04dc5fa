"""Start-up loading of the ask runtime, admin reload and the index watcher."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from server.agents import AgentLoadError, RagAgent
from server.agents.runtime import load_ask_runtime, reload_index, watch_index
from server.rag.builder import build_index, update_index
from server.rag.errors import EmbedderMismatchError, IndexNotFoundError, RagError
from server.rag.retriever import ReloadReport
from server.settings import Settings

from .conftest import HashingEmbedder, write_docs


def _settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def index(tmp_path: Path, embedder: HashingEmbedder) -> Path:
    docs = write_docs(tmp_path / "docs", {"a.md": "# A\nalpha facts", "b.md": "# B\nbeta facts"})
    build_index(docs, tmp_path / "idx", embedder)
    return tmp_path / "idx"


async def test_runtime_without_index_is_the_plain_rag_agent(embedder: HashingEmbedder) -> None:
    async def never() -> HashingEmbedder:
        raise AssertionError("no index configured: the embedder must not be loaded")

    runtime = await load_ask_runtime(_settings(), never)  # type: ignore[arg-type]
    assert isinstance(runtime.agent, RagAgent) and runtime.retriever is None
    with pytest.raises(IndexNotFoundError, match="GGSERVE_INDEX_PATH"):
        await reload_index(runtime)


async def test_runtime_refuses_bad_index_or_agent_at_start(
    index: Path, embedder: HashingEmbedder, minilm_tokenizer: object, tmp_path: Path
) -> None:
    async def other() -> HashingEmbedder:
        return HashingEmbedder(minilm_tokenizer, name="another-model")  # type: ignore[arg-type]

    with pytest.raises(EmbedderMismatchError, match="another-model"):
        await load_ask_runtime(_settings(index_path=index), other)  # type: ignore[arg-type]
    with pytest.raises(IndexNotFoundError):
        await load_ask_runtime(_settings(index_path=tmp_path / "none"), other)  # type: ignore[arg-type]
    with pytest.raises(AgentLoadError):
        await load_ask_runtime(_settings(agent="nope.nope:Agent"), other)  # type: ignore[arg-type]


async def test_admin_reload_and_watcher_swap_in_new_versions(
    index: Path, embedder: HashingEmbedder
) -> None:
    async def same() -> HashingEmbedder:
        return embedder

    runtime = await load_ask_runtime(_settings(index_path=index), same)  # type: ignore[arg-type]
    first = runtime.retrievers.current  # type: ignore[union-attr]
    update_index(index, embedder, remove=["b.md"])
    report = await reload_index(runtime)
    assert report.changed and runtime.retriever is not first

    reloads: list[ReloadReport] = []
    errors: list[Exception] = []
    watcher = asyncio.create_task(watch_index(runtime, 0.01, reloads.append, errors.append))
    try:
        update_index(index, embedder, add=[index.parent / "docs"])
        for _ in range(200):
            if reloads:
                break
            await asyncio.sleep(0.01)
        assert reloads and runtime.retrievers.current.count == 2  # type: ignore[union-attr]
        (index / "CURRENT").write_text("v-missing\n")
        for _ in range(50):
            await asyncio.sleep(0.01)
        assert len(errors) == 1 and isinstance(errors[0], RagError)  # reported once
        assert runtime.retrievers.current.count == 2  # type: ignore[union-attr]
    finally:
        watcher.cancel()
