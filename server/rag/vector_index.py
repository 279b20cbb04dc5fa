"""The FAISS index behind a retrieval index: exact (Flat) or approximate (HNSW), with ids.

Vectors are unit length and compared by inner product, so scores are cosine similarities.
Ids are the chunk ids of the chunk store (``IndexIDMap``), which is what lets documents be
added and removed without rebuilding everything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

IndexKind = Literal["flat", "hnsw"]
KindRequest = Literal["auto", "flat", "hnsw"]

# Below this many vectors an exact search is fast enough (see bench/rag_search.py) and has
# perfect recall; above it HNSW keeps p95 latency in single-digit milliseconds.
HNSW_AUTO_THRESHOLD = 100_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128

Ids = npt.NDArray[np.int64]
Matrix = npt.NDArray[np.float32]


def _faiss() -> Any:
    import faiss

    return faiss


def choose_kind(request: KindRequest, count: int) -> IndexKind:
    """Resolve ``auto`` by corpus size."""
    if request == "auto":
        return "hnsw" if count >= HNSW_AUTO_THRESHOLD else "flat"
    return request


class VectorIndex:
    """A FAISS ``IndexIDMap`` over Flat-IP or HNSW-IP storage."""

    def __init__(self, index: Any, kind: IndexKind) -> None:
        self._index = index
        self.kind = kind

    @classmethod
    def create(
        cls,
        dimension: int,
        kind: IndexKind,
        *,
        hnsw_m: int = HNSW_M,
        ef_construction: int = HNSW_EF_CONSTRUCTION,
    ) -> VectorIndex:
        """An empty index of ``kind`` for ``dimension``-d unit vectors."""
        faiss = _faiss()
        if kind == "flat":
            inner = faiss.IndexFlatIP(dimension)
        else:
            inner = faiss.IndexHNSWFlat(dimension, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = ef_construction
            inner.hnsw.efSearch = HNSW_EF_SEARCH
        return cls(faiss.IndexIDMap(inner), kind)

    @classmethod
    def read(cls, path: Path) -> VectorIndex:
        """Load an index written by :meth:`write`."""
        faiss = _faiss()
        index = faiss.read_index(str(path))
        inner = faiss.downcast_index(index.index)
        kind: IndexKind = "hnsw" if isinstance(inner, faiss.IndexHNSW) else "flat"
        return cls(index, kind)

    def write(self, path: Path) -> None:
        """Save to ``path``."""
        _faiss().write_index(self._index, str(path))

    @property
    def dimension(self) -> int:
        return int(self._index.d)

    @property
    def count(self) -> int:
        return int(self._index.ntotal)

    def set_ef_search(self, ef: int) -> None:
        """HNSW breadth of search (recall vs latency); no effect on Flat."""
        if self.kind == "hnsw":
            _faiss().downcast_index(self._index.index).hnsw.efSearch = ef

    def add(self, ids: Ids, vectors: Matrix) -> None:
        """Add ``vectors`` (n × d, float32, unit length) under ``ids``."""
        if len(ids):
            self._index.add_with_ids(
                np.ascontiguousarray(vectors, dtype=np.float32),
                np.ascontiguousarray(ids, dtype=np.int64),
            )

    def ids_and_vectors(self) -> tuple[Ids, Matrix]:
        """Every stored id with its vector (HNSW and Flat both keep the raw vectors)."""
        ids = _faiss().vector_to_array(self._index.id_map).astype(np.int64)
        vectors = self._index.index.reconstruct_n(0, self.count) if self.count else None
        if vectors is None:
            return ids, np.empty((0, self.dimension), dtype=np.float32)
        return ids, np.asarray(vectors, dtype=np.float32)

    def rebuilt(self, kind: IndexKind, drop: Ids | None = None) -> VectorIndex:
        """A new index of ``kind`` with the same vectors, minus the ids in ``drop``."""
        ids, vectors = self.ids_and_vectors()
        if drop is not None and len(drop):
            keep = ~np.isin(ids, drop)
            ids, vectors = ids[keep], vectors[keep]
        fresh = VectorIndex.create(self.dimension, kind)
        fresh.add(ids, vectors)
        return fresh

    def remove(self, ids: Ids) -> VectorIndex:
        """Remove ``ids``. HNSW graphs cannot delete nodes, so an HNSW index is rebuilt from
        its stored vectors; returns the index to use from now on."""
        if not len(ids):
            return self
        if self.kind == "hnsw":
            return self.rebuilt("hnsw", drop=ids)
        self._index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))
        return self

    def search(self, queries: Matrix, k: int) -> tuple[Matrix, Ids]:
        """Top-``k`` (scores, ids) per query row; missing results have id -1."""
        if len(queries) == 1:
            # One query gains nothing from OpenMP workers, and on a server whose cores are busy
            # decoding, waking them costs tens of milliseconds (bench/rag_search.py).
            # The setting is per calling thread.
            _faiss().omp_set_num_threads(1)
        scores, ids = self._index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return scores, ids
