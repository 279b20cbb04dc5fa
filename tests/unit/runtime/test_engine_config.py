"""``engine_config(settings)`` is the one mapping of settings onto the engine's configuration."""

from __future__ import annotations

from dataclasses import MISSING, fields
from pathlib import Path

import pytest

from server.engine.config import EngineConfig
from server.runtime.engine_config import ENGINE_ONLY_FIELDS, SETTING_FOR_FIELD, engine_config
from server.settings import Settings


def _setting_name(field_name: str) -> str:
    return SETTING_FOR_FIELD.get(field_name, field_name)


def test_every_engine_field_is_a_setting_or_declared_engine_only() -> None:
    settable = set(Settings.model_fields)
    missing = [
        f.name
        for f in fields(EngineConfig)
        if f.name not in ENGINE_ONLY_FIELDS and _setting_name(f.name) not in settable
    ]
    assert not missing, f"EngineConfig fields with no setting: {missing}"


def test_settings_and_engine_defaults_agree() -> None:
    """The defaults a server and a directly built engine use are the same (flash_attn drifted)."""
    differ = {}
    for f in fields(EngineConfig):
        if f.name in ENGINE_ONLY_FIELDS or f.default is MISSING:
            continue
        setting = Settings.model_fields[_setting_name(f.name)].default
        if setting != f.default:
            differ[f.name] = (setting, f.default)
    assert not differ, f"settings vs engine defaults: {differ}"


def test_every_setting_reaches_the_engine() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        model_path=Path("m.gguf"),
        n_slots=3,
        n_ctx=4096,
        n_batch=256,
        n_ubatch=128,
        n_threads=2,
        n_threads_batch=1,
        n_gpu_layers=-1,
        flash_attn=False,
        kv_cache_type="q8_0",
        max_queue=7,
        request_timeout_s=12.5,
        lora_path=Path("a.gguf"),
        lora_scale=0.5,
        model_mmap=True,
    )
    config = engine_config(settings)
    for f in fields(EngineConfig):
        if f.name not in ENGINE_ONLY_FIELDS:
            assert getattr(config, f.name) == getattr(settings, _setting_name(f.name)), f.name


def test_model_path_and_overrides_apply_last() -> None:
    settings = Settings(_env_file=None, n_slots=2)  # type: ignore[call-arg]
    config = engine_config(settings, model_path=Path("other.gguf"), max_queue=4096)
    assert (config.model_path, config.max_queue, config.n_slots) == (Path("other.gguf"), 4096, 2)


def test_an_unknown_override_is_refused() -> None:
    with pytest.raises(TypeError, match="n_slotz"):
        engine_config(Settings(_env_file=None), n_slotz=2)  # type: ignore[call-arg]
