"""A tiny custom agent for ggserve: glossary look-ups first, the built-in RAG agent otherwise.

Serve it with:

    PYTHONPATH=examples/agents GGSERVE_AGENT=glossary_agent:GlossaryAgent ggserve serve

An agent is any class, created without arguments, with ``async def answer(question, ctx)``
and ``answer_stream(question, ctx)``; ``ctx`` carries the settings, the retriever (or None)
and ``ctx.chat`` to generate with the served model.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from server.agents import (
    AgentContext,
    Answer,
    AnswerEvent,
    AnswerTimings,
    Delta,
    Done,
    RagAgent,
    Retrieved,
    answer_from_stream,
)
from server.agents.types import ZERO_USAGE

GLOSSARY = {
    "gguf": "GGUF is llama.cpp's single-file model format: weights, tokenizer and metadata.",
    "lora": "LoRA adapts a model by training small low-rank matrices beside frozen weights.",
    "rag": "RAG (retrieval-augmented generation) answers from passages retrieved at ask time.",
}
_DEFINE = re.compile(r"^\s*(?:what is|what's|define)\s+(?:an?\s+)?([\w-]+)\s*\??\s*$", re.I)


class GlossaryAgent:
    """Answers "what is X?" for glossary terms instantly; passes every other question on."""

    def __init__(self) -> None:
        self._fallback = RagAgent()

    async def answer(self, question: str, ctx: AgentContext) -> Answer:
        return await answer_from_stream(self.answer_stream(question, ctx))

    async def answer_stream(self, question: str, ctx: AgentContext) -> AsyncIterator[AnswerEvent]:
        match = _DEFINE.match(question)
        definition = GLOSSARY.get(match.group(1).lower()) if match else None
        if definition is None:
            async for event in self._fallback.answer_stream(question, ctx):
                yield event
            return
        yield Retrieved(sources=[], grounded=False, no_context=False)
        yield Delta(definition)
        yield Done(Answer(definition, [], ZERO_USAGE, "stop", AnswerTimings(), grounded=False))
