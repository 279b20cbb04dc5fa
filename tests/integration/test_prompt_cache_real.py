"""The RAM prompt cache on the real SmolLM2: a conversation evicted from its slot comes back
restored from host RAM, with the same greedy answer as a fresh prefill, and a state llama.cpp
refuses falls back to prefilling, never to an error.

One slot, so every other conversation evicts the first. Flash attention is off, as in the
other bit-exact comparisons (docs/engine.md, "flash_attn").
"""

from __future__ import annotations

import dataclasses
import glob
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.chat.prompt import ChatPrompt
from server.engine.config import EngineConfig
from server.engine.llama_engine import LlamaEngine
from server.engine.types import SamplingParams
from tests.integration.test_engine import MODEL, run

pytestmark = pytest.mark.slow


def _facts(place: str, thing: str) -> str:
    return " ".join(f"Fact {i}: the {place} in town {i} holds {i * 7} {thing}." for i in range(30))


PARAMS = SamplingParams(max_tokens=12, temperature=0.0)


def _conversation(topic: str, question: str, facts: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": f"{facts} Answer questions about {topic}."},
        {"role": "user", "content": question},
    ]


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaEngine]:
    config = EngineConfig(
        model_path=MODEL, n_slots=1, n_ctx=1024, flash_attn=False, prompt_cache_mb=256
    )
    eng = LlamaEngine(config)
    yield eng
    eng.close()


async def test_an_evicted_conversation_is_restored_with_the_same_greedy_answer(
    engine: LlamaEngine,
) -> None:
    chat = ChatPrompt(engine)
    first = chat.tokens(
        _conversation("depots", "How many boxes are in town 12?", _facts("depot", "boxes"))
    )
    other = chat.tokens(_conversation("ships", "Name a large ship.", _facts("port", "ships")))
    assert len(first) > 300

    fresh = await run(engine, first, PARAMS)  # the slot was empty: prefilled whole
    await run(engine, other, PARAMS)  # evicts the first conversation: its state is saved
    saved = engine.stats()
    assert saved.prompt_cache_saves_total >= 1 and saved.prompt_cache_bytes > 0

    again = await run(engine, first, PARAMS)
    after = engine.stats()
    assert after.prompt_cache_hits_total == saved.prompt_cache_hits_total + 1
    assert again.finish.usage.cached_prompt_tokens == len(first) - 1
    assert again.finish.timings.prompt_tokens_evaluated == 1
    assert again.tokens == fresh.tokens


async def test_a_refused_state_falls_back_to_prefill(engine: LlamaEngine) -> None:
    chat = ChatPrompt(engine)
    # Facts no earlier conversation shares, so no other saved state can serve this prompt.
    first = chat.tokens(
        _conversation("rivers", "Which town has 70 bridges?", _facts("river", "bridges"))
    )
    other = chat.tokens(_conversation("trains", "Name a fast train.", _facts("station", "trains")))
    fresh = await run(engine, first, PARAMS)
    await run(engine, other, PARAMS)  # the first conversation goes to RAM
    entry = next(
        e for e in engine._prompt_cache.entries() if e.tokens[: len(first)] == tuple(first)
    )
    entry.size //= 2  # a truncated state: llama.cpp cannot read it
    before = engine.stats()

    again = await run(engine, first, PARAMS)
    after = engine.stats()
    assert again.finish.finish_reason == "length"
    assert (
        after.prompt_cache_restore_failures_total == before.prompt_cache_restore_failures_total + 1
    )
    assert again.finish.timings.prompt_tokens_evaluated == len(first)  # prefilled whole
    assert again.tokens == fresh.tokens


async def test_the_disk_tier_brings_a_conversation_back_after_a_restart(
    tmp_path: Path,
) -> None:
    """A conversation saved by one engine is restored by the next one over the same files,
    with the same greedy answer; an engine of another context size never reads them."""
    config = EngineConfig(
        model_path=MODEL,
        n_slots=1,
        n_ctx=1024,
        flash_attn=False,
        prompt_cache_mb=256,
        prompt_cache_dir=tmp_path,
    )
    first_engine = LlamaEngine(config)
    try:
        chat = ChatPrompt(first_engine)
        first = chat.tokens(
            _conversation("mills", "How many sacks are in town 9?", _facts("mill", "sacks"))
        )
        other = chat.tokens(_conversation("farms", "Name a crop.", _facts("farm", "cows")))
        fresh = await run(first_engine, first, PARAMS)
        await run(first_engine, other, PARAMS)  # evicts the first: saved to RAM and disk
    finally:
        first_engine.close()  # waits for the writer
    assert glob.glob(f"{tmp_path}/*/*.kv"), "nothing was written to the disk tier"

    restarted = LlamaEngine(config)
    try:
        assert restarted.stats().prompt_cache_entries >= 1
        again = await run(restarted, first, PARAMS)
        assert again.finish.usage.cached_prompt_tokens == len(first) - 1
        assert again.tokens == fresh.tokens
    finally:
        restarted.close()

    resized = LlamaEngine(dataclasses.replace(config, n_ctx=512))
    try:
        assert resized.stats().prompt_cache_entries == 0  # another namespace: nothing to read
    finally:
        resized.close()
