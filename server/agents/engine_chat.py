"""``ctx.chat`` and ``ctx.count_tokens`` over an :class:`~server.engine.types.Engine`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from server.agents.streams import closing
from server.agents.types import ChatFn, Messages
from server.chat.prompt import ChatPrompt
from server.engine.types import Engine, EngineEvent, GenerationRequest, SamplingParams


def engine_chat(engine: Engine) -> ChatFn:
    """A ``ChatFn`` that generates straight from ``engine`` (tests, CLI, benchmarks; the HTTP
    layer wraps its own generation service instead, to keep metrics and guardrails)."""

    prompt = ChatPrompt(engine)

    async def chat(
        messages: Messages, params: SamplingParams, request_id: str
    ) -> AsyncIterator[EngineEvent]:
        request = GenerationRequest(request_id, prompt.tokens(messages), params)
        async with closing(engine.generate(request)) as events:
            async for event in events:
                yield event

    return chat


def engine_token_counter(engine: Engine) -> Callable[[Messages], int]:
    """``ctx.count_tokens`` for ``engine``."""
    prompt = ChatPrompt(engine)
    return lambda messages: len(prompt.tokens(messages))
