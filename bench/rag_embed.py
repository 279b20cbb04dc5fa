"""Embedding throughput (passages/s, batch 32): ggserve's Embedder vs sentence-transformers.

The peer is ``SentenceTransformer.encode`` called directly on the same model and passages;
the ratio shows what ggserve's wrapper (batching, normalisation, locking) costs.
Passages are ~200-token windows cut by ggserve's chunker from the evaluation documents,
i.e. the size ``ggserve index build`` embeds.

    python -m bench rag_embed [--passages 1024] [--embedder models/all-MiniLM-L6-v2]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

from bench.harness.server import ROOT
from server.rag.builder import effective_chunk_tokens
from server.rag.chunking import chunk_document
from server.rag.embedder import Embedder
from server.rag.loaders import Document, Section, collect_files, load_documents


def sentences(count: int) -> list[str]:
    """Single sentences of the evaluation documents (~15–25 tokens), like short FAQ entries."""
    docs, _ = load_documents(collect_files([ROOT / "eval" / "rag" / "docs"]))
    found = [
        s.strip()
        for doc in docs
        for s in " ".join(doc.text.split()).split(". ")
        if len(s.split()) >= 6
    ]
    return [found[i % len(found)] + f" ({i})" for i in range(count)]


def passages(embedder: Embedder, count: int) -> list[str]:
    docs, _ = load_documents(collect_files([ROOT / "eval" / "rag" / "docs"]))
    # One long text from all documents, so windows are full-size like real corpora.
    words = " ".join(doc.text for doc in docs).split()
    size = effective_chunk_tokens(200, embedder)
    out: list[str] = []
    shift = 0
    while len(out) < count:
        rotated = words[shift:] + words[:shift]
        text = " ".join(rotated)
        doc = Document("x", "", text, (Section("", 0, len(text)),), "")
        out += [c.text for c in chunk_document(doc, embedder.token_spans, chunk_tokens=size)]
        shift += 37
    return out[:count]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--passages", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--embedder", type=Path, default=ROOT / "models" / "all-MiniLM-L6-v2")
    args = parser.parse_args(argv)
    import torch

    embedder = Embedder(args.embedder, batch_size=args.batch)
    model = embedder._model  # the peer: the very same SentenceTransformer, called directly
    embedder.embed(sentences(args.batch))  # warm up
    print(
        f"# embedding throughput — {embedder.name}, batch {args.batch}; torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start"
    )
    print("| passages | embedder | passages/s | ms/passage | ratio to peer |")
    print("|---|---|---|---|---|")
    for label, texts in (
        ("sentences", sentences(args.passages)),
        ("index chunks", passages(embedder, args.passages)),
    ):
        mean_tokens = sum(len(embedder.token_spans(t)) for t in texts) / len(texts)
        rows = []
        for name, run in (
            ("ggserve Embedder.embed", lambda t=texts: embedder.embed(t)),
            (
                "sentence-transformers encode (peer)",
                lambda t=texts: model.encode(
                    t, batch_size=args.batch, normalize_embeddings=True, show_progress_bar=False
                ),
            ),
        ):
            best = float("inf")
            for _ in range(2):  # best of two: the first pass also warms caches
                t0 = time.perf_counter()
                run()
                best = min(best, time.perf_counter() - t0)
            rows.append((name, len(texts) / best))
        peer = rows[1][1]
        for name, rate in rows:
            print(
                f"| {len(texts)} {label}, {mean_tokens:.0f} tokens | {name} | {rate:.0f} "
                f"| {1000 / rate:.1f} | {rate / peer:.2f} |"
            )


if __name__ == "__main__":
    main()
