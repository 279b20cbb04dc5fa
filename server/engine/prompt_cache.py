"""Host-RAM tier of the prompt cache: KV states of evicted slots, kept for when they return.

A chat client resends the whole conversation every turn. With more conversations than slots, a
slot is reused before its conversation comes back, and that conversation's history is prefilled
again from scratch. Before a slot's tokens are dropped, the engine copies that sequence's state
out of llama.cpp (``llama_state_seq_get_data_ext``) into an entry here; when a prompt that
extends an entry arrives, the state is written back into a slot (``…set_data_ext``) instead of
being recomputed (the planner decides both: ``planner.Save`` / ``planner.Restore``).

The cache belongs to one engine, so to one loaded model file, context size, KV type and LoRA:
a hot swap builds a new engine with an empty cache, so a state is never restored into another
model. Pure Python, no native calls: the executor does those. With a ``store`` (the disk tier,
``prompt_store.py``) every entry is mirrored to a file, and ``preload`` takes them back at start.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from server.engine.planner import common_prefix_length
from server.engine.prompt_store import PromptStore, StoredPrompt


@dataclass(eq=False)
class CachedPrompt:
    """One saved sequence state: the tokens its KV cache holds and llama.cpp's bytes of it."""

    entry_id: int
    tokens: tuple[int, ...]
    data: Any  # a ctypes uint8 array as llama.cpp wrote it (no copy into ``bytes``)
    size: int  # bytes
    salt: str = ""  # the scope (tenant) that wrote it: see planner.reusable
    adapter: str = ""  # the LoRA adapter it was computed with


@dataclass
class PromptCacheStats:
    """Monotonic counters (Prometheus) and the current footprint."""

    saves: int = 0
    restores: int = 0  # hits: a prompt restored from RAM instead of prefilled
    restore_failures: int = 0  # llama.cpp refused the state: the prompt was prefilled instead
    misses: int = 0  # admissions where neither a slot nor RAM held a usable prefix
    evictions: int = 0
    restored_tokens: int = 0
    restore_seconds: float = 0.0
    save_seconds: float = 0.0
    entries: int = 0
    bytes: int = 0


@dataclass
class PromptCache:
    """An LRU of saved sequence states bounded by ``capacity_bytes`` (0: the tier is off)."""

    capacity_bytes: int
    store: PromptStore | None = None  # the disk tier, when configured
    stats: PromptCacheStats = field(default_factory=PromptCacheStats)
    _entries: OrderedDict[int, CachedPrompt] = field(default_factory=OrderedDict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def enabled(self) -> bool:
        """Whether states are kept at all."""
        return self.capacity_bytes > 0

    def entries(self) -> Sequence[CachedPrompt]:
        """Every entry, least recently used first (what the planner reads)."""
        return tuple(self._entries.values())

    def covers(self, tokens: Sequence[int]) -> bool:
        """Whether some entry already holds ``tokens`` (as a whole, or as its prefix)."""
        n = len(tokens)
        return any(
            len(e.tokens) >= n and common_prefix_length(e.tokens, tokens) == n
            for e in self._entries.values()
        )

    def put(
        self, tokens: Sequence[int], data: Any, size: int, salt: str = "", adapter: str = ""
    ) -> CachedPrompt | None:
        """Keep a state; entries of the same scope it extends (their tokens are a prefix of
        ``tokens``) go, and the least recently used go until it fits. None when it cannot fit
        at all."""
        if not self.enabled or size <= 0 or size > self.capacity_bytes:
            return None
        key = tuple(tokens)
        for entry in list(self._entries.values()):
            extended = len(entry.tokens) <= len(key) and key[: len(entry.tokens)] == entry.tokens
            if extended and (entry.salt, entry.adapter) == (salt, adapter):
                self._remove(entry.entry_id)
        while self._entries and self.stats.bytes + size > self.capacity_bytes:
            oldest = next(iter(self._entries))
            self._remove(oldest)
            self.stats.evictions += 1
        entry = self._insert(key, data, size, salt, adapter)
        if self.store is not None and not adapter:  # a name may mean another file next start
            self.store.save(key, salt, data, size)
        return entry

    def preload(self, stored: Sequence[StoredPrompt]) -> None:
        """Take states read from the disk tier (oldest first), as far as they fit."""
        for item in stored:
            if self.enabled and self.stats.bytes + item.size <= self.capacity_bytes:
                self._insert(item.tokens, item.data, item.size, item.salt)

    def _insert(
        self, tokens: tuple[int, ...], data: Any, size: int, salt: str, adapter: str = ""
    ) -> CachedPrompt:
        entry = CachedPrompt(next(self._ids), tokens, data, size, salt, adapter)
        self._entries[entry.entry_id] = entry
        self.stats.bytes += size
        self.stats.entries = len(self._entries)
        return entry

    def take(self, entry_id: int) -> CachedPrompt | None:
        """The entry ``entry_id`` (now the most recently used), or None if it is gone."""
        entry = self._entries.get(entry_id)
        if entry is not None:
            self._entries.move_to_end(entry_id)
        return entry

    def drop(self, entry_id: int) -> None:
        """Forget an entry (e.g. llama.cpp refused it)."""
        self._remove(entry_id)

    def clear(self) -> None:
        """Forget every entry."""
        for entry_id in list(self._entries):
            self._remove(entry_id)

    def _remove(self, entry_id: int) -> None:
        entry = self._entries.pop(entry_id, None)
        if entry is not None:
            self.stats.bytes -= entry.size
            self.stats.entries = len(self._entries)
            if self.store is not None and not entry.adapter:
                self.store.delete(entry.tokens, entry.salt)
