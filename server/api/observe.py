"""What the request paths tell drift and tracing: one observation per answered request.

Both wrappers pass a stream through untouched and look at it on the way: ``answers`` (the
/v1/ask agent's events) and ``generations`` (a chat completion's items). Recording never fails
a request: an error here is logged and the answer still goes out.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from loguru import logger

from server.agents.streams import closing
from server.agents.types import Answer, AnswerEvent, Done, Retrieved
from server.api.generation import Completed, GenerationItem, RequestContext
from server.drift.observation import observation
from server.rag.embedder import Vectors
from server.runtime.services import Services


def _record(services: Services, vector: Vectors | None = None, **fields: object) -> None:
    monitor = services.drift
    if monitor is None:
        return
    try:
        monitor.observe(observation(at=time.time(), **fields), vector)  # type: ignore[arg-type]
    except Exception as exc:  # drift is advisory: a bug here must not cost the user the answer
        logger.opt(exception=exc).warning("drift observation dropped")


async def answers(
    services: Services, ctx: RequestContext, question: str, events: AsyncIterator[AnswerEvent]
) -> AsyncIterator[AnswerEvent]:
    """/v1/ask events as they are, plus retrieval spans and one drift observation at the end."""
    vector: Vectors | None = None
    async with closing(events):
        async for event in events:
            if isinstance(event, Retrieved):
                vector = event.query_vector
                if services.tracing.enabled:
                    services.tracing.stages(
                        [
                            ("retrieval.embed", event.embed_ms),
                            ("retrieval.search", event.search_ms),
                        ],
                        {
                            "ggserve.request_id": ctx.request_id,
                            "ggserve.sources": len(event.sources),
                        },
                    )
            elif isinstance(event, Done):
                answer = event.answer
                _record(
                    services,
                    vector,
                    route="ask",
                    query=question,
                    finish_reason=answer.finish_reason,
                    answer_tokens=answer.usage.completion_tokens,
                    top_score=answer.top_score,
                    no_context=answer.no_context if _retrieved(answer) else None,
                )
            yield event


async def generations(
    services: Services, query: str, items: AsyncIterator[GenerationItem]
) -> AsyncIterator[GenerationItem]:
    """A chat completion's items as they are, plus one drift observation at the end."""
    async with closing(items):
        async for item in items:
            if isinstance(item, Completed):
                _record(
                    services,
                    route="chat",
                    query=query,
                    finish_reason=item.finish_reason,
                    answer_tokens=item.usage.completion_tokens,
                )
            yield item


def _retrieved(answer: Answer) -> bool:
    """Whether retrieval ran for this answer (otherwise no_context means nothing)."""
    return answer.top_score is not None or answer.no_context or answer.grounded


def last_user_message(messages: list[dict[str, str]]) -> str:
    """The question a chat asks: its last user message (empty when it has none)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return message.get("content", "")
    return ""
