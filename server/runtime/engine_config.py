"""Settings → ``EngineConfig``: the one place that maps the one onto the other.

Serving, the eval gate and the benchmarks all build their engine here, so a candidate is gated
under the configuration that will serve it. Fields are matched by name, so a new engine setting
needs no hand-copied line (and cannot be forgotten in one of several copies).
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from server.engine.config import EngineConfig
from server.settings import Settings

# EngineConfig field → the Settings field that holds it, where the names differ.
SETTING_FOR_FIELD = {"use_mmap": "model_mmap"}
# EngineConfig fields that are tuning knobs of the engine itself, not user settings, or
# that are built below (the named adapters, from a string setting, for the configured model).
ENGINE_ONLY_FIELDS = frozenset(
    {"prefix_copy_min_tokens", "prefix_reuse_cost_aware", "speculative_cost_aware", "adapters"}
)


def engine_config(
    settings: Settings, *, model_path: Path | None = None, **overrides: Any
) -> EngineConfig:
    """The engine configuration ``settings`` describe, for ``model_path`` (default: the
    configured model) with ``overrides`` (EngineConfig field names) applied last."""
    values: dict[str, Any] = {
        field.name: getattr(settings, SETTING_FOR_FIELD.get(field.name, field.name))
        for field in fields(EngineConfig)
        if field.name not in ENGINE_ONLY_FIELDS
    }
    if model_path is None:  # adapters are made for the configured base, not a candidate's
        values["adapters"] = settings.adapter_list()
    else:
        values["model_path"] = model_path
    unknown = sorted(set(overrides) - {f.name for f in fields(EngineConfig)})
    if unknown:
        raise TypeError(f"not EngineConfig fields: {', '.join(unknown)}")
    return EngineConfig(**{**values, **overrides})
