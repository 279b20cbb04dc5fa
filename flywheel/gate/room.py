"""How close a passing answer came to failing: its room.

At each token the greedy answer took before the expected text appeared, the runner-up is taken
instead and the answer finished greedily. The room is the smallest log-probability lead of a
greedy token over a runner-up that, taken, makes the answer fail: "A dog has" → " four" led
" 4", which goes on "A dog has 45 legs.", by 0.06 in a candidate that passed the gate on one
machine and was refused on another (docs/flywheel-experiments.md §3). A runner-up that still
leads to a passing answer ("In Italian, the capital of Italy is Rome.") does not count.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from flywheel.gate.generate import token_steps
from flywheel.gate.suite import EvalItem, normalise
from server.engine.types import (
    Engine,
    GenerationRequest,
    SamplingParams,
    TokenEvent,
)

MAX_PROBES = 24  # positions probed per answer: the expected text usually comes within a sentence
THIN_ROOM = 0.3  # log-prob; below this a re-run on other hardware is a coin toss


@dataclass(frozen=True)
class Room:
    """The smallest lead that keeps an answer passing, where it is, and what losing it gives."""

    lead: float
    at: str  # the answer up to the token whose runner-up fails it
    instead: str  # the whole answer with that runner-up taken


async def room_of(
    engine: Engine,
    item: EvalItem,
    prompt: list[int],
    steps: Sequence[TokenEvent],
    *,
    max_tokens: int,
    request_id: str,
) -> Room | None:
    """The room of the greedy answer ``steps`` (generated with ``logprobs`` ≥ 2) to ``item``.

    None when no runner-up before the expected text makes the answer fail.
    """
    probes: list[tuple[float, int, int]] = []  # (lead, position, runner-up token)
    text = ""
    for position, step in enumerate(steps[:MAX_PROBES]):
        if any(normalise(e) in normalise(text) for e in item.expected):
            break
        top = step.logprob.top if step.logprob is not None else ()
        if len(top) >= 2:
            probes.append((top[0][1] - top[1][1], position, top[1][0]))
        text += step.text

    async def taken(probe: tuple[float, int, int]) -> Room | None:
        lead, position, runner_up = probe
        forced = [s.token_id for s in steps[:position]] + [runner_up]
        request = GenerationRequest(
            f"{request_id}-room{position}",
            prompt + forced,
            SamplingParams(max_tokens=max(1, max_tokens - len(forced)), temperature=0.0),
        )
        rest = await token_steps(engine, request, "while probing the room")
        answer = engine.detokenize(forced) + "".join(s.text for s in rest)
        if item.passes(answer):
            return None
        return Room(lead=lead, at=engine.detokenize(forced[:-1]), instead=answer.strip())

    failing = [r for r in await asyncio.gather(*(taken(p) for p in probes)) if r is not None]
    return min(failing, key=lambda r: r.lead, default=None)
