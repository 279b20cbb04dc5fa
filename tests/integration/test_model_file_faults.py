"""The model file deleted, replaced or overwritten while serving: generation carries on.

The weights are read into process memory (``use_mmap=False``, the default): with an mmap, a
file truncated in place was a SIGBUS on the next decode and an overwritten one gave garbage.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from server.engine.config import EngineConfig
from server.engine.llama_engine import LlamaEngine
from server.engine.types import GenerationRequest, SamplingParams, TokenEvent

MODEL = Path(__file__).resolve().parents[2] / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _greedy(engine: LlamaEngine) -> str:
    async def go() -> str:
        request = GenerationRequest(
            "t", engine.tokenize("Hello there"), SamplingParams(max_tokens=8, temperature=0)
        )
        return "".join(
            [e.text async for e in engine.generate(request) if isinstance(e, TokenEvent)]
        )

    return asyncio.run(go())


def _truncate(path: Path) -> None:
    with path.open("r+b") as handle:
        handle.truncate(1000)


def _overwrite(path: Path) -> None:
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.write(b"\0" * size)


def _replace(path: Path) -> None:
    other = path.with_suffix(".new")
    shutil.copy(MODEL, other)
    os.replace(other, path)


@pytest.mark.parametrize("damage", [os.unlink, _truncate, _overwrite, _replace])
def test_generation_is_unchanged_whatever_happens_to_the_file(
    tmp_path: Path, damage: object
) -> None:
    copy = tmp_path / "model.gguf"
    shutil.copy(MODEL, copy)
    engine = LlamaEngine(EngineConfig(model_path=copy, n_slots=1, n_ctx=256))
    try:
        before = _greedy(engine)
        damage(copy)  # type: ignore[operator]
        assert _greedy(engine) == before
    finally:
        engine.close()
