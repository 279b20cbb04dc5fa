"""LoRA adapters chosen per request on one loaded base: no merge, no restart.

A request naming an adapter gets exactly what an engine with that adapter applied at load
gives; a base request on the same engine gets the base model's answer, even right after an
adapter request on the same prompt (their KV caches are never shared); both kinds run
together, taking turns step by step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from server.engine.config import EngineConfig
from server.engine.llama_engine import LlamaEngine
from server.engine.types import GenerationRequest, InvalidRequestError, SamplingParams
from tests.integration.test_engine import GREEDY, MODEL, chat, collect, write_lora

pytestmark = pytest.mark.slow

PROMPTS = ("Name three fruits.", "What is the capital of France?")


@pytest.fixture(scope="module")
def lora(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_lora(tmp_path_factory.mktemp("lora") / "fix.gguf", rank=4, scale_b=0.5)


@pytest.fixture(scope="module")
def engine(lora: Path) -> Iterator[LlamaEngine]:
    config = EngineConfig(
        model_path=MODEL,
        n_slots=4,
        n_ctx=256,
        adapters=(("fix", lora, 1.0),),
        speculative="off",  # drafts follow step timings; these comparisons are bit for bit
    )
    eng = LlamaEngine(config)
    yield eng
    eng.close()


async def answers(eng: LlamaEngine, adapter: str = "") -> list[list[int]]:
    out = []
    for text in PROMPTS:
        request = GenerationRequest("t", chat(eng, text), GREEDY, adapter=adapter)
        out.append((await collect(eng.generate(request))).tokens)
    return out


async def reference(lora: Path | None) -> list[list[int]]:
    config = EngineConfig(model_path=MODEL, n_slots=1, n_ctx=256, lora_path=lora, speculative="off")
    eng = LlamaEngine(config)
    try:
        return await answers(eng)
    finally:
        eng.close()


async def test_each_request_gets_its_adapter_or_the_base(engine: LlamaEngine, lora: Path) -> None:
    base, tuned = await reference(None), await reference(lora)
    assert base != tuned  # the adapter changes what the model says
    assert await answers(engine, "fix") == tuned
    assert await answers(engine) == base  # same prompts right after: no adapter KV reused
    assert engine.adapter_names == ("fix",)


async def test_base_and_adapter_requests_run_together(engine: LlamaEngine, lora: Path) -> None:
    base, tuned = await reference(None), await reference(lora)
    engine.reset_prefix_cache()
    jobs = [
        collect(engine.generate(GenerationRequest("t", chat(engine, t), GREEDY, adapter=a)))
        for a in ("", "fix")
        for t in PROMPTS
    ]
    results = [r.tokens for r in await asyncio.gather(*jobs)]
    assert results == base + tuned


async def test_a_prompt_cached_under_one_adapter_is_prefilled_for_another(
    engine: LlamaEngine,
) -> None:
    prompt = chat(engine, "Describe the sea in one sentence.")
    params = replace(GREEDY, max_tokens=4)
    engine.reset_prefix_cache()  # earlier base requests share the template's opening
    await collect(engine.generate(GenerationRequest("t", prompt, params, adapter="fix")))
    other = await collect(engine.generate(GenerationRequest("t", prompt, params)))
    assert other.finish.usage.cached_prompt_tokens == 0
    again = await collect(engine.generate(GenerationRequest("t", prompt, params)))
    assert again.finish.usage.cached_prompt_tokens > 0  # the base's own cache is reused


@pytest.mark.parametrize("name", ["nope", "FIX", " fix", "fix\x00"])
def test_an_unknown_adapter_is_refused_naming_the_field(engine: LlamaEngine, name: str) -> None:
    request = GenerationRequest("t", chat(engine, "hi"), SamplingParams(max_tokens=1), adapter=name)
    with pytest.raises(InvalidRequestError) as error:
        engine.submit(request, lambda _event: None)
    assert error.value.param == "model"
