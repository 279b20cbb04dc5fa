"""A scripted engine for fast unit tests of the HTTP layer (never instead of the real one:
tests/integration runs the same API against the real SmolLM2)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from server.engine.types import (
    ChatFormat,
    ContextLengthExceededError,
    EngineEvent,
    EngineStats,
    FinishEvent,
    GenerationRequest,
    InvalidRequestError,
    QueueFullError,
    Timings,
    TokenEvent,
    Usage,
)

# "role: content" per message, then "assistant:" (the fake tokenizer counts words).
FAKE_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"


@dataclass
class FakeEngine:
    """Answers every prompt with ``reply`` word by word; knobs make it fail on purpose."""

    reply: str = "Paris is the capital of France."
    n_ctx: int = 256
    queue_full: bool = False
    token_delay_s: float = 0.0
    explode: bool = False
    requests: list[GenerationRequest] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    active: int = 0
    adapters: dict[str, Path] = field(default_factory=dict)

    @property
    def n_ctx_per_slot(self) -> int:
        return self.n_ctx

    @property
    def n_vocab(self) -> int:
        return 1000

    @property
    def chat_format(self) -> ChatFormat:
        return ChatFormat(FAKE_TEMPLATE, bos_token="", eos_token="")

    @property
    def adapter_names(self) -> tuple[str, ...]:
        return tuple(self.adapters)

    async def load_adapter(self, name: str, path: Path, scale: float) -> None:
        if name in self.adapters:
            raise InvalidRequestError(f"an adapter named {name!r} is loaded already.", param="name")
        self.adapters[name] = path

    async def unload_adapter(self, name: str) -> None:
        if self.adapters.pop(name, None) is None:
            raise InvalidRequestError(f"no adapter named {name!r} is loaded.", param="name")

    def tokenize(
        self, text: str, *, add_special: bool = True, parse_special: bool = True
    ) -> list[int]:
        return [len(word) for word in text.split()] or [0]

    def token_piece(self, token: int) -> bytes:
        return b"x" * token

    def detokenize(self, tokens: list[int]) -> str:
        return " ".join("x" * t for t in tokens)

    def model_info(self) -> dict[str, object]:
        return {"architecture": "fake"}

    async def generate(self, request: GenerationRequest) -> AsyncIterator[EngineEvent]:
        if self.queue_full:
            raise QueueFullError(2.0)
        prompt, max_tokens = len(request.prompt_tokens), request.params.max_tokens
        if prompt + max_tokens > self.n_ctx:
            raise ContextLengthExceededError(prompt, max_tokens, self.n_ctx)
        self.requests.append(request)
        self.active += 1
        words = self.reply.split(" ")
        emitted, reason = 0, "stop"
        try:
            for i, word in enumerate(words):
                if emitted >= max_tokens:
                    reason = "length"
                    break
                if self.explode and i == 1:
                    raise RuntimeError("/secret/path/engine.py exploded")
                if self.token_delay_s:
                    await asyncio.sleep(self.token_delay_s)
                text = word if i == 0 else " " + word
                stop_hit = next((s for s in request.params.stop if s in text), None)
                if stop_hit:
                    break
                emitted += 1
                for index in range(request.n):  # choices interleave, as the real engine's do
                    yield TokenEvent(text=text, token_id=i, index=index)
            for index in range(request.n):
                yield FinishEvent(
                    finish_reason=reason,  # type: ignore[arg-type]
                    usage=Usage(prompt, emitted, 0),
                    timings=Timings(1.0, 2.0, 3.0, 4.0, 7.0, prompt),
                    index=index,
                )
        except (GeneratorExit, asyncio.CancelledError):
            self.cancelled.append(request.request_id)
            raise
        finally:
            self.active -= 1

    def stats(self) -> EngineStats:
        return EngineStats(slots_total=4, slots_active=self.active, queue_depth=0)

    def close(self) -> None:
        pass
