"""The eval gate's engine is configured the way the server would configure it for that model."""

from __future__ import annotations

from pathlib import Path

import pytest

from flywheel.gate.runner import load_engine
from server.engine.config import EngineConfig
from server.runtime.engine_config import engine_config
from server.settings import Settings


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[EngineConfig]:
    """Records the EngineConfig the gate builds instead of loading llama.cpp."""
    configs: list[EngineConfig] = []

    class RecordingEngine:
        def __init__(self, config: EngineConfig) -> None:
            configs.append(config)

    monkeypatch.setattr("server.engine.llama_engine.LlamaEngine", RecordingEngine)
    return configs


def test_the_candidate_is_gated_under_the_serving_settings(
    built: list[EngineConfig], tmp_path: Path
) -> None:
    settings = Settings(_env_file=None, n_slots=2, n_ctx=4096, flash_attn=False, n_threads=3)
    candidate = tmp_path / "candidate.gguf"
    load_engine(candidate, settings)
    (config,) = built
    assert (config.n_slots, config.n_ctx, config.flash_attn, config.n_threads) == (
        2,
        4096,
        False,
        3,
    )
    assert config.model_path == candidate
    assert config.max_queue >= 1024  # every item is submitted at once
    serving = engine_config(settings, model_path=candidate)
    # Everything as served but the queue (every item at once) and speculation (off: its draft
    # lengths follow step timings, which must not decide a gate).
    assert config.speculative == "off"
    differ = {"max_queue": 0, "speculative": "off"}
    assert {**vars(config), **differ} == {**vars(serving), **differ}


def test_the_runtime_lora_applies_only_to_the_model_it_was_configured_for(
    built: list[EngineConfig], tmp_path: Path
) -> None:
    base, lora = tmp_path / "base.gguf", tmp_path / "fact-lora.gguf"
    settings = Settings(_env_file=None, model_path=base, lora_path=lora)
    load_engine(tmp_path / "candidate.gguf", settings)
    load_engine(base, settings)
    assert [config.lora_path for config in built] == [None, lora]
