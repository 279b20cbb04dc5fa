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
from server.rag import layout
from server.rag.embedder import Embedder
from server.rag.errors import IndexNotFoundError, RagError
from server.rag.retriever import ReloadReport, RetrieverHolder
from server.settings import Settings


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


async def watch_index(
    runtime: AskRuntime,
    interval_s: float,
    on_reload: Callable[[ReloadReport], None] | None = None,
    on_error: Callable[[Exception], None] | None = None,
) -> None:
    """Reload whenever ``ggserve index build/add/remove`` publishes a new version.

    Polls the index's ``CURRENT`` pointer every ``interval_s`` seconds (cheap: one small
    file read); run it as a task from the app's lifespan and cancel it on shutdown. A failed
    load is reported to ``on_error`` and retried at the next change, never raised.
    """
    holder = runtime.retrievers
    if holder is None:
        return
    last_error: str | None = None  # report each distinct failure once, not every poll
    while True:
        await asyncio.sleep(interval_s)
        try:
            live = await asyncio.to_thread(layout.current_version, holder.index_dir)
            if live.name == holder.current.version:
                last_error = None
                continue
            report = await asyncio.to_thread(holder.reload)
        except RagError as exc:
            if on_error is not None and str(exc) != last_error:
                on_error(exc)
            last_error = str(exc)
            continue
        last_error = None
        if on_reload is not None and report.changed:
            on_reload(report)
