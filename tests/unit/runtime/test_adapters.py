"""The registry's default adapter comes back with its base (after a restart or a hot swap),
and never over another base or from a changed file."""

from __future__ import annotations

from pathlib import Path

import pytest

from artifacts.digest import sha256_file
from artifacts.registry import ModelRegistry, RegisteredVersion
from server.runtime.adapters import adopt_default_adapter, default_name
from server.runtime.services import ModelMeta, ServedModel
from tests.fakes import FakeEngine


def registry_with_default(
    tmp_path: Path, *, name: str = "support", base: str = "b" * 64
) -> tuple[ModelRegistry, Path]:
    adapter = tmp_path / "support.gguf"
    adapter.write_bytes(b"GGUF adapter bytes")
    registry = ModelRegistry(tmp_path / "registry.json")
    with registry._locked() as state:
        state.versions.append(
            RegisteredVersion(
                version=4,
                name=name,
                model_path=str(adapter),
                sha256=sha256_file(adapter),
                created_at="2026-12-07T00:00:00+00:00",
                kind="adapter",
                base_sha256=base,
            )
        )
    registry.record_rollout({"id": "ro-1", "status": "promoted"}, promoted=4)
    return registry, adapter


def served(sha256: str = "b" * 64) -> ServedModel:
    return ServedModel(FakeEngine(), ModelMeta(), "base", "v1", "/models/base.gguf", sha256)


async def test_the_promoted_adapter_is_loaded_and_made_the_default(tmp_path: Path) -> None:
    registry, _ = registry_with_default(tmp_path)
    model = served()
    await adopt_default_adapter(registry, model)
    assert model.engine.adapter_names == ("support",)
    assert model.rollout.default_adapter == "support" and model.adapter_versions == {"support": 4}
    state = registry.read()
    assert state.default_adapter == 4 and state.history[-1].by == "rollout ro-1"


async def test_another_base_keeps_serving_without_it(tmp_path: Path) -> None:
    registry, _ = registry_with_default(tmp_path)
    model = served(sha256="c" * 64)
    await adopt_default_adapter(registry, model)
    assert model.engine.adapter_names == () and model.rollout.default_adapter == ""


async def test_a_changed_adapter_file_is_not_loaded(tmp_path: Path) -> None:
    registry, adapter = registry_with_default(tmp_path)
    adapter.write_bytes(b"something else")
    model = served()
    await adopt_default_adapter(registry, model)  # logged, never raised
    assert model.engine.adapter_names == () and model.rollout.default_adapter == ""


@pytest.mark.parametrize(
    ("name", "expected"), [("support", "support"), ("my adapter", "adapter-v4")]
)
def test_a_registry_name_that_is_not_a_valid_adapter_name_gets_one(
    name: str, expected: str
) -> None:
    entry = RegisteredVersion(4, name, "/a.gguf", "a" * 64, "2026-12-07", kind="adapter")
    assert default_name(entry) == expected


def test_promoting_a_model_of_another_base_clears_the_default_adapter(tmp_path: Path) -> None:
    registry, _ = registry_with_default(tmp_path)
    other = tmp_path / "other.gguf"
    other.write_bytes(b"another model")
    entry = registry.register(other, sha256_file(other), name="other")
    registry.promote(entry.version, by="test")
    assert registry.read().default_adapter is None
