"""Answer every eval item with one GGUF, through the same engine and chat template that serve it.

Greedy decoding, so a candidate and its baseline are compared on their most likely answers and
a re-run gives the same table. Items are submitted together: the engine batches them as it
batches users. With a retriever, each question is asked a second time through the RAG agent
(what ``/v1/ask`` does), giving the RAG fact rate beside the closed-book one. With ``room``,
each passing closed-book answer is also probed for how close it came to failing (room.py).

The engine is built by ``engine_config`` from the same ``Settings`` (GGSERVE_* environment) the
server reads, so a candidate is gated under the configuration that will serve it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from flywheel.gate.generate import token_steps
from flywheel.gate.room import Room, room_of
from flywheel.gate.suite import EvalItem
from server.agents.engine_chat import engine_chat, engine_token_counter
from server.agents.rag_agent import RagAgent
from server.agents.types import AgentContext, Searcher
from server.chat.prompt import ChatPrompt
from server.engine.types import Engine, GenerationRequest, SamplingParams
from server.runtime.engine_config import engine_config
from server.settings import Settings

DEFAULT_MAX_TOKENS = 64
EVAL_MAX_QUEUE = 4096  # every item is submitted at once; the engine works through them


@dataclass
class ItemResult:
    """One item's answer and verdict."""

    suite: str
    question: str
    expected: list[str]
    answer: str
    passed: bool
    mode: str  # "chat" (closed-book) or "rag"
    room: Room | None = None  # asked for, passing, and some runner-up fails it


@dataclass
class ModelResult:
    """All answers of one model."""

    model: str
    items: list[ItemResult] = field(default_factory=list)
    seconds: float = 0.0
    room_probed: bool = False  # whether passing answers were probed for their room

    def rate(self, suite: str | None = None, mode: str = "chat") -> float | None:
        """Share of passing items (of one suite, or all); None when there are none."""
        chosen = [i for i in self.items if i.mode == mode and (suite is None or i.suite == suite)]
        return sum(i.passed for i in chosen) / len(chosen) if chosen else None

    def thinnest(self, suite: str) -> ItemResult | None:
        """The closed-book item of ``suite`` that passed with the least room, if any was probed."""
        probed = [i for i in self.items if i.suite == suite and i.room is not None]
        return min(probed, key=lambda i: i.room.lead if i.room else 0.0, default=None)


def load_engine(
    model: Path, settings: Settings, *, adapter: tuple[Path, float] | None = None
) -> Engine:
    """The serving engine over ``model``, configured by ``settings`` as the server would be;
    with ``adapter`` (a GGUF LoRA and its scale) applied to every answer, as a candidate that
    ships as an adapter is served: base weights as they are, ``s·B(A·x)`` added at run time."""
    from server.engine.llama_engine import LlamaEngine

    if adapter is not None:
        settings = settings.model_copy(update={"lora_path": adapter[0], "lora_scale": adapter[1]})
    elif model != settings.model_path:
        # As serving does for a registry version: the runtime LoRA was for the configured base.
        settings = settings.model_copy(update={"lora_path": None})
    # Speculation off: how many tokens it drafts depends on measured step times, and past 512
    # cached tokens llama.cpp's CPU kernels round a drafted row differently from a lone one, so
    # a model could "regress" against itself. It changes speed, never what the model knows.
    return LlamaEngine(
        engine_config(settings, model_path=model, max_queue=EVAL_MAX_QUEUE, speculative="off")
    )


async def run_model(
    engine: Engine,
    name: str,
    items: list[EvalItem],
    *,
    retriever: Searcher | None = None,
    settings: Settings | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    room: bool = False,
    on_item: Callable[[], None] | None = None,
) -> ModelResult:
    """Answer ``items`` closed-book, and through the RAG agent when a retriever is given."""
    started = time.perf_counter()
    chat = ChatPrompt(engine)
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    # The runner-up of every token, for the room; the greedy answer itself is the same.
    closed_params = SamplingParams(
        max_tokens=max_tokens, temperature=0.0, logprobs=2 if room else None
    )

    async def closed_book(index: int, item: EvalItem) -> ItemResult:
        tokens = chat.tokens(item.messages)
        request = GenerationRequest(f"eval-{index}", tokens, closed_params)
        steps = await token_steps(engine, request, f"on {item.question!r}")
        result = _result(item, "".join(s.text for s in steps), "chat")
        if room and result.passed:
            result.room = await room_of(
                engine, item, tokens, steps, max_tokens=max_tokens, request_id=f"eval-{index}"
            )
        if on_item is not None:
            on_item()
        return result

    async def with_rag(index: int, item: EvalItem) -> ItemResult:
        assert settings is not None
        context = AgentContext(
            settings=settings,
            retriever=retriever,
            chat=engine_chat(engine),
            request_id=f"eval-rag-{index}",
            params=params,
            count_tokens=engine_token_counter(engine),
            n_ctx=engine.n_ctx_per_slot,
        )
        answer = await RagAgent().answer(item.question, context)
        if on_item is not None:
            on_item()
        return _result(item, answer.text, "rag")

    jobs = [closed_book(i, item) for i, item in enumerate(items)]
    if retriever is not None:
        jobs += [with_rag(i, item) for i, item in enumerate(items)]
    results = await asyncio.gather(*jobs)
    return ModelResult(
        model=name, items=list(results), seconds=time.perf_counter() - started, room_probed=room
    )


def _result(item: EvalItem, answer: str, mode: str) -> ItemResult:
    return ItemResult(
        suite=item.suite,
        question=item.question,
        expected=list(item.expected),
        answer=answer.strip(),
        passed=item.passes(answer),
        mode=mode,
    )
