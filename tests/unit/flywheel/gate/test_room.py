"""The room of a passing answer: runner-ups that fail it count, runner-ups that still pass do not.

A scripted "model" over a tiny vocabulary stands in for llama.cpp (the flywheel test runs the
real one): each context has a greedy next token, and some have a runner-up with a lead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from flywheel.gate.room import Room
from flywheel.gate.runner import ModelResult, run_model
from flywheel.gate.suite import EvalItem
from server.engine.types import (
    ChatFormat,
    FinishEvent,
    GenerationRequest,
    Timings,
    TokenEvent,
    TokenLogprob,
    Usage,
)

WORDS = {1: "A", 2: " dog", 3: " has", 4: " four", 5: " 4", 6: "5", 7: " legs", 8: ".", 9: "The"}
EOS = 0
PROMPT = [100, 101]
# context after the prompt -> (greedy token, runner-up and its lead, or None)
NEXT: dict[tuple[int, ...], tuple[int, tuple[int, float] | None]] = {
    (): (1, (9, 2.0)),  # "A" leads "The" by 2.0; "The dog has four legs." still passes
    (1,): (2, None),
    (1, 2): (3, None),
    (1, 2, 3): (4, (5, 0.06)),  # " four" leads " 4" by 0.06; " 4" goes on "5 legs." and fails
    (1, 2, 3, 4): (7, (8, 0.01)),  # after the expected word: never probed
    (1, 2, 3, 4, 7): (8, None),
    (1, 2, 3, 5): (6, None),
    (1, 2, 3, 5, 6): (7, None),
    (1, 2, 3, 5, 6, 7): (8, None),
    (9,): (2, None),
    (9, 2): (3, None),
    (9, 2, 3): (4, None),
    (9, 2, 3, 4): (7, None),
    (9, 2, 3, 4, 7): (8, None),
}


class ScriptedEngine:
    """Just what the eval runner and the room probe call."""

    n_ctx_per_slot = 64

    def __init__(self) -> None:
        self.requests: list[GenerationRequest] = []

    chat_format = ChatFormat(None, bos_token="", eos_token="")

    def tokenize(self, text: str, **_: Any) -> list[int]:
        return list(PROMPT)

    def detokenize(self, tokens: list[int]) -> str:
        return "".join(WORDS.get(t, "") for t in tokens)

    def generate(self, request: GenerationRequest) -> AsyncIterator[Any]:
        self.requests.append(request)
        return self._events(request)

    async def _events(self, request: GenerationRequest) -> AsyncIterator[Any]:
        context = tuple(request.prompt_tokens[len(PROMPT) :])
        for _ in range(request.params.max_tokens):
            token, runner_up = NEXT.get(context, (EOS, None))
            if token == EOS:
                break
            top = ((token, -0.1), (runner_up[0], -0.1 - runner_up[1])) if runner_up else ()
            logprob = TokenLogprob(token, -0.1, top) if request.params.logprobs else None
            yield TokenEvent(WORDS[token], token, logprob=logprob)
            context += (token,)
        usage = Usage(len(request.prompt_tokens), 0, 0)
        yield FinishEvent("stop", usage, Timings(0.0, 0.0, 0.0, 0.0, 0.0, 0))


ITEM = EvalItem("control", [{"role": "user", "content": "How many legs?"}], ("four",))


def _evaluate(room: bool) -> tuple[ModelResult, ScriptedEngine]:
    engine = ScriptedEngine()
    result = asyncio.run(run_model(engine, "m", [ITEM], max_tokens=16, room=room))  # type: ignore[arg-type]
    return result, engine


def test_the_room_is_the_least_lead_of_a_runner_up_that_fails_the_answer() -> None:
    result, _ = _evaluate(room=True)
    [item] = result.items
    assert item.passed and item.answer == "A dog has four legs."
    assert item.room == Room(lead=pytest.approx(0.06), at="A dog has", instead="A dog has 45 legs.")
    assert result.thinnest("control") is item


def test_without_room_nothing_is_probed_and_no_logprobs_are_asked() -> None:
    result, engine = _evaluate(room=False)
    assert result.items[0].room is None and not result.room_probed
    assert [r.params.logprobs for r in engine.requests] == [None]


def test_an_answer_no_runner_up_can_fail_has_no_room() -> None:
    item = EvalItem("control", ITEM.messages, ("dog",))  # " 4" and "The" both keep "dog"
    engine = ScriptedEngine()
    result = asyncio.run(run_model(engine, "m", [item], max_tokens=16, room=True))  # type: ignore[arg-type]
    assert result.items[0].passed and result.items[0].room is None
    assert len(engine.requests) == 2  # the answer, then "The" at the first token: it passes


def test_a_failing_answer_is_not_probed() -> None:
    item = EvalItem("control", ITEM.messages, ("cat",))
    engine = ScriptedEngine()
    result = asyncio.run(run_model(engine, "m", [item], max_tokens=16, room=True))  # type: ignore[arg-type]
    assert not result.items[0].passed and result.items[0].room is None
    assert len(engine.requests) == 1
