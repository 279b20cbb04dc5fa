"""Search latency, Flat (exact) vs HNSW (approximate), on synthetic 384-d unit vectors.

For each corpus size: p50/p95 single-query latency of Flat and of HNSW at several efSearch
values, with HNSW recall@10 measured against Flat's exact top-10. Vectors are drawn around
random cluster centres (as sentence embeddings are), normalised; queries come from the same
distribution but are not in the corpus. The indexes are built with ggserve's own
``VectorIndex`` (the same parameters ``ggserve index build`` uses).

    python -m bench rag_search                 # 10k, 100k, 1M
    python -m bench rag_search --sizes 10000   # quick
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Iterator

import numpy as np

from server.rag.vector_index import HNSW_EF_CONSTRUCTION, HNSW_M, VectorIndex

DIM = 384
CHUNK = 50_000


def synthetic(n: int, seed: int, centres: np.ndarray, spread: float) -> Iterator[np.ndarray]:
    """``n`` unit vectors near ``centres``, generated in chunks to bound memory."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < n:
        m = min(CHUNK, n - done)
        picks = centres[rng.integers(0, len(centres), m)]
        rows = picks + rng.normal(scale=spread, size=(m, DIM)).astype(np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        yield rows.astype(np.float32)
        done += m


def latencies_ms(index: VectorIndex, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.empty((len(queries), k), dtype=np.int64)
    times = np.empty(len(queries))
    for i, q in enumerate(queries):
        t0 = time.perf_counter()
        _, found = index.search(q[None, :], k)
        times[i] = (time.perf_counter() - t0) * 1000
        ids[i] = found[0]
    return times, ids


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(f) & set(t)) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def rss_gb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1e6
    return 0.0


def run(size: int, n_queries: int, n_flat_queries: int, efs: list[int], k: int) -> None:
    rng = np.random.default_rng(size)
    centres = rng.normal(size=(max(100, size // 1000), DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    spread = 0.6 / np.sqrt(DIM)  # neighbours within a cluster at cosine ≈ 0.7, like MiniLM
    flat = VectorIndex.create(DIM, "flat")
    hnsw = VectorIndex.create(DIM, "hnsw")
    build_flat = build_hnsw = 0.0
    start_id = 0
    for rows in synthetic(size, seed=1, centres=centres, spread=spread):
        ids = np.arange(start_id, start_id + len(rows), dtype=np.int64)
        t0 = time.perf_counter()
        flat.add(ids, rows)
        t1 = time.perf_counter()
        hnsw.add(ids, rows)
        build_flat += t1 - t0
        build_hnsw += time.perf_counter() - t1
        start_id += len(rows)
    queries = next(synthetic(n_queries, seed=2, centres=centres, spread=spread))
    # Exact ground truth in one batched call (BLAS), then timed single queries.
    _, truth = flat.search(queries, k)
    flat_ms, flat_ids = latencies_ms(flat, queries[:n_flat_queries], k)
    # Batched (BLAS) and single-query scans may order exact ties differently: not exactly 1.
    flat_recall = recall_at(flat_ids, truth[:n_flat_queries])
    print(
        f"\n## {size:,} vectors × {DIM}-d   (HNSW M={HNSW_M}, efConstruction="
        f"{HNSW_EF_CONSTRUCTION}; build: Flat {build_flat:.1f} s, HNSW {build_hnsw:.1f} s; "
        f"RSS {rss_gb():.1f} GB)"
    )
    print("| index | efSearch | queries | p50 ms | p95 ms | recall@10 | p95 speed-up vs Flat |")
    print("|---|---|---|---|---|---|---|")
    flat_p95 = float(np.percentile(flat_ms, 95))
    print(
        f"| Flat | – | {n_flat_queries} | {np.percentile(flat_ms, 50):.2f} | {flat_p95:.2f} "
        f"| {flat_recall:.3f} | 1.0× |"
    )
    for ef in efs:
        hnsw.set_ef_search(ef)
        latencies_ms(hnsw, queries[:50], k)  # warm caches
        ms, found = latencies_ms(hnsw, queries, k)
        p95 = float(np.percentile(ms, 95))
        print(
            f"| HNSW | {ef} | {n_queries} | {np.percentile(ms, 50):.2f} | {p95:.2f} "
            f"| {recall_at(found, truth):.3f} | {flat_p95 / p95:.0f}× |"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--flat-queries-1m", type=int, default=200)
    parser.add_argument("--ef", type=int, nargs="+", default=[32, 64, 96, 128, 256])
    parser.add_argument("-k", type=int, default=10)
    args = parser.parse_args(argv)
    import faiss

    print(
        f"# ggserve search benchmark — faiss {faiss.__version__}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs; single queries run on 1 thread (as in the server)"
    )
    for size in args.sizes:
        flat_queries = args.flat_queries_1m if size >= 1_000_000 else min(args.queries, 500)
        run(size, args.queries, flat_queries, args.ef, args.k)


if __name__ == "__main__":
    main()
