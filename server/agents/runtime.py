"""What ``/v1/ask`` needs beyond the engine: the agent and the (hot-reloadable) retriever.

Loaded once at start-up, after the model, so ``/ready`` reports an unusable index or agent
with its reason instead of the first question failing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from server.agents.loader import load_agent
from server.agents.types import Agent, Searcher
from server.rag.embedder import Embedder
from server.rag.errors import IndexNotFoundError
from server.rag.retriever import ReloadReport, RetrieverHolder
from server.settings import Settings

ASK_RUNTIME = "ask_runtime"  # key in Services.extras


@dataclass
class AskRuntime:
    """The configured agent, and the retriever holder when an index is configured."""

    agent: Agent
    retrievers: RetrieverHolder | None

    @property
    def retriever(self) -> Searcher | None:
        """The index version to use for one request (take it once per request)."""
        return self.retrievers.current if self.retrievers is not None else None


async def load_ask_runtime(
    settings: Settings, embedder: Callable[[], Awaitable[Embedder]]
) -> AskRuntime:
    """Load ``GGSERVE_AGENT`` (or the RAG agent) and ``GGSERVE_INDEX_PATH`` (if set).

    Raises ``AgentLoadError`` or a ``RagError`` (missing index, embedder mismatch, corrupt
    files) whose message is meant for ``/ready``.
    """
    agent = load_agent(settings.agent)
    holder = None
    if settings.index_path is not None:
        loaded = await embedder()
        holder = await asyncio.to_thread(RetrieverHolder.open, settings.index_path, loaded)
    return AskRuntime(agent, holder)


async def reload_index(runtime: AskRuntime) -> ReloadReport:
    """Swap in the index's live version (``POST /admin/reload``). Requests in flight finish on
    the version they started with; a failed load raises and the old version keeps serving."""
    if runtime.retrievers is None:
        raise IndexNotFoundError("no index is configured: set GGSERVE_INDEX_PATH and restart")
    return await asyncio.to_thread(runtime.retrievers.reload)
