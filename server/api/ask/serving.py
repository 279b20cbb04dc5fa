"""/v1/ask: question → agent (retrieve → grounded answer) → answer with sources, usage, timings.

The agent is the built-in ``RagAgent`` or the class named by ``GGSERVE_AGENT``; it reaches the
model only through ``ctx.chat``, which here runs over the shared ``GenerationService`` so
guardrails, metrics, token limits and cancellation apply exactly as for the OpenAI routes, and
streams go through the same ``open_stream`` helper.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import replace
from typing import Any, cast

from starlette.requests import Request

from server.agents.rag_agent import RagAgent
from server.agents.runtime import AskRuntime
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
from server.api.ask.protocol import AskRequest, AskResponse, AskTimings, AskUsage, Source
from server.api.errors import BadRequestError, ServiceUnavailableError
from server.api.generation import (
    Completed,
    GenerationService,
    RequestContext,
    ResponseRecord,
    TextDelta,
    until_disconnected,
)
from server.api.streaming import Frame, SseResponse, open_stream
from server.engine.planner import common_prefix_length
from server.engine.types import (
    EngineEvent,
    FinishEvent,
    FinishReason,
    SamplingParams,
    Timings,
    TokenEvent,
    Usage,
)
from server.rag.errors import RagError
from server.runtime.services import Services
from server.security.guardrails import REFUSAL


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
        if self.services.ask is not None:
            return self.services.ask
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
    ) -> AskResponse | SseResponse:
        started = time.perf_counter()
        # An agent may call the model several times, or not at all: the record is the answer.
        ctx.record = ResponseRecord(ctx.request_id, "ask", body.question, per_answer=True)
        generation.pick_adapter(ctx, None)  # the default adapter, or a rollout's arm
        if violation := generation.input_violation(body.question):
            ctx.log_fields["guardrail"] = violation
            events: AsyncIterator[AnswerEvent] = _refusal()
        else:
            events = self._answer_events(body, ctx, generation)
        sampling = SamplingParams(
            max_tokens=body.max_tokens or self.services.settings.max_tokens_default,
            temperature=body.temperature,
            top_p=body.top_p,
            seed=body.seed,
        )
        events = _recording(ctx, generation, body.question, sampling, events)
        if body.stream:
            fmt = AskEventFormat(ctx, started)
            return await open_stream(
                http_request, ctx, _api_errors(events), fmt, is_output=_is_output
            )
        answer = await until_disconnected(http_request, answer_from_stream(_api_errors(events)))
        _log(ctx, answer)
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

    def _answer_events(
        self, body: AskRequest, ctx: RequestContext, generation: GenerationService
    ) -> AsyncIterator[AnswerEvent]:
        runtime = self._runtime()
        settings = self.services.settings
        # Checked before retrieval, so a request that can never run costs nothing.
        max_tokens = (
            generation.resolve_max_tokens(body.max_tokens, 0)
            if body.max_tokens is not None
            else settings.max_tokens_default
        )
        agent_ctx = AgentContext(
            settings=settings,
            retriever=runtime.retriever,
            chat=_generation_chat(ctx, generation, body.max_tokens),
            request_id=ctx.request_id,
            params=SamplingParams(
                max_tokens=max_tokens,
                temperature=body.temperature,
                top_p=body.top_p,
                seed=body.seed,
            ),
            top_k=body.top_k,
            count_tokens=generation.count_chat_tokens,
            n_ctx=generation.n_ctx,
        )
        return runtime.agent.answer_stream(body.question, agent_ctx)


def _is_output(event: AnswerEvent) -> bool:
    """Admission ends at the first answer text: retrieval and prompt evaluation are done."""
    return isinstance(event, Delta | Done)


async def _refusal() -> AsyncIterator[AnswerEvent]:
    yield Delta(REFUSAL)
    yield Done(Answer(REFUSAL, [], Usage(0, 0, 0), "content_filter", AnswerTimings(), False))


def _log(ctx: RequestContext, answer: Answer) -> None:
    t = answer.timings
    ctx.log_fields.update(
        finish_reason=answer.finish_reason,
        grounded=answer.grounded,
        no_context=answer.no_context,
        sources=len(answer.sources),
        embed_ms=round(t.embed_ms, 2),
        search_ms=round(t.search_ms, 2),
    )


class AskEventFormat:
    """/v1/ask's own events: ``sources``, ``token`` (raw text), ``done``, ``error``."""

    def __init__(self, ctx: RequestContext, started: float) -> None:
        self.ctx, self.started = ctx, started

    def frames(self, event: AnswerEvent) -> Iterable[Frame]:
        if isinstance(event, Retrieved):
            data = {
                "sources": [s.model_dump() for s in ask_sources(event.sources)],
                "grounded": event.grounded,
                "no_context": event.no_context,
            }
            yield {"event": "sources", "data": json.dumps(data)}
        elif isinstance(event, Delta):
            yield {"event": "token", "data": event.text}
        else:
            answer = event.answer
            _log(self.ctx, answer)
            total_ms = (time.perf_counter() - self.started) * 1000
            final = {
                "id": self.ctx.request_id,  # what /v1/feedback takes as response_id
                "finish_reason": answer.finish_reason,
                "sources": [s.model_dump() for s in ask_sources(answer.sources)],
                "grounded": answer.grounded,
                "no_context": answer.no_context,
                "usage": ask_usage(answer.usage).model_dump(),
                "timings": ask_timings(answer, total_ms).model_dump(),
            }
            yield {"event": "done", "data": json.dumps(final)}

    def error_frames(self, body: dict[str, Any]) -> Iterable[Frame]:
        yield {"event": "error", "data": json.dumps(body)}

    def closing_frames(self) -> Iterable[Frame]:
        return ()


def _as_api_error(exc: AgentError | RagError) -> Exception:
    if isinstance(exc, QuestionTooLongError):
        return BadRequestError(str(exc), code="question_too_long", param="question")
    if isinstance(exc, RagError):
        return ServiceUnavailableError(f"retrieval failed: {exc}", code="retrieval_failed")
    return BadRequestError(str(exc), code="agent_error")


async def _api_errors(events: AsyncIterator[AnswerEvent]) -> AsyncIterator[AnswerEvent]:
    """The agent's events, with its own errors turned into API errors."""
    async with closing(events):
        try:
            async for event in events:
                yield event
        except (AgentError, RagError) as exc:
            raise _as_api_error(exc) from exc


async def _recording(
    ctx: RequestContext,
    generation: GenerationService,
    question: str,
    params: SamplingParams,
    events: AsyncIterator[AnswerEvent],
) -> AsyncIterator[AnswerEvent]:
    """The agent's events as they are; retrieval goes into the trace and the response record,
    and the final answer ends the record (capture and drift) once."""
    record = ctx.record
    async with closing(events):
        async for event in events:
            if isinstance(event, Retrieved):
                _trace_retrieval(generation, ctx, event)
                if record is not None:
                    record.sources = [s.model_dump() for s in ask_sources(event.sources)]
                    record.query_vector = event.query_vector
            elif record is not None and isinstance(event, Done):
                if record.messages is None:  # answered without the model (refusal, no context)
                    record.messages = [{"role": "user", "content": question}]
                answer = event.answer
                record.top_score = answer.top_score
                record.no_context = answer.no_context if _retrieved(answer) else None
                generation.record(ctx, answer.text, answer.usage, answer.finish_reason, params)
            yield event


def _trace_retrieval(generation: GenerationService, ctx: RequestContext, event: Retrieved) -> None:
    if generation.tracing.enabled:
        generation.tracing.stages(
            [("retrieval.embed", event.embed_ms), ("retrieval.search", event.search_ms)],
            {"ggserve.request_id": ctx.request_id, "ggserve.sources": len(event.sources)},
        )


def _retrieved(answer: Answer) -> bool:
    """Whether retrieval ran for this answer (otherwise no_context means nothing)."""
    return answer.top_score is not None or answer.no_context or answer.grounded


def _generation_chat(
    ctx: RequestContext, generation: GenerationService, requested_max_tokens: int | None
) -> ChatFn:
    """``ctx.chat`` over the shared generation service (guardrails, metrics, limits)."""

    async def chat(
        messages: Messages, params: SamplingParams, request_id: str
    ) -> AsyncIterator[EngineEvent]:
        if ctx.record is not None:  # what the model saw: system prompt, passages, question
            ctx.record.messages = [dict(m) for m in messages]
        prompt = generation.chat_prompt(messages)
        if messages and messages[0].get("role") == "system":
            # The agent's system prompt is the server's own: every key may share its cache.
            opening = generation.chat_prompt(list(messages[:1]))
            ctx.shared_prefix = common_prefix_length(opening, prompt)
        max_tokens = generation.resolve_max_tokens(requested_max_tokens, len(prompt))
        items = generation.stream(ctx, prompt, replace(params, max_tokens=max_tokens))
        async with closing(items):
            async for item in items:
                if isinstance(item, TextDelta):
                    yield TokenEvent(item.text, -1)
                elif isinstance(item, Completed):
                    # "content_filter" is not an engine reason; the answer passes it through.
                    reason = cast(FinishReason, item.finish_reason)
                    yield FinishEvent(reason, item.usage, item.timings)

    return chat
