"""The prompt cache's disk tier, without a model: files, permissions, corruption, failures."""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from pathlib import Path

import pytest

from server.engine.prompt_cache import PromptCache
from server.engine.prompt_store import PromptStore, entry_name

NAMESPACE = {"model_sha256": "ab" * 32, "n_ctx_per_slot": "2048"}


def state(size: int, fill: int = 7) -> ctypes.Array[ctypes.c_uint8]:
    return (ctypes.c_uint8 * size)(*([fill] * size))


def files(store: PromptStore) -> list[Path]:
    return sorted(store.directory.glob("*.kv"))


def test_saved_states_come_back_after_a_restart_with_their_bytes(tmp_path: Path) -> None:
    store = PromptStore(tmp_path, NAMESPACE)
    store.save((1, 2, 3), "key-a", state(64, 5), 64)
    store.save((4, 5), "key-b", state(32, 9), 32)
    store.close()
    again = PromptStore(tmp_path, NAMESPACE)
    loaded = {(s.tokens, s.salt): bytes(s.data) for s in again.load(10_000)}
    assert loaded == {((1, 2, 3), "key-a"): bytes([5] * 64), ((4, 5), "key-b"): bytes([9] * 32)}


def test_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o000)
    try:
        store = PromptStore(tmp_path / "cache", NAMESPACE)
        store.save((1, 2), "", state(8), 8)
        store.flush()
    finally:
        os.umask(old)
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    for path in [*files(store), store.directory / "namespace.json"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_another_model_reads_another_namespace(tmp_path: Path) -> None:
    store = PromptStore(tmp_path, NAMESPACE)
    store.save((1, 2), "", state(8), 8)
    store.close()
    other = PromptStore(tmp_path, {**NAMESPACE, "model_sha256": "cd" * 32})
    assert other.load(10_000) == []


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw[: len(raw) // 2],  # truncated
        lambda raw: raw[:-1] + bytes([raw[-1] ^ 1]),  # a flipped bit in the state
        lambda raw: b"not a state file",
        lambda raw: b"",
        lambda raw: raw[:7] + (2**31).to_bytes(4, "little") + raw[11:],  # absurd header length
        lambda raw: raw[:11] + b"\xff" * 20 + raw[31:],  # a header that is not JSON
    ],
)
def test_a_damaged_file_is_discarded_never_loaded(tmp_path: Path, damage: object) -> None:
    store = PromptStore(tmp_path, NAMESPACE)
    store.save((1, 2, 3), "", state(64), 64)
    store.close()
    (path,) = files(store)
    path.write_bytes(damage(path.read_bytes()))  # type: ignore[operator]
    again = PromptStore(tmp_path, NAMESPACE)
    assert again.load(10_000) == []
    assert again.stats.discarded == 1
    assert not path.exists()


def test_a_file_renamed_to_claim_other_tokens_is_discarded(tmp_path: Path) -> None:
    store = PromptStore(tmp_path, NAMESPACE)
    store.save((1, 2, 3), "key-a", state(16), 16)
    store.close()
    (path,) = files(store)
    path.rename(path.with_name(entry_name((1, 2, 3), "key-b")))
    assert PromptStore(tmp_path, NAMESPACE).load(10_000) == []


def test_load_keeps_the_newest_that_fit(tmp_path: Path) -> None:
    store = PromptStore(tmp_path, NAMESPACE)
    for i in range(4):
        store.save((i, i), "", state(100), 100)
        store.flush()
        os.utime(store.directory / entry_name((i, i), ""), (1000 + i, 1000 + i))
    store.close()
    loaded = PromptStore(tmp_path, NAMESPACE).load(250)
    assert [s.tokens for s in loaded] == [(2, 2), (3, 3)]  # oldest first, for the LRU


def test_the_ram_tier_mirrors_its_entries_to_disk(tmp_path: Path) -> None:
    store = PromptStore(tmp_path, NAMESPACE)
    cache = PromptCache(capacity_bytes=250, store=store)
    cache.put([1, 2], state(100), 100)
    cache.put([1, 2, 3], state(100), 100)  # extends [1, 2]: replaces it
    cache.put([7, 8], state(100), 100)
    cache.put([9], state(100), 100)  # evicts the least recently used ([1, 2, 3])
    store.flush()
    assert {p.name for p in files(store)} == {entry_name(t, "") for t in ((7, 8), (9,))}
    restarted = PromptCache(capacity_bytes=250, store=PromptStore(tmp_path, NAMESPACE))
    assert restarted.store is not None
    restarted.preload(restarted.store.load(250))
    assert [e.tokens for e in restarted.entries()] == [(7, 8), (9,)]
    restarted.clear()
    restarted.store.flush()
    assert files(restarted.store) == []


def test_a_full_disk_is_counted_and_serving_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = PromptStore(tmp_path, NAMESPACE)

    def full(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("server.engine.prompt_store.os.replace", full)
    store.save((1, 2), "", state(8), 8)
    store.save((3, 4), "", state(8), 8)
    store.flush()
    assert (store.stats.write_errors, store.stats.written) == (2, 0)
    assert list(store.directory.iterdir()) == [store.directory / "namespace.json"]  # no debris
    monkeypatch.undo()
    store.save((5, 6), "", state(8), 8)  # the disk has room again: writes resume
    store.flush()
    assert store.stats.written == 1
