"""Admission order on the real engine: with one slot and a queue, a light tenant's request does
not wait behind a heavy tenant's backlog, and a lower priority value goes first."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from server.engine.config import EngineConfig
from server.engine.llama_engine import LlamaEngine
from server.engine.types import FinishEvent, GenerationRequest, SamplingParams
from tests.integration.test_engine import MODEL

pytestmark = pytest.mark.slow

PARAMS = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaEngine]:
    eng = LlamaEngine(EngineConfig(model_path=MODEL, n_slots=1, n_ctx=256, max_queue=16))
    yield eng
    eng.close()


async def _finish_order(engine: LlamaEngine, requests: list[GenerationRequest]) -> list[str]:
    done: list[str] = []
    started = asyncio.Event()

    async def run(request: GenerationRequest) -> None:
        async for event in engine.generate(request):
            started.set()
            if isinstance(event, FinishEvent):
                done.append(request.request_id)

    # The first request holds the slot (its first token is out); the rest queue behind it.
    first = asyncio.ensure_future(run(requests[0]))
    await started.wait()
    await asyncio.gather(first, *(run(r) for r in requests[1:]))
    return done


def _request(name: str, tenant: str, priority: int = 0) -> GenerationRequest:
    tokens = [1, 2, 3, 4, 5]
    return GenerationRequest(name, tokens, PARAMS, priority=priority, tenant=tenant)


async def test_a_light_tenant_is_served_before_a_heavy_tenants_backlog(
    engine: LlamaEngine,
) -> None:
    heavy = [_request(f"a{i}", "A") for i in range(6)]
    order = await _finish_order(engine, [*heavy, _request("b0", "B")])
    assert order.index("b0") <= 2, order  # behind a0 (running) and at most a1, not a5


async def test_a_lower_priority_value_is_admitted_first(engine: LlamaEngine) -> None:
    requests = [_request("first", "A"), *(_request(f"batch{i}", "A", 5) for i in range(4))]
    order = await _finish_order(engine, [*requests, _request("urgent", "B", -1)])
    assert order.index("urgent") == 1, order  # right after the one already running
