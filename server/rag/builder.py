"""Build and update retrieval indexes: load → chunk → embed → FAISS + chunk store → publish.

Every run writes a complete new version beside the live one and publishes it atomically
(see :mod:`server.rag.layout`); whatever fails before that leaves the live index as it was.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import numpy as np

from server.rag import layout
from server.rag.chunking import (
    DEFAULT_CHUNK_TOKENS,
    DEFAULT_OVERLAP_TOKENS,
    Chunk,
    TokenSpans,
    chunk_document,
)
from server.rag.embedder import EmbedProgress, Vectors
from server.rag.errors import DocumentNotInIndexError, NothingToIndexError
from server.rag.loaders import Document, Skipped, collect_files, load_documents
from server.rag.manifest import CHUNKS_FILE, VECTORS_FILE, IndexManifest
from server.rag.store import ChunkStore
from server.rag.vector_index import KindRequest, VectorIndex, choose_kind

# (phase, done, total): phases are "load", "embed", "write".
ProgressFn = Callable[[str, int, int], None]
# Room left in the embedder's input for the "title › heading" prefix and special tokens.
_PREFIX_TOKENS = 40


class EmbedderLike(Protocol):
    """What building needs from an embedder (the real one is :class:`Embedder`)."""

    name: str
    path: Path
    dimension: int
    max_seq_length: int

    def token_spans(self, text: str) -> list[tuple[int, int]]: ...

    def embed(self, texts: Sequence[str], *, progress: EmbedProgress | None = None) -> Vectors: ...


@dataclass
class BuildReport:
    """What a build or update did."""

    index: Path
    version: str | None  # None: nothing changed, nothing published
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    chunks_embedded: int = 0
    total_chunks: int = 0
    total_documents: int = 0
    index_kind: str = ""
    embed_seconds: float = 0.0
    seconds: float = 0.0


def effective_chunk_tokens(requested: int, embedder: EmbedderLike) -> int:
    """Chunk size that, with its heading prefix, still fits the embedder's input."""
    return max(8, min(requested, embedder.max_seq_length - _PREFIX_TOKENS))


def _chunk_all(
    docs: Sequence[Document], spans: TokenSpans, chunk_tokens: int, overlap: int
) -> list[tuple[Document, list[Chunk]]]:
    out = []
    for doc in docs:
        chunks = chunk_document(doc, spans, chunk_tokens=chunk_tokens, overlap_tokens=overlap)
        if chunks:
            out.append((doc, chunks))
    return out


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def build_index(
    docs_dir: Path,
    out: Path,
    embedder: EmbedderLike,
    *,
    kind: KindRequest = "auto",
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    overlap_tokens: int = DEFAULT_OVERLAP_TOKENS,
    progress: ProgressFn | None = None,
) -> BuildReport:
    """Index every supported file under ``docs_dir`` into a new version of ``out``."""
    if not docs_dir.is_dir():
        raise NothingToIndexError(f"documents folder {docs_dir} does not exist or is not a folder")
    layout.prepare_folder(out)
    started = time.perf_counter()
    own = out.resolve()  # an index inside the docs folder must not index itself
    files = [(path, key) for path, key in collect_files([docs_dir]) if not path.is_relative_to(own)]
    docs, skipped = load_documents(files, progress=progress)
    size = effective_chunk_tokens(chunk_tokens, embedder)
    overlap = min(overlap_tokens, size // 2)
    chunked = _chunk_all(docs, embedder.token_spans, size, overlap)
    if not chunked:
        raise NothingToIndexError(_nothing_message(docs_dir, len(files), skipped))
    report = BuildReport(index=out, version=None, skipped=skipped)
    staging = layout.new_staging(out)
    try:
        store = ChunkStore(staging / CHUNKS_FILE)
        n_chunks = sum(len(chunks) for _, chunks in chunked)
        vectors = VectorIndex.create(embedder.dimension, choose_kind(kind, n_chunks))
        _add_chunked(store, vectors, chunked, embedder, report, progress)
        report.added = [doc.path for doc, _ in chunked]
        manifest = IndexManifest(
            embedder_name=embedder.name,
            embedder_path=str(embedder.path),
            dimension=embedder.dimension,
            index_kind=vectors.kind,
            kind_requested=kind,
            count=vectors.count,
            documents=len(chunked),
            chunk_tokens=size,
            overlap_tokens=overlap,
            built_at=_now(),
            updated_at=_now(),
            docs_root=str(docs_dir.resolve()),
            files={doc.path: doc.content_hash for doc, _ in chunked},
            skipped=[asdict(s) for s in skipped],
        )
        _finish(store, vectors, manifest, staging, progress)
        report.version = layout.publish(out, staging)
    except BaseException:
        layout.discard(staging)
        raise
    _summarise(report, manifest, started)
    return report


def update_index(
    index_dir: Path,
    embedder: EmbedderLike,
    *,
    add: Sequence[Path] = (),
    remove: Sequence[str] = (),
    progress: ProgressFn | None = None,
) -> BuildReport:
    """Add or replace documents from ``add`` (files or folders; unchanged ones are skipped by
    content hash) and drop the documents named in ``remove``; publishes a new version."""
    from server.rag.retriever import check_embedder

    started = time.perf_counter()
    live = layout.current_version(index_dir)
    manifest = IndexManifest.read(live)
    check_embedder(manifest, embedder.name, embedder.dimension, index_dir)
    report = BuildReport(index=index_dir, version=None)

    unknown = [key for key in remove if key not in manifest.files]
    if unknown:
        known = ", ".join(sorted(manifest.files)[:10]) or "(none)"
        raise DocumentNotInIndexError(
            f"not in the index: {', '.join(unknown)}. Documents are named as 'index info "
            f"--documents' lists them, e.g. {known}"
        )
    files = [
        (path, key)
        for path, key in collect_files(add, Path(manifest.docs_root))
        if not path.is_relative_to(index_dir.resolve())
    ]
    docs, report.skipped = load_documents(files, progress=progress)
    changed: list[Document] = []
    for doc in docs:
        if manifest.files.get(doc.path) == doc.content_hash:
            report.unchanged.append(doc.path)
        else:
            changed.append(doc)
    chunked = _chunk_all(
        changed, embedder.token_spans, manifest.chunk_tokens, manifest.overlap_tokens
    )
    for doc in changed:
        if not any(d is doc for d, _ in chunked):
            report.skipped.append(Skipped(doc.path, "no text left after chunking"))
    if not chunked and not remove:
        _summarise(report, manifest, started)
        return report

    staging = layout.new_staging(index_dir)
    try:
        shutil.copy2(live / CHUNKS_FILE, staging / CHUNKS_FILE)
        store = ChunkStore(staging / CHUNKS_FILE)
        vectors = VectorIndex.read(live / VECTORS_FILE)
        drop: list[int] = []
        for key in [*remove, *(doc.path for doc, _ in chunked)]:
            if key in manifest.files:
                drop.extend(store.remove_document(key))
                manifest.files.pop(key)
                (report.removed if key in remove else report.replaced).append(key)
        vectors = vectors.remove(np.asarray(drop, dtype=np.int64))
        _add_chunked(store, vectors, chunked, embedder, report, progress)
        report.added = [doc.path for doc, _ in chunked if doc.path not in report.replaced]
        manifest.files.update({doc.path: doc.content_hash for doc, _ in chunked})
        wanted = choose_kind(manifest.kind_requested, vectors.count)
        if wanted != vectors.kind:
            vectors = vectors.rebuilt(wanted)
        manifest.index_kind = vectors.kind
        manifest.count = vectors.count
        manifest.documents = len(manifest.files)
        manifest.updated_at = _now()
        manifest.skipped = [asdict(s) for s in report.skipped]
        if manifest.count == 0:
            raise NothingToIndexError(
                f"removing {', '.join(remove)} would leave {index_dir} empty; "
                "delete the index folder instead"
            )
        _finish(store, vectors, manifest, staging, progress)
        report.version = layout.publish(index_dir, staging)
    except BaseException:
        layout.discard(staging)
        raise
    _summarise(report, manifest, started)
    return report


def _add_chunked(
    store: ChunkStore,
    vectors: VectorIndex,
    chunked: Sequence[tuple[Document, list[Chunk]]],
    embedder: EmbedderLike,
    report: BuildReport,
    progress: ProgressFn | None,
) -> None:
    texts = [chunk.embed_text for _, chunks in chunked for chunk in chunks]
    embed_started = time.perf_counter()
    embedded = embedder.embed(
        texts, progress=(lambda done, total: progress("embed", done, total)) if progress else None
    )
    report.embed_seconds = time.perf_counter() - embed_started
    report.chunks_embedded = len(texts)
    next_id = store.next_id()
    row = 0
    for doc, chunks in chunked:
        ids = store.add_document(doc, chunks, next_id)
        vectors.add(np.asarray(ids, dtype=np.int64), embedded[row : row + len(chunks)])
        next_id += len(chunks)
        row += len(chunks)


def _finish(
    store: ChunkStore,
    vectors: VectorIndex,
    manifest: IndexManifest,
    staging: Path,
    progress: ProgressFn | None,
) -> None:
    if progress:
        progress("write", 0, 1)
    store.commit()
    store.close()
    vectors.write(staging / VECTORS_FILE)
    manifest.write(staging)
    if progress:
        progress("write", 1, 1)


def _summarise(report: BuildReport, manifest: IndexManifest, started: float) -> None:
    report.total_chunks = manifest.count
    report.total_documents = manifest.documents
    report.index_kind = manifest.index_kind
    report.seconds = time.perf_counter() - started


def _nothing_message(docs_dir: Path, n_files: int, skipped: Sequence[Skipped]) -> str:
    if n_files == 0:
        return f"{docs_dir} holds no files to index; put .md, .txt, .html or .pdf files in it"
    reasons = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:5])
    more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
    return f"nothing indexable in {docs_dir}: every file was skipped — {reasons}{more}"
