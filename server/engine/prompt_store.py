"""Disk tier of the prompt cache: the RAM entries mirrored to files, so they survive a restart.

Every state the RAM tier keeps is written to ``<dir>/<namespace>/<name>.kv`` by a writer thread
(the engine loop never waits for the disk), and deleted when the RAM tier drops it; at start the
engine loads the newest files back, up to the RAM tier's capacity. The namespace is a digest of
everything a saved state depends on: the model file's sha256, the context per slot, the KV type,
the LoRA adapter and its scale, and the llama.cpp version, so a state is only ever offered to the
model that wrote it (a hot swap to another file reads another namespace). Files are created
0600 in a 0700 directory: they hold the KV of users' prompts.

A file that is truncated, corrupt or of another format is deleted when read and never reaches
llama.cpp (each carries the sha256 of its state bytes); a write that fails (full disk, read-only
directory) is logged once and counted, and serving goes on from RAM.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import queue
import struct
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_MAGIC = b"GGSPC1\n"
_HEADER_LENGTH = struct.Struct("<I")
_MAX_HEADER = 64 * 2**20  # a header lists the tokens: 64 MiB is ~8M of them


@dataclass(frozen=True)
class StoredPrompt:
    """A state read back from disk, ready for the RAM tier."""

    tokens: tuple[int, ...]
    salt: str
    data: Any  # a ctypes uint8 array
    size: int


@dataclass
class PromptStoreStats:
    """Monotonic counters."""

    written: int = 0
    write_errors: int = 0
    loaded: int = 0
    discarded: int = 0  # unreadable files, deleted


def file_sha256(path: Path) -> str:
    """The sha256 of a (model) file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(2**20):
            digest.update(block)
    return digest.hexdigest()


def entry_name(tokens: Sequence[int], salt: str) -> str:
    """A file name that depends only on what the state holds and whose it is."""
    digest = hashlib.sha256(salt.encode("utf-8") + b"\0")
    digest.update(struct.pack(f"<{len(tokens)}i", *tokens))
    return digest.hexdigest()[:40] + ".kv"


class PromptStore:
    """Mirrors prompt-cache entries to one namespace directory (see the module docstring)."""

    def __init__(self, root: Path, namespace: Mapping[str, str]) -> None:
        key = json.dumps(dict(namespace), sort_keys=True)
        self.directory = Path(root) / hashlib.sha256(key.encode()).hexdigest()[:16]
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        described = self.directory / "namespace.json"
        if not described.exists():
            self._write_file(described, key.encode() + b"\n")
        self.stats = PromptStoreStats()
        self._jobs: queue.Queue[tuple[str, Any] | None] = queue.Queue()
        self._warned = False
        self._writer = threading.Thread(target=self._work, name="ggserve-prompt-store", daemon=True)
        self._writer.start()

    # --- the engine thread ----------------------------------------------------------------------

    def save(self, tokens: Sequence[int], salt: str, data: Any, size: int) -> None:
        """Write a state in the background (``data`` must not change afterwards: the RAM tier
        never mutates an entry's buffer)."""
        self._jobs.put(("save", (tuple(tokens), salt, data, size)))

    def delete(self, tokens: Sequence[int], salt: str) -> None:
        """Remove a state's file in the background."""
        self._jobs.put(("delete", entry_name(tokens, salt)))

    def clear(self) -> None:
        """Remove every state's file in the background."""
        self._jobs.put(("clear", None))

    def flush(self) -> None:
        """Wait until every queued write and deletion is done."""
        self._jobs.join()

    def close(self) -> None:
        """Finish the queued work and stop the writer (idempotent)."""
        if self._writer.is_alive():
            self._jobs.put(None)
            self._writer.join()

    def load(self, capacity_bytes: int) -> list[StoredPrompt]:
        """The newest readable states that fit in ``capacity_bytes``, oldest first (the order
        the RAM tier's LRU wants them inserted); unreadable files are deleted."""
        files = sorted(self.directory.glob("*.kv"), key=lambda p: p.stat().st_mtime, reverse=True)
        loaded: list[StoredPrompt] = []
        used = 0
        for path in files:
            stored = self._read(path)
            if stored is None:
                self.stats.discarded += 1
                path.unlink(missing_ok=True)
                continue
            if used + stored.size > capacity_bytes:
                path.unlink(missing_ok=True)  # the RAM tier could not hold it either
                continue
            used += stored.size
            loaded.append(stored)
        self.stats.loaded += len(loaded)
        return loaded[::-1]

    # --- the writer thread ----------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                kind, payload = job
                if kind == "save":
                    self._write_state(*payload)
                elif kind == "delete":
                    (self.directory / payload).unlink(missing_ok=True)
                else:
                    for path in self.directory.glob("*.kv"):
                        path.unlink(missing_ok=True)
            except OSError as exc:
                self.stats.write_errors += 1
                if not self._warned:
                    self._warned = True
                    logger.warning("prompt cache disk tier: %s (serving goes on from RAM)", exc)
            finally:
                self._jobs.task_done()

    def _write_state(self, tokens: tuple[int, ...], salt: str, data: Any, size: int) -> None:
        body = memoryview(data).cast("B")[:size]
        header = json.dumps(
            {"tokens": tokens, "salt": salt, "size": size, "sha256": _sha256(body)}
        ).encode()
        length = _HEADER_LENGTH.pack(len(header))
        self._write_file(self.directory / entry_name(tokens, salt), _MAGIC, length, header, body)
        self.stats.written += 1

    @staticmethod
    def _write_file(path: Path, *parts: bytes | memoryview) -> None:
        """Write ``path`` atomically, created 0600 whatever the umask."""
        temporary = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as handle:
                for part in parts:
                    handle.write(part)
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    @staticmethod
    def _read(path: Path) -> StoredPrompt | None:
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        start = len(_MAGIC) + _HEADER_LENGTH.size
        if not raw.startswith(_MAGIC) or len(raw) < start:
            return None
        (length,) = _HEADER_LENGTH.unpack_from(raw, len(_MAGIC))
        if length > _MAX_HEADER or start + length > len(raw):
            return None
        try:
            header = json.loads(raw[start : start + length])
            tokens = tuple(int(t) for t in header["tokens"])
            salt, size, digest = str(header["salt"]), int(header["size"]), str(header["sha256"])
        except (ValueError, KeyError, TypeError):
            return None
        body = memoryview(raw)[start + length :]
        if size <= 0 or len(body) != size or _sha256(body) != digest:
            return None
        if path.name != entry_name(tokens, salt):
            return None
        return StoredPrompt(tokens, salt, (ctypes.c_uint8 * size).from_buffer_copy(body), size)


def _sha256(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()
