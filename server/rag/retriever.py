"""Search a published index: embed the question, FAISS top-k, chunk rows, threshold.

``RetrieverHolder`` is what the server keeps: it hands out the current retriever and swaps in
a reloaded one atomically, so requests in flight finish on the version they started with.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from server.rag import layout
from server.rag.embedder import Vectors
from server.rag.errors import EmbedderMismatchError, IndexCorruptError
from server.rag.manifest import CHUNKS_FILE, VECTORS_FILE, IndexManifest
from server.rag.store import ChunkStore
from server.rag.vector_index import HNSW_EF_SEARCH, VectorIndex

SNIPPET_CHARS = 240


class QueryEmbedder(Protocol):
    """What searching needs from an embedder (the real one is :class:`Embedder`)."""

    name: str
    dimension: int

    def embed_query(self, text: str) -> Vectors: ...


@dataclass(frozen=True)
class Hit:
    """One retrieved passage. ``n`` numbers it from 1 in rank order, as cited in answers."""

    n: int
    chunk_id: int
    document: str
    title: str
    heading: str
    score: float
    snippet: str
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class SearchResult:
    """Hits above the threshold, best first, with where the time went."""

    hits: list[Hit]
    embed_ms: float
    search_ms: float
    candidates: int  # hits before the threshold was applied
    top_score: float | None = None  # best score before the threshold (None: empty index)
    query_vector: Vectors | None = None  # the question's embedding, shape (dimension,)


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    """``text`` shortened to about ``limit`` characters at a word boundary."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat.rfind(" ", 0, limit)
    return flat[: cut if cut > limit // 2 else limit] + " …"


def check_embedder(manifest: IndexManifest, name: str, dimension: int, index_dir: Path) -> None:
    """Refuse an index built with another embedder than ``name`` / ``dimension``."""
    if manifest.embedder_name != name or manifest.dimension != dimension:
        raise EmbedderMismatchError(
            f"index {index_dir} was built with embedder '{manifest.embedder_name}' "
            f"({manifest.dimension}-d, from {manifest.embedder_path}) but the configured "
            f"embedder is '{name}' ({dimension}-d). Set GGSERVE_EMBEDDER_PATH to the folder "
            f"of '{manifest.embedder_name}', or rebuild the index with 'ggserve index build'."
        )


class Retriever:
    """A loaded, immutable index version plus the embedder that queries it."""

    def __init__(
        self,
        index_dir: Path,
        version: str,
        manifest: IndexManifest,
        vectors: VectorIndex,
        store: ChunkStore,
        embedder: QueryEmbedder,
    ) -> None:
        self.index_dir = index_dir
        self.version = version
        self.manifest = manifest
        self._vectors = vectors
        self._store = store
        self._embedder = embedder

    @classmethod
    def load(
        cls, index_dir: Path, embedder: QueryEmbedder, *, ef_search: int = HNSW_EF_SEARCH
    ) -> Retriever:
        """Open the live version of ``index_dir``; refuses a mismatched embedder or index."""
        live = layout.current_version(index_dir)
        manifest = IndexManifest.read(live)
        check_embedder(manifest, embedder.name, embedder.dimension, index_dir)
        try:
            vectors = VectorIndex.read(live / VECTORS_FILE)
        except RuntimeError as exc:  # FAISS reports I/O and format problems as RuntimeError
            raise IndexCorruptError(
                f"cannot read {live / VECTORS_FILE}: {exc}; rebuild the index"
            ) from exc
        if vectors.dimension != manifest.dimension or vectors.count != manifest.count:
            raise IndexCorruptError(
                f"{live} is inconsistent: manifest says {manifest.count} × {manifest.dimension}"
                f"-d, the FAISS file holds {vectors.count} × {vectors.dimension}-d; rebuild it"
            )
        vectors.set_ef_search(ef_search)
        store = ChunkStore(live / CHUNKS_FILE, readonly=True)
        return cls(index_dir, live.name, manifest, vectors, store, embedder)

    @property
    def count(self) -> int:
        """Number of passages in the index."""
        return self._vectors.count

    def search(self, query: str, k: int, threshold: float | None = None) -> SearchResult:
        """Top ``k`` passages for ``query`` whose cosine score is at least ``threshold``."""
        t0 = time.perf_counter()
        q = self._embedder.embed_query(query)
        t1 = time.perf_counter()
        scores, ids = self._vectors.search(q, k)
        found = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
        rows = self._store.get([i for i, _ in found])
        t2 = time.perf_counter()
        hits: list[Hit] = []
        for chunk_id, score in found:
            row = rows.get(chunk_id)
            if row is None or (threshold is not None and score < threshold):
                continue
            hits.append(
                Hit(
                    n=len(hits) + 1,
                    chunk_id=chunk_id,
                    document=row.document,
                    title=row.title,
                    heading=row.heading,
                    score=round(score, 4),
                    snippet=snippet(row.text),
                    text=row.text,
                    start=row.start,
                    end=row.end,
                )
            )
        top = max((score for _, score in found), default=None)
        return SearchResult(hits, (t1 - t0) * 1000, (t2 - t1) * 1000, len(found), top, q[0])

    def close(self) -> None:
        """Release the chunk store."""
        self._store.close()


@dataclass(frozen=True)
class ReloadReport:
    """Outcome of a hot reload."""

    index: str
    previous_version: str | None
    version: str
    passages: int
    changed: bool


class RetrieverHolder:
    """The server's handle on the current retriever; reloads swap it atomically.

    ``current`` is a plain attribute read: a request takes the reference once and uses that
    retriever to the end, so a reload never changes the index under a request. The old
    retriever is not closed on swap (requests may still be using it); its read-only SQLite
    connection is released when the last reference goes.
    """

    def __init__(self, index_dir: Path, embedder: QueryEmbedder, retriever: Retriever) -> None:
        self.index_dir = index_dir
        self._embedder = embedder
        self.current = retriever
        self._reload_lock = threading.Lock()

    @classmethod
    def open(cls, index_dir: Path, embedder: QueryEmbedder) -> RetrieverHolder:
        """Load ``index_dir`` now (start-up); raises the same clear errors as ``Retriever.load``."""
        return cls(index_dir, embedder, Retriever.load(index_dir, embedder))

    def reload(self) -> ReloadReport:
        """Load the live version again if it changed and swap it in. A failed load raises and
        leaves the current retriever serving."""
        with self._reload_lock:
            previous = self.current
            live = layout.current_version(self.index_dir)
            if live.name == previous.version:
                return ReloadReport(
                    str(self.index_dir), previous.version, previous.version, previous.count, False
                )
            fresh = Retriever.load(self.index_dir, self._embedder)
            self.current = fresh
            return ReloadReport(
                str(self.index_dir), previous.version, fresh.version, fresh.count, True
            )
