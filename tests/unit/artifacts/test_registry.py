"""The registry file: numbering, lineage, promotion history, rollback, concurrent writers."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from artifacts.registry import Lineage, ModelRegistry, RegistryError


def _gguf(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(b"GGUF" + name.encode())
    return path


def test_versions_are_numbered_in_order_and_keep_their_lineage(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry.json")
    first = registry.register(_gguf(tmp_path, "a.gguf"), "a" * 64, name="base")
    lineage = Lineage(dataset={"sha256": "d" * 64, "rows": 3}, eval={"passed": True})
    second = registry.register(_gguf(tmp_path, "b.gguf"), "b" * 64, name="tuned", lineage=lineage)
    assert (first.version, second.version, second.label) == (1, 2, "v2")
    state = registry.read()
    assert [v.name for v in state.versions] == ["base", "tuned"]
    assert state.get(2).lineage.dataset == {"sha256": "d" * 64, "rows": 3}
    assert state.active is None


def test_the_same_file_twice_is_refused(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry.json")
    registry.register(_gguf(tmp_path, "a.gguf"), "a" * 64, name="base")
    with pytest.raises(RegistryError, match="already registered as v1"):
        registry.register(_gguf(tmp_path, "copy.gguf"), "a" * 64, name="copy")


@pytest.mark.parametrize("name", ["", " ", "x" * 129, "bad\x00name", "new\nline"])
def test_bad_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(RegistryError, match="printable"):
        ModelRegistry(tmp_path / "r.json").register(_gguf(tmp_path, "a.gguf"), "a" * 64, name=name)


def test_promote_records_who_and_when_and_rollback_goes_to_the_previous(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry.json")
    for index, name in enumerate(("a", "b", "c")):
        registry.register(_gguf(tmp_path, f"{name}.gguf"), str(index) * 64, name=name)
    registry.promote(1, "alice")
    registry.promote(3, "bob")
    state = registry.read()
    assert state.active == 3
    assert state.get(3).promoted_by == "bob" and state.get(3).promoted_at
    assert registry.rollback_target().version == 1
    registry.promote(1, "carol", action="rollback")
    state = registry.read()
    assert [(h.action, h.version, h.previous) for h in state.history] == [
        ("promote", 1, None),
        ("promote", 3, 1),
        ("rollback", 1, 3),
    ]
    assert registry.rollback_target().version == 3  # rolling back a rollback goes forward again


def test_unknown_version_and_nothing_to_roll_back_say_so(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry.json")
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback_target()
    registry.register(_gguf(tmp_path, "a.gguf"), "a" * 64, name="a")
    with pytest.raises(RegistryError, match=r"no version 7 .*known: v1"):
        registry.promote(7, "x")
    registry.promote(1, "x")
    with pytest.raises(RegistryError, match="no earlier version"):
        registry.rollback_target()


def test_a_corrupt_file_is_reported_and_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    path.write_text("{truncated")
    with pytest.raises(RegistryError, match="corrupt"):
        ModelRegistry(path).read()
    with pytest.raises(RegistryError, match="corrupt"):
        ModelRegistry(path).register(_gguf(tmp_path, "a.gguf"), "a" * 64, name="a")
    assert path.read_text() == "{truncated"


def _register_many(args: tuple[str, int]) -> None:
    folder, worker = args
    registry = ModelRegistry(Path(folder) / "registry.json")
    for index in range(5):
        registry.register(Path(folder) / "m.gguf", f"{worker}-{index}".ljust(64, "0"), name="m")


def test_concurrent_writers_lose_no_version(tmp_path: Path) -> None:
    _gguf(tmp_path, "m.gguf")
    with multiprocessing.get_context("fork").Pool(4) as pool:
        pool.map(_register_many, [(str(tmp_path), w) for w in range(4)])
    state = ModelRegistry(tmp_path / "registry.json").read()
    assert sorted(v.version for v in state.versions) == list(range(1, 21))
    assert not list(tmp_path.glob(".*.tmp"))
    json.loads((tmp_path / "registry.json").read_text())


def test_a_file_written_before_adapters_reads_its_versions_as_models(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    old = {
        "versions": [
            {
                "version": 1,
                "name": "smollm2",
                "model_path": "/m/a.gguf",
                "sha256": "a" * 64,
                "created_at": "2026-12-01T00:00:00+00:00",
                "lineage": {},
            }
        ],
        "active": 1,
        "history": [],
        "schema": 1,
    }
    path.write_text(json.dumps(old))
    entry = ModelRegistry(path).read().get(1)
    assert (entry.kind, entry.base_sha256, entry.scale, entry.is_adapter) == (
        "model",
        None,
        1.0,
        False,
    )


def test_an_adapter_version_keeps_its_base_and_scale_through_the_file(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry.json")
    registry.register(_gguf(tmp_path, "base.gguf"), "a" * 64, name="base")
    registry.register(
        _gguf(tmp_path, "lora.gguf"), "b" * 64, name="fact", base_sha256="a" * 64, scale=0.5
    )
    entry = ModelRegistry(tmp_path / "registry.json").read().get(2)
    assert (entry.kind, entry.base_sha256, entry.scale) == ("adapter", "a" * 64, 0.5)
    assert ModelRegistry(tmp_path / "registry.json").read().get(1).kind == "model"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "lora"}, "kind 'lora'"),
        ({"kind": "adapter"}, "names its base_sha256"),
        ({"base_sha256": "a" * 64}, "names its base_sha256"),
        ({"kind": "adapter", "base_sha256": "a" * 64, "scale": "strong"}, "strong"),
    ],
)
def test_a_malformed_adapter_entry_is_reported(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    entry = {
        "version": 1,
        "name": "x",
        "model_path": "/m/x.gguf",
        "sha256": "b" * 64,
        "created_at": "2026-12-01T00:00:00+00:00",
        **change,
    }
    path = tmp_path / "registry.json"
    path.write_text(json.dumps({"versions": [entry]}))
    with pytest.raises(RegistryError, match=message):
        ModelRegistry(path).read()


@pytest.mark.parametrize("scale", [0.0, -1.0, 5.0])
def test_an_adapter_scale_out_of_range_is_refused(tmp_path: Path, scale: float) -> None:
    with pytest.raises(RegistryError, match="scale"):
        ModelRegistry(tmp_path / "r.json").register(
            _gguf(tmp_path, "l.gguf"), "b" * 64, name="l", base_sha256="a" * 64, scale=scale
        )
    assert not (tmp_path / "r.json").exists()
