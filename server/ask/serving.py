"""/v1/ask: question → agent (retrieve → grounded answer) → answer with sources, usage, timings.

The agent is the built-in ``RagAgent`` or the class named by ``GGSERVE_AGENT``; it reaches the
model only through ``ctx.chat``, which here runs over the shared ``GenerationService`` so
guardrails, metrics, token limits and cancellation apply exactly as for the OpenAI routes.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import cast

from sse_starlette import EventSourceResponse
from starlette.requests import Request

from server.agents.engine_chat import engine_token_counter
from server.agents.rag_agent import RagAgent
from server.agents.runtime import ASK_RUNTIME, AskRuntime
from server.agents.streams import closing
from server.agents.types import (
    AgentContext,
    AgentError,
    Answer,
    AnswerEvent,
    AnswerTimings,
    ChatFn,
    Delta,
    Done,
    Messages,
    QuestionTooLongError,
    Retrieved,
    answer_from_stream,
)
from server.agents.types import Source as AgentSource
from server.ask.protocol import AskRequest, AskResponse, AskTimings, AskUsage, Source
from server.engine.types import (
    EngineEvent,
    FinishEvent,
    FinishReason,
    SamplingParams,
    Timings,
    TokenEvent,
    Usage,
)
from server.errors import InvalidRequestError, ServiceUnavailableError
from server.generation import (
    GenerationService,
    RequestContext,
    TextDelta,
    until_disconnected,
)
from server.rag.errors import RagError
from server.security.guardrails import REFUSAL
from server.services import Services


def ask_usage(usage: Usage) -> AskUsage:
    return AskUsage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        cached_prompt_tokens=usage.cached_prompt_tokens,
    )


def _tokens_per_s(usage: Usage, timings: Timings | None) -> float | None:
    if timings is None or usage.completion_tokens < 2 or timings.decode_ms <= 0:
        return None
    return (usage.completion_tokens - 1) / (timings.decode_ms / 1000)


def ask_timings(answer: Answer, total_ms: float) -> AskTimings:
    t = answer.timings
    return AskTimings(
        queue_ms=round(t.queue_ms, 1),
        ttft_ms=round(t.ttft_ms, 1),
        total_ms=round(total_ms, 1),
        tokens_per_s=_tokens_per_s(answer.usage, answer.engine_timings),
        embed_ms=round(t.embed_ms, 2),
        search_ms=round(t.search_ms, 2),
        generate_ms=round(t.generate_ms, 1),
    )


def ask_sources(sources: list[AgentSource]) -> list[Source]:
    return [
        Source(
            n=s.n,
            document=s.document,
            title=s.title or None,
            heading=s.heading or None,
            score=s.score,
            snippet=s.snippet,
        )
        for s in sources
    ]


class AskServing:
    """Answers questions through the configured agent."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def _runtime(self) -> AskRuntime:
        runtime = self.services.extras.get(ASK_RUNTIME)
        if isinstance(runtime, AskRuntime):
            return runtime
        if self.services.settings.index_path is not None or self.services.settings.agent:
            raise ServiceUnavailableError(
                "the document index / agent is not loaded yet; see /ready for the reason",
                code="rag_not_ready",
                headers={"Retry-After": "5"},
            )
        return AskRuntime(RagAgent(), None)

    async def ask(
        self,
        body: AskRequest,
        ctx: RequestContext,
        generation: GenerationService,
        http_request: Request,
    ) -> AskResponse | EventSourceResponse:
        started = time.perf_counter()
        if generation.input_violation(body.question):
            ctx.log_fields["finish_reason"] = "content_filter"
            return self._refused(ctx)
        runtime = self._runtime()
        settings = self.services.settings
        engine = generation.engine
        agent_ctx = AgentContext(
            settings=settings,
            retriever=runtime.retriever,
            chat=_generation_chat(ctx, generation, body.max_tokens),
            request_id=ctx.request_id,
            params=SamplingParams(
                max_tokens=body.max_tokens or settings.max_tokens_default,
                temperature=body.temperature,
                top_p=body.top_p,
                seed=body.seed,
            ),
            top_k=body.top_k,
            count_tokens=engine_token_counter(engine),
            n_ctx=engine.n_ctx_per_slot,
        )
        events = runtime.agent.answer_stream(body.question, agent_ctx)
        if body.stream:
            # The first event (retrieval) is awaited here so that errors before any output
            # still become a JSON error response rather than a broken stream.
            first = await until_disconnected(http_request, _first(events))
            return EventSourceResponse(self._events(ctx, first, events, started))
        answer = await until_disconnected(http_request, _answer(events))
        self._log(ctx, answer)
        return AskResponse(
            id=ctx.request_id,
            model=self.services.model_id,
            answer=answer.text,
            finish_reason=answer.finish_reason,
            grounded=answer.grounded,
            no_context=answer.no_context,
            sources=ask_sources(answer.sources),
            usage=ask_usage(answer.usage),
            timings=ask_timings(answer, (time.perf_counter() - started) * 1000),
        )

    def _refused(self, ctx: RequestContext) -> AskResponse:
        zero = Answer(REFUSAL, [], Usage(0, 0, 0), "content_filter", AnswerTimings(), False)
        return AskResponse(
            id=ctx.request_id,
            model=self.services.model_id,
            answer=REFUSAL,
            finish_reason="content_filter",
            grounded=False,
            usage=ask_usage(zero.usage),
            timings=ask_timings(zero, 0.0),
        )

    def _log(self, ctx: RequestContext, answer: Answer) -> None:
        t = answer.timings
        ctx.log_fields.update(
            finish_reason=answer.finish_reason,
            grounded=answer.grounded,
            no_context=answer.no_context,
            sources=len(answer.sources),
            embed_ms=round(t.embed_ms, 2),
            search_ms=round(t.search_ms, 2),
        )

    async def _events(
        self,
        ctx: RequestContext,
        first: AnswerEvent,
        events: AsyncIterator[AnswerEvent],
        started: float,
    ) -> AsyncIterator[dict[str, str]]:
        async with closing(events):
            event: AnswerEvent | None = first
            while event is not None:
                if isinstance(event, Retrieved):
                    data = {
                        "sources": [s.model_dump() for s in ask_sources(event.sources)],
                        "grounded": event.grounded,
                        "no_context": event.no_context,
                    }
                    yield {"event": "sources", "data": json.dumps(data)}
                elif isinstance(event, Delta):
                    yield {"event": "token", "data": event.text}
                elif isinstance(event, Done):
                    answer = event.answer
                    self._log(ctx, answer)
                    final = {
                        "finish_reason": answer.finish_reason,
                        "sources": [s.model_dump() for s in ask_sources(answer.sources)],
                        "grounded": answer.grounded,
                        "no_context": answer.no_context,
                        "usage": ask_usage(answer.usage).model_dump(),
                        "timings": ask_timings(
                            answer, (time.perf_counter() - started) * 1000
                        ).model_dump(),
                    }
                    yield {"event": "done", "data": json.dumps(final)}
                    return
                event = await anext(events, None)


def _agent_errors_as_api_errors(exc: Exception) -> Exception:
    if isinstance(exc, QuestionTooLongError):
        return InvalidRequestError(str(exc), code="question_too_long", param="question")
    if isinstance(exc, RagError):
        return ServiceUnavailableError(f"retrieval failed: {exc}", code="retrieval_failed")
    if isinstance(exc, AgentError):
        return InvalidRequestError(str(exc), code="agent_error")
    return exc


async def _first(events: AsyncIterator[AnswerEvent]) -> AnswerEvent:
    try:
        return await anext(events)
    except StopAsyncIteration as exc:
        raise RuntimeError("the agent produced no events") from exc
    except (AgentError, RagError) as exc:
        raise _agent_errors_as_api_errors(exc) from exc


async def _answer(events: AsyncIterator[AnswerEvent]) -> Answer:
    try:
        return await answer_from_stream(events)
    except (AgentError, RagError) as exc:
        raise _agent_errors_as_api_errors(exc) from exc


def _generation_chat(
    ctx: RequestContext, generation: GenerationService, requested_max_tokens: int | None
) -> ChatFn:
    """``ctx.chat`` over the shared generation service (guardrails, metrics, limits)."""

    async def chat(
        messages: Messages, params: SamplingParams, request_id: str
    ) -> AsyncIterator[EngineEvent]:
        prompt = generation.engine.chat_prompt_tokens(messages)
        max_tokens = generation.resolve_max_tokens(requested_max_tokens, len(prompt))
        items = generation.stream(ctx, prompt, replace(params, max_tokens=max_tokens))
        async with closing(items):
            async for item in items:
                if isinstance(item, TextDelta):
                    yield TokenEvent(item.text, -1)
                else:
                    await generation.charge(ctx, item)
                    # "content_filter" is not an engine reason; the answer passes it through.
                    reason = cast(FinishReason, item.finish_reason)
                    yield FinishEvent(reason, item.usage, item.timings)

    return chat
