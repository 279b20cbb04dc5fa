"""Activation: the new model serves only once loaded; every failure keeps the old one serving."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from artifacts.digest import sha256_file
from artifacts.registry import ModelRegistry, RegisteredVersion
from server.registry.activation import ActivationError, ModelActivator
from server.registry.deployment import ActiveModel, Deployment


def _setup(tmp_path: Path, load_error: Exception | None = None, delay: float = 0.0):
    registry = ModelRegistry(tmp_path / "registry.json")
    for name in ("one", "two"):
        path = tmp_path / f"{name}.gguf"
        path.write_bytes(b"GGUF" + name.encode())
        registry.register(path, sha256_file(path), name=name)
    closed: list[str] = []
    active: ActiveModel[str] = ActiveModel(close=lambda d: closed.append(d.version))
    active.install(Deployment("v1", "engine-one"))

    async def load(entry: RegisteredVersion) -> str:
        await asyncio.sleep(delay)
        if load_error is not None:
            raise load_error
        return f"engine-{entry.name}"

    return registry, active, ModelActivator(registry, active, load), closed


async def test_activation_switches_and_records_the_promotion(tmp_path: Path) -> None:
    registry, active, activator, closed = _setup(tmp_path)
    result = await activator.activate(2, by="admin")
    assert (result.version, result.previous) == ("v2", "v1")
    assert active.current is not None and active.current.model == "engine-two"
    assert closed == ["v1"]
    state = registry.read()
    assert state.active == 2 and state.get(2).promoted_by == "admin"


async def test_a_failed_load_keeps_the_old_model_and_the_registry_unchanged(tmp_path: Path) -> None:
    registry, active, activator, closed = _setup(tmp_path, load_error=RuntimeError("bad tensor"))
    with pytest.raises(ActivationError, match="bad tensor") as error:
        await activator.activate(2, by="admin")
    assert error.value.kind == "load_failed"
    assert active.current is not None and active.current.version == "v1" and closed == []
    assert registry.read().active is None


async def test_a_file_replaced_after_registration_is_refused(tmp_path: Path) -> None:
    _, active, activator, _ = _setup(tmp_path)
    (tmp_path / "two.gguf").write_bytes(b"GGUF tampered")
    with pytest.raises(ActivationError, match="changed since v2 was registered") as error:
        await activator.activate(2, by="admin")
    assert error.value.kind == "file_changed"
    (tmp_path / "two.gguf").unlink()
    with pytest.raises(ActivationError, match="is gone"):
        await activator.activate(2, by="admin")
    assert active.current is not None and active.current.version == "v1"


async def test_unknown_versions_and_concurrent_activations_are_refused(tmp_path: Path) -> None:
    _, _, activator, _ = _setup(tmp_path, delay=0.2)
    with pytest.raises(ActivationError) as unknown:
        await activator.activate(99, by="admin")
    assert unknown.value.kind == "unknown_version"
    first = asyncio.create_task(activator.activate(2, by="admin"))
    await asyncio.sleep(0.05)
    with pytest.raises(ActivationError) as busy:
        await activator.activate(1, by="admin")
    assert busy.value.kind == "busy"
    assert (await first).version == "v2"
