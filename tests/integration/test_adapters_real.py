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
from server.engine.types import (
    GenerationRequest,
    InvalidRequestError,
    ModelLoadError,
    SamplingParams,
)
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
        prefix_reuse_cost_aware=False,  # and so would prefix copies of short prompts
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
    config = EngineConfig(
        model_path=MODEL,
        n_slots=1,
        n_ctx=256,
        lora_path=lora,
        speculative="off",
        prefix_reuse_cost_aware=False,
    )
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


async def test_an_adapter_loaded_at_run_time_answers_as_one_loaded_at_start(
    engine: LlamaEngine, lora: Path, tmp_path: Path
) -> None:
    tuned = await reference(lora)
    await engine.load_adapter("late", lora, 1.0)
    assert set(engine.adapter_names) == {"fix", "late"}
    assert await answers(engine, "late") == tuned
    await engine.unload_adapter("late")
    assert engine.adapter_names == ("fix",)
    request = GenerationRequest("t", chat(engine, "hi"), GREEDY, adapter="late")
    with pytest.raises(InvalidRequestError):
        engine.submit(request, lambda _event: None)


async def test_a_name_reloaded_with_another_file_never_reuses_the_old_cache(
    engine: LlamaEngine, lora: Path, tmp_path: Path
) -> None:
    other = write_lora(tmp_path / "other.gguf", rank=4, scale_b=1.5)
    await engine.load_adapter("swap", lora, 1.0)
    await answers(engine, "swap")  # caches these prompts under "swap"
    await engine.unload_adapter("swap")
    await engine.load_adapter("swap", other, 1.0)
    try:
        assert await answers(engine, "swap") == await reference(other)
    finally:
        await engine.unload_adapter("swap")


async def test_unloading_waits_for_the_requests_that_use_the_adapter(
    engine: LlamaEngine, lora: Path
) -> None:
    await engine.load_adapter("busy", lora, 1.0)
    params = replace(GREEDY, max_tokens=48, ignore_eos=True)
    running = asyncio.ensure_future(
        collect(
            engine.generate(GenerationRequest("t", chat(engine, "Count."), params, adapter="busy"))
        )
    )
    await asyncio.sleep(0.05)
    await engine.unload_adapter("busy")  # returns once the request above has ended
    assert running.done()
    result = running.result()
    assert result.finish.finish_reason == "length" and len(result.tokens) == 48
    assert "busy" not in engine.adapter_names


async def test_loading_refuses_a_bad_file_and_a_taken_name(
    engine: LlamaEngine, lora: Path, tmp_path: Path
) -> None:
    not_lora = tmp_path / "model.gguf"
    with MODEL.open("rb") as source:  # a GGUF, but a whole model
        not_lora.write_bytes(source.read(300_000))
    with pytest.raises(ModelLoadError, match=str(not_lora)):
        await engine.load_adapter("bad", not_lora, 1.0)
    assert "bad" not in engine.adapter_names
    with pytest.raises(InvalidRequestError) as taken:
        await engine.load_adapter("fix", lora, 1.0)
    assert taken.value.param == "name"
    with pytest.raises(InvalidRequestError) as unknown:
        await engine.unload_adapter("never-loaded")
    assert unknown.value.param == "name"
    assert await answers(engine, "fix") == await reference(lora)  # still serving


async def test_a_cancelled_admin_call_never_fails_the_requests_in_flight(
    engine: LlamaEngine, lora: Path
) -> None:
    await engine.load_adapter("gone", lora, 1.0)
    params = replace(GREEDY, max_tokens=32, ignore_eos=True)
    request = GenerationRequest("t", chat(engine, "Count."), params, adapter="gone")
    running = asyncio.ensure_future(collect(engine.generate(request)))
    await asyncio.sleep(0.05)
    unload = asyncio.ensure_future(engine.unload_adapter("gone"))
    loading = asyncio.ensure_future(engine.load_adapter("never", lora, 1.0))
    await asyncio.sleep(0)
    unload.cancel()  # a client timeout, a shutdown: the waiters give up
    loading.cancel()
    result = await running
    assert result.finish.finish_reason == "length" and len(result.tokens) == 32
    assert "gone" not in engine.adapter_names  # the unload still happened
    assert await answers(engine, "fix") == await reference(lora)  # and the engine serves
