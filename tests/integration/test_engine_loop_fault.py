"""An exception inside the engine loop: requests in flight end with an error, the next is served."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from server.engine.config import EngineConfig
from server.engine.llama_engine import LlamaEngine
from server.engine.sampling import SamplerChain
from server.engine.types import FinishEvent, GenerationRequest, SamplingParams

NEVER_STOP = ((0, -100.0), (2, -100.0))  # SmolLM2's end-of-generation tokens
MODEL = Path(__file__).resolve().parents[2] / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


async def _finish(engine: LlamaEngine, max_tokens: int) -> FinishEvent:
    request = GenerationRequest(
        "t",
        engine.tokenize("Tell me a story."),
        SamplingParams(max_tokens=max_tokens, temperature=0, logit_bias=NEVER_STOP),
    )
    async for event in engine.generate(request):
        if isinstance(event, FinishEvent):
            return event
    raise AssertionError("no finish event")


def test_a_failing_step_fails_the_requests_in_flight_and_the_engine_serves_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = LlamaEngine(EngineConfig(model_path=MODEL, n_slots=2, n_ctx=256))
    real_sample = SamplerChain.sample
    calls = {"n": 0}

    def sample_failing_once(self: SamplerChain, ctx: int, index: int) -> int:
        calls["n"] += 1
        if calls["n"] == 6:
            raise RuntimeError("injected fault")
        return real_sample(self, ctx, index)

    monkeypatch.setattr(SamplerChain, "sample", sample_failing_once)

    async def scenario() -> tuple[list[FinishEvent], FinishEvent]:
        in_flight = await asyncio.gather(_finish(engine, 40), _finish(engine, 40))
        after = await _finish(engine, 4)
        return list(in_flight), after

    try:
        in_flight, after = asyncio.run(scenario())
    finally:
        engine.close()
    assert [f.finish_reason for f in in_flight] == ["error", "error"]
    assert all("internal engine error" in (f.error or "") for f in in_flight)
    assert after.finish_reason in ("stop", "length") and after.usage.completion_tokens >= 1
    assert engine.stats().slots_active == 0
