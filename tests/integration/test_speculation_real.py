"""Prompt-lookup speculation on the real model: the same tokens as decoding one at a time.

The prompts stay under 512 cached tokens: past that, llama.cpp's CPU flash attention splits a
single-row query's keys across threads and reduces them in another order than a multi-row
query, so a near-tie can flip (docs/engine.md, "Speculative decoding").
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.chat.json_grammar import json_schema_grammar
from server.chat.prompt import ChatPrompt
from server.engine.config import EngineConfig
from server.engine.llama_engine import LlamaEngine
from server.engine.types import FinishEvent, GenerationRequest, SamplingParams

pytestmark = pytest.mark.slow

MODEL = Path(__file__).resolve().parents[2] / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
PASSAGE = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
    "It is named after the engineer Gustave Eiffel, whose company designed and built the "
    "tower from 1887 to 1889. Locally nicknamed La dame de fer, it was constructed as the "
    "centrepiece of the 1889 World's Fair."
)
QUOTE = f"Passage: {PASSAGE}\n\nCopy the passage above word for word."
QUESTION = f"Context: {PASSAGE}\n\nWho designed the Eiffel Tower? Answer with the context's words."
STORY = "Write a short story about a robot who learns to paint."


def _cost_unaware_engine() -> Iterator[LlamaEngine]:
    """An engine that drafts whatever the lookup finds, so which rows are drafted does not
    depend on measured step times and each run verifies the same drafts; prefix copies do not
    follow step times either."""
    if not MODEL.is_file():
        pytest.fail(f"{MODEL} missing: run 'make setup' (ggserve models fetch) first")
    config = EngineConfig(
        model_path=MODEL,
        n_slots=4,
        n_ctx=1024,
        max_queue=32,
        speculative_cost_aware=False,
        prefix_reuse_cost_aware=False,
    )
    eng = LlamaEngine(config)
    eng.warmup()
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaEngine]:
    yield from _cost_unaware_engine()


@pytest.fixture(scope="module")
def eager() -> Iterator[LlamaEngine]:
    """Drafts whatever the lookup finds, so a busy batch speculates too (an engine of its own)."""
    yield from _cost_unaware_engine()


@pytest.fixture(scope="module")
def priced() -> Iterator[LlamaEngine]:
    """The serving default: drafts priced by measured step costs and learnt acceptance."""
    if not MODEL.is_file():
        pytest.fail(f"{MODEL} missing: run 'make setup' (ggserve models fetch) first")
    eng = LlamaEngine(EngineConfig(model_path=MODEL, n_slots=2, n_ctx=1024, max_queue=8))
    eng.warmup()
    yield eng
    eng.close()


def chat(engine: LlamaEngine, text: str) -> list[int]:
    return engine.tokenize(ChatPrompt(engine).render([{"role": "user", "content": text}]))


async def generate(
    engine: LlamaEngine, prompt: list[int], params: SamplingParams
) -> tuple[list[int], str, FinishEvent]:
    tokens: list[int] = []
    texts: list[str] = []
    async for event in engine.generate(GenerationRequest("spec", prompt, params)):
        if isinstance(event, FinishEvent):
            return tokens, "".join(texts), event
        tokens.append(event.token_id)
        texts.append(event.text)
    raise AssertionError("no FinishEvent")


async def both_ways(
    engine: LlamaEngine, prompt: list[int], params: SamplingParams
) -> tuple[tuple[list[int], str, FinishEvent], tuple[list[int], str, FinishEvent], int, int]:
    """The output without speculation, then with it (each from a cold prefix cache), and the
    tokens drafted and accepted by the second."""
    engine.reset_prefix_cache()
    off = await generate(engine, prompt, _with(params, speculative=False))
    engine.reset_prefix_cache()
    before = engine.stats()
    on = await generate(engine, prompt, _with(params, speculative=True))
    after = engine.stats()
    drafted = after.speculative_draft_tokens_total - before.speculative_draft_tokens_total
    accepted = after.speculative_accepted_tokens_total - before.speculative_accepted_tokens_total
    return off, on, drafted, accepted


def _with(params: SamplingParams, **changes: object) -> SamplingParams:
    from dataclasses import replace

    return replace(params, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", [QUOTE, QUESTION, STORY])
async def test_greedy_output_is_token_identical_with_and_without_speculation(
    engine: LlamaEngine, text: str
) -> None:
    params = SamplingParams(max_tokens=96, temperature=0.0)
    off, on, drafted, accepted = await both_ways(engine, chat(engine, text), params)
    assert on[0] == off[0]
    assert on[1] == off[1]
    assert on[2].finish_reason == off[2].finish_reason
    assert on[2].usage.completion_tokens == off[2].usage.completion_tokens
    if text == QUOTE:  # the copy is drafted from the prompt and mostly accepted
        assert drafted > 0 and accepted >= drafted // 2, (drafted, accepted)


async def test_seeded_sampling_draws_the_same_tokens_with_and_without_speculation(
    engine: LlamaEngine,
) -> None:
    """One sampler call per generated token either way, so the seeded RNG is consumed alike."""
    params = SamplingParams(max_tokens=64, temperature=0.7, seed=1234)
    off, on, drafted, _ = await both_ways(engine, chat(engine, QUOTE), params)
    assert drafted > 0
    assert on[0] == off[0]


async def test_budget_stop_strings_and_grammars_hold_inside_a_verified_draft(
    engine: LlamaEngine,
) -> None:
    prompt = chat(engine, QUOTE)
    for params in (
        SamplingParams(max_tokens=7, temperature=0.0),  # the budget ends inside a draft
        SamplingParams(max_tokens=96, temperature=0.0, stop=("Gustave",)),
    ):
        off, on, _, _ = await both_ways(engine, prompt, params)
        assert (on[0], on[1], on[2].finish_reason) == (off[0], off[1], off[2].finish_reason)
    assert len(on[0]) < 96 and "Gustave" not in on[1]
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "built": {"type": "string"}},
        "required": ["name", "built"],
    }
    grammar = SamplingParams(max_tokens=64, temperature=0.0, grammar=json_schema_grammar(schema))
    off, on, _, _ = await both_ways(engine, chat(engine, QUESTION + " Answer in JSON."), grammar)
    assert on[1] == off[1]


async def test_the_slot_keeps_exactly_the_accepted_tokens(engine: LlamaEngine) -> None:
    """Rejected drafts leave the KV cache: a follow-up turn that reuses the slot's cache
    answers exactly as from a fresh prefill."""
    params = SamplingParams(max_tokens=48, temperature=0.0)
    first_prompt = chat(engine, QUOTE)
    engine.reset_prefix_cache()
    first, _, _ = await generate(engine, first_prompt, params)
    follow_up = first_prompt + first + chat(engine, "Now say it shorter.")[1:]
    reused = await generate(engine, follow_up, _with(params, speculative=False))
    assert reused[2].usage.cached_prompt_tokens >= len(first_prompt)
    engine.reset_prefix_cache()
    fresh = await generate(engine, follow_up, _with(params, speculative=False))
    assert fresh[2].usage.cached_prompt_tokens == 0
    assert reused[0] == fresh[0]


async def test_concurrent_speculating_requests_match_the_same_batch_without_it(
    eager: LlamaEngine,
) -> None:
    """Drafts verified beside other slots' tokens and prompt chunks change nothing.

    The baseline is the same requests together without speculation. llama.cpp's CPU kernels
    are not invariant to how a step's rows are split into micro-batches, so an answer with a
    near-tie can flip with the company it keeps, speculation or not: QUESTION does (its 52nd
    token differs between alone and among these three, without any draft), so it is not
    among them."""
    params = SamplingParams(max_tokens=64, temperature=0.0)
    engine = eager
    prompts = [chat(engine, t) for t in (QUOTE, STORY, "Count from 1 to 20.")]
    runs = []
    for speculative in (False, True):
        engine.reset_prefix_cache()
        before = engine.stats().speculative_draft_tokens_total
        together = await asyncio.gather(
            *(generate(engine, p, _with(params, speculative=speculative)) for p in prompts)
        )
        drafted = engine.stats().speculative_draft_tokens_total - before
        runs.append(([t[0] for t in together], drafted))
    (without, none_drafted), (with_drafts, drafted) = runs
    assert none_drafted == 0 and drafted > 0
    assert with_drafts == without


async def test_a_request_can_opt_out(engine: LlamaEngine) -> None:
    before = engine.stats().speculative_draft_tokens_total
    engine.reset_prefix_cache()
    await generate(
        engine,
        chat(engine, QUOTE),
        SamplingParams(max_tokens=48, temperature=0.0, speculative=False),
    )
    assert engine.stats().speculative_draft_tokens_total == before


async def test_the_default_engine_learns_to_draft_a_quote_and_keeps_most_of_it(
    priced: LlamaEngine,
) -> None:
    """The cost-aware path end to end: the repeat-length curves and step prices are learnt
    from the first runs, then a copy of the prompt is drafted, mostly accepted, and the
    output is the tokens decoding one at a time gives."""
    prompt = chat(priced, QUOTE)
    params = SamplingParams(max_tokens=96, temperature=0.0)
    for _ in range(3):
        off, on, drafted, accepted = await both_ways(priced, prompt, params)
        assert on[0] == off[0]
    assert drafted > 0 and accepted >= 0.6 * drafted, (drafted, accepted)
