"""Schema → grammar conversion never stalls the event loop: large schemas convert in a worker
thread, and converted grammars are cached (issue 25, finding 8)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from server.api.openai.chat_request import LARGE_SCHEMA_CHARS, prepare_chat_off_loop, schema_chars
from server.api.openai.protocol import ChatCompletionRequest


class StubGeneration:
    """The part of GenerationService that preparing a chat uses."""

    template_source = ""

    def chat_prompt(self, messages: Any, **template_vars: Any) -> list[int]:
        return [1, 2, 3]

    def tokenize(
        self, text: str, *, add_special: bool = True, parse_special: bool = True
    ) -> list[int]:
        return [1]

    def resolve_max_tokens(self, requested: int | None, prompt_tokens: int) -> int:
        return 16


def _request(properties: int) -> ChatCompletionRequest:
    tag = uuid.uuid4().hex[:6]  # a schema never seen before: no cached grammar
    schema = {
        "type": "object",
        "properties": {f"field_{tag}_{i}": {"type": "string"} for i in range(properties)},
    }
    return ChatCompletionRequest.model_validate(
        {
            "messages": [{"role": "user", "content": "Fill it in."}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "r", "schema": schema},
            },
        }
    )


async def test_a_large_schema_converts_while_the_event_loop_keeps_running() -> None:
    request = _request(500)  # optional properties: the converter's rules grow quadratically
    assert schema_chars(request) > LARGE_SCHEMA_CHARS
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    start = time.perf_counter()
    chat = await prepare_chat_off_loop(request, StubGeneration())  # type: ignore[arg-type]
    took = time.perf_counter() - start
    done.set()
    await task
    assert chat.params.grammar and "field_" in chat.params.grammar
    assert took > 0.1, took  # the conversion was real work
    assert max(gaps) < took / 2, (max(gaps), took)  # and the loop ran meanwhile


async def test_a_repeated_schema_is_converted_once() -> None:
    request = _request(300)
    start = time.perf_counter()
    first = await prepare_chat_off_loop(request, StubGeneration())  # type: ignore[arg-type]
    cold = time.perf_counter() - start
    start = time.perf_counter()
    again = await prepare_chat_off_loop(request, StubGeneration())  # type: ignore[arg-type]
    warm = time.perf_counter() - start
    assert again.params.grammar == first.params.grammar
    assert warm < cold / 3, (warm, cold)
