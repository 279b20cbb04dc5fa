"""/v1/ask: question → (retrieval) → grounded answer with usage and timings."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse
from starlette.requests import Request

from server.ask.protocol import AskRequest, AskResponse, AskTimings, AskUsage
from server.engine.types import SamplingParams
from server.generation import (
    Completed,
    GenerationService,
    RequestContext,
    TextDelta,
    chat_prompt_tokens,
    collect,
    until_disconnected,
)
from server.security.guardrails import REFUSAL
from server.services import Services


def ask_usage(done: Completed) -> AskUsage:
    u = done.usage
    return AskUsage(
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        total_tokens=u.total_tokens,
        cached_prompt_tokens=u.cached_prompt_tokens,
    )


def ask_timings(done: Completed, total_ms: float) -> AskTimings:
    t = done.timings
    return AskTimings(
        queue_ms=round(t.queue_ms, 1),
        ttft_ms=round(t.ttft_ms, 1),
        total_ms=round(total_ms, 1),
        tokens_per_s=done.tokens_per_s,
        generate_ms=round(t.total_ms, 1),
    )


class AskServing:
    """Answers questions with the model's own chat template and the configured system prompt."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def ask(
        self,
        body: AskRequest,
        ctx: RequestContext,
        generation: GenerationService,
        http_request: Request,
    ) -> AskResponse | EventSourceResponse:
        started = time.perf_counter()
        model = self.services.model_id
        if generation.input_violation(body.question):
            ctx.log_fields["finish_reason"] = "content_filter"
            zero = Completed("content_filter", *_zero_usage_timings())
            return AskResponse(
                id=ctx.request_id,
                model=model,
                answer=REFUSAL,
                finish_reason="content_filter",
                grounded=False,
                usage=ask_usage(zero),
                timings=ask_timings(zero, 0.0),
            )
        messages = [
            {"role": "system", "content": self.services.settings.system_prompt},
            {"role": "user", "content": body.question},
        ]
        prompt = chat_prompt_tokens(generation.engine, messages)
        max_tokens = generation.resolve_max_tokens(body.max_tokens, len(prompt))
        params = SamplingParams(
            max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p, seed=body.seed
        )
        items = generation.stream(ctx, prompt, params)
        if body.stream:
            first = await until_disconnected(http_request, anext(items))
            return EventSourceResponse(self._events(ctx, generation, first, items, started))
        text, done = await until_disconnected(http_request, collect(items))
        await generation.charge(ctx, done)
        return AskResponse(
            id=ctx.request_id,
            model=model,
            answer=text.strip(),
            finish_reason=done.finish_reason,
            grounded=False,
            usage=ask_usage(done),
            timings=ask_timings(done, (time.perf_counter() - started) * 1000),
        )

    async def _events(
        self,
        ctx: RequestContext,
        generation: GenerationService,
        first: TextDelta | Completed,
        items: AsyncIterator[TextDelta | Completed],
        started: float,
    ) -> AsyncIterator[dict[str, str]]:
        try:
            item: TextDelta | Completed | None = first
            while item is not None:
                if isinstance(item, TextDelta):
                    yield {"event": "token", "data": item.text}
                else:
                    await generation.charge(ctx, item)
                    final = {
                        "finish_reason": item.finish_reason,
                        "sources": [],
                        "grounded": False,
                        "usage": ask_usage(item).model_dump(),
                        "timings": ask_timings(
                            item, (time.perf_counter() - started) * 1000
                        ).model_dump(),
                    }
                    import json

                    yield {"event": "done", "data": json.dumps(final)}
                    return
                item = await anext(items, None)
        finally:
            await items.aclose()


def _zero_usage_timings() -> tuple[object, object]:
    from server.engine.types import Timings, Usage

    return Usage(0, 0, 0), Timings(0, 0, 0, 0, 0, 0)
