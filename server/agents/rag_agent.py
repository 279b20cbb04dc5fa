"""The built-in agent: retrieve passages above the threshold, answer from them, cite them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from server.agents.prompt import REFUSAL, grounded_messages, plain_messages
from server.agents.streams import closing
from server.agents.types import (
    ZERO_USAGE,
    AgentContext,
    AgentError,
    Answer,
    AnswerEvent,
    AnswerTimings,
    Delta,
    Done,
    Messages,
    QuestionTooLongError,
    Retrieved,
    Source,
    answer_from_stream,
)
from server.engine.types import FinishEvent, TokenEvent
from server.rag.retriever import Hit


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000


class RagAgent:
    """Retrieval-augmented answers.

    Retrieves ``rag_top_k`` passages scoring at least ``rag_score_threshold``, numbers them in
    a prompt that fences them off as data, and streams the model's answer with the sources.
    When nothing passes the threshold, ``rag_no_context`` decides: ``refuse`` answers
    "I don't know" without calling the model, ``answer`` lets the model answer on its own and
    flags the answer ``no_context``. Without an index it is a plain assistant.
    """

    async def answer(self, question: str, ctx: AgentContext) -> Answer:
        """The whole answer at once."""
        return await answer_from_stream(self.answer_stream(question, ctx))

    async def answer_stream(self, question: str, ctx: AgentContext) -> AsyncIterator[AnswerEvent]:
        """``Retrieved``, then the answer text as ``Delta`` s, then ``Done``."""
        started = time.perf_counter()
        settings = ctx.settings
        hits: list[Hit] = []
        embed_ms = search_ms = 0.0
        top_score: float | None = None
        query_vector = None
        if ctx.retriever is not None:
            k = ctx.top_k or settings.rag_top_k
            result = await asyncio.to_thread(
                ctx.retriever.search, question, k, settings.rag_score_threshold
            )
            hits, embed_ms, search_ms = result.hits, result.embed_ms, result.search_ms
            top_score, query_vector = result.top_score, result.query_vector
        messages, hits = self._fit(ctx, question, hits)
        no_context = ctx.retriever is not None and not hits
        sources = [Source(h.n, h.document, h.title, h.heading, h.score, h.snippet) for h in hits]
        yield Retrieved(
            sources, bool(hits), no_context, embed_ms, search_ms, top_score, query_vector
        )

        if no_context and settings.rag_no_context == "refuse":
            yield Delta(REFUSAL)
            timings = AnswerTimings(embed_ms, search_ms, total_ms=_ms_since(started))
            yield Done(
                Answer(
                    REFUSAL, [], ZERO_USAGE, "no_context", timings, False, True, top_score=top_score
                )
            )
            return

        generate_started = time.perf_counter()
        parts: list[str] = []
        finish: FinishEvent | None = None
        async with closing(ctx.chat(messages, ctx.params, ctx.request_id)) as events:
            async for event in events:
                if isinstance(event, TokenEvent):
                    if event.text:
                        parts.append(event.text)
                        yield Delta(event.text)
                elif isinstance(event, FinishEvent):
                    finish = event
        if finish is None:
            raise AgentError("generation ended without a finish event")
        timings = AnswerTimings(
            embed_ms=embed_ms,
            search_ms=search_ms,
            generate_ms=_ms_since(generate_started),
            queue_ms=finish.timings.queue_ms,
            ttft_ms=finish.timings.ttft_ms,
            total_ms=_ms_since(started),
        )
        answer = Answer(
            text="".join(parts).strip(),
            sources=sources,
            usage=finish.usage,
            finish_reason=finish.finish_reason,
            timings=timings,
            grounded=bool(hits),
            no_context=no_context,
            engine_timings=finish.timings,
            top_score=top_score,
        )
        yield Done(answer)

    def _fit(self, ctx: AgentContext, question: str, hits: list[Hit]) -> tuple[Messages, list[Hit]]:
        """Messages for ``hits``, dropping the lowest-ranked passages until the prompt leaves
        room for the answer; refuses a question that does not fit on its own."""
        system = ctx.settings.system_prompt
        if ctx.count_tokens is None or ctx.n_ctx is None:
            return (
                grounded_messages(system, question, hits)
                if hits
                else plain_messages(system, question)
            ), hits
        reserve = min(ctx.params.max_tokens, ctx.n_ctx // 4)
        limit = ctx.n_ctx - reserve
        alone = ctx.count_tokens(plain_messages(system, question))
        if alone > limit:
            raise QuestionTooLongError(
                f"the question takes {alone} tokens with the system prompt; this model answers "
                f"questions of up to {limit} (context {ctx.n_ctx}, {reserve} kept for the "
                "answer). Shorten the question."
            )
        while hits:
            messages = grounded_messages(system, question, hits)
            if ctx.count_tokens(messages) <= limit:
                return messages, hits
            hits = hits[:-1]
        return plain_messages(system, question), hits
