"""The chunk store: SQLite rows for every chunk id in the FAISS index, and per-document hashes."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from server.rag.chunking import Chunk
from server.rag.loaders import Document, sha256_bytes

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    path TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    n_chunks INTEGER NOT NULL,
    indexed_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    document TEXT NOT NULL REFERENCES documents(path),
    title TEXT NOT NULL,
    heading TEXT NOT NULL,
    start_offset INTEGER NOT NULL,
    end_offset INTEGER NOT NULL,
    text TEXT NOT NULL,
    content_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_document ON chunks(document);
"""


@dataclass(frozen=True)
class StoredChunk:
    """A chunk as stored, with its id (the FAISS id)."""

    id: int
    document: str
    title: str
    heading: str
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class StoredDocument:
    path: str
    title: str
    content_hash: str
    n_chunks: int
    indexed_at: str


class ChunkStore:
    """SQLite file of chunks. Read-only stores are opened immutable: published index
    versions never change, so readers need no locks on the file."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        if readonly:
            uri = f"file:{path.resolve()}?mode=ro&immutable=1"
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        else:
            self._db = sqlite3.connect(path, check_same_thread=False)
            self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def commit(self) -> None:
        """Make the writes durable."""
        self._db.commit()

    def next_id(self) -> int:
        """The first unused chunk id (ids are never reused within an index's history)."""
        (max_id,) = self._db.execute("SELECT COALESCE(MAX(id), -1) FROM chunks").fetchone()
        return int(max_id) + 1

    def document_hashes(self) -> dict[str, str]:
        """Content hash of every indexed document, by path."""
        rows = self._db.execute("SELECT path, content_hash FROM documents").fetchall()
        return {path: digest for path, digest in rows}

    def documents(self) -> list[StoredDocument]:
        """Every indexed document, by path."""
        rows = self._db.execute(
            "SELECT path, title, content_hash, n_chunks, indexed_at FROM documents ORDER BY path"
        ).fetchall()
        return [StoredDocument(*row) for row in rows]

    def count_chunks(self) -> int:
        (count,) = self._db.execute("SELECT COUNT(*) FROM chunks").fetchone()
        return int(count)

    def add_document(self, doc: Document, chunks: Sequence[Chunk], first_id: int) -> list[int]:
        """Insert ``doc`` and its chunks under ids ``first_id, first_id + 1, …``."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        self._db.execute(
            "INSERT INTO documents VALUES (?, ?, ?, ?, ?)",
            (doc.path, doc.title, doc.content_hash, len(chunks), now),
        )
        ids = list(range(first_id, first_id + len(chunks)))
        self._db.executemany(
            "INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    cid,
                    c.document,
                    c.title,
                    c.heading,
                    c.start,
                    c.end,
                    c.text,
                    sha256_bytes(c.text.encode()),
                )
                for cid, c in zip(ids, chunks, strict=True)
            ],
        )
        return ids

    def remove_document(self, path: str) -> list[int]:
        """Delete ``path`` and its chunks; returns the removed chunk ids."""
        rows = self._db.execute("SELECT id FROM chunks WHERE document = ?", (path,))
        ids = [int(row[0]) for row in rows]
        self._db.execute("DELETE FROM chunks WHERE document = ?", (path,))
        self._db.execute("DELETE FROM documents WHERE path = ?", (path,))
        return ids

    def get(self, ids: Sequence[int]) -> dict[int, StoredChunk]:
        """Chunks by id (ids not found are left out)."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        with self._lock:
            rows = self._db.execute(
                "SELECT id, document, title, heading, start_offset, end_offset, text "
                f"FROM chunks WHERE id IN ({marks})",
                [int(i) for i in ids],
            ).fetchall()
        return {row[0]: StoredChunk(*row) for row in rows}
