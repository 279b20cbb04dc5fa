"""The agent contract: what ``/v1/ask`` calls, and what an agent gets to work with.

An agent turns a question into an :class:`Answer`. It may retrieve (``ctx.retriever``) and
generate (``ctx.chat``, the engine's stream of ``TokenEvent`` / ``FinishEvent``), and streams
:class:`AnswerEvent` s: one :class:`Retrieved`, any number of :class:`Delta`, one :class:`Done`.
The built-in :class:`server.agents.rag_agent.RagAgent` is the default; set
``GGSERVE_AGENT=package.module:Class`` to serve your own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from server.engine.types import EngineEvent, SamplingParams, Timings, Usage
from server.rag.embedder import Vectors
from server.rag.retriever import SearchResult
from server.settings import Settings

Messages = list[dict[str, str]]


class ChatFn(Protocol):
    """Generate a chat reply over the engine: ``TokenEvent`` s, then one ``FinishEvent``."""

    def __call__(
        self, messages: Messages, params: SamplingParams, request_id: str
    ) -> AsyncIterator[EngineEvent]: ...


class Searcher(Protocol):
    """What an agent needs from a retriever (:class:`server.rag.retriever.Retriever`)."""

    def search(self, query: str, k: int, threshold: float | None = None) -> SearchResult: ...


@dataclass(frozen=True)
class AgentContext:
    """Everything one question may use. Built per request by the serving layer."""

    settings: Settings
    retriever: Searcher | None  # None: no index configured
    chat: ChatFn
    request_id: str
    params: SamplingParams = field(default_factory=SamplingParams)
    top_k: int | None = None  # per-request override of settings.rag_top_k
    # Prompt size of ``messages`` in model tokens, and the context each request has; agents
    # use them to fit retrieved passages. None when the serving layer cannot tell.
    count_tokens: Callable[[Messages], int] | None = None
    n_ctx: int | None = None


@dataclass(frozen=True)
class Source:
    """A passage an answer was grounded in; ``n`` is the number cited in the answer."""

    n: int
    document: str
    title: str
    heading: str
    score: float
    snippet: str


@dataclass(frozen=True)
class AnswerTimings:
    """Where the time of one answer went, in milliseconds."""

    embed_ms: float = 0.0
    search_ms: float = 0.0
    generate_ms: float = 0.0
    queue_ms: float = 0.0
    ttft_ms: float = 0.0
    total_ms: float = 0.0


ZERO_USAGE = Usage(prompt_tokens=0, completion_tokens=0, cached_prompt_tokens=0)


@dataclass(frozen=True)
class Answer:
    """The agent's final result."""

    text: str
    sources: list[Source]
    usage: Usage
    finish_reason: str
    timings: AnswerTimings
    grounded: bool  # generated from retrieved passages
    no_context: bool = False  # nothing passed the threshold (answered or refused without)
    engine_timings: Timings | None = None
    # Best retrieval score before the threshold (drift watches it); None: nothing retrieved.
    top_score: float | None = None


@dataclass(frozen=True)
class Retrieved:
    """First event: the sources the answer will use (possibly none)."""

    sources: list[Source]
    grounded: bool
    no_context: bool
    embed_ms: float = 0.0
    search_ms: float = 0.0
    top_score: float | None = None  # best retrieval score before the threshold
    # The question's embedding, when the retriever made one (drift reuses it).
    query_vector: Vectors | None = None


@dataclass(frozen=True)
class Delta:
    """New answer text."""

    text: str


@dataclass(frozen=True)
class Done:
    """Last event, with the complete answer."""

    answer: Answer


AnswerEvent = Retrieved | Delta | Done


@runtime_checkable
class Agent(Protocol):
    """Answer questions. ``answer_stream`` must end with exactly one :class:`Done`."""

    async def answer(self, question: str, ctx: AgentContext) -> Answer: ...

    def answer_stream(self, question: str, ctx: AgentContext) -> AsyncIterator[AnswerEvent]: ...


class AgentError(Exception):
    """An agent could not answer for a reason the user can fix; the message says how."""


class QuestionTooLongError(AgentError):
    """The question alone does not fit the model's context."""


async def answer_from_stream(stream: AsyncIterator[AnswerEvent]) -> Answer:
    """Drain ``stream`` and return the answer of its :class:`Done` event."""
    async for event in stream:
        if isinstance(event, Done):
            return event.answer
    raise AgentError("the agent's stream ended without a Done event")
