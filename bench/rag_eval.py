"""RAG quality on the evaluation set (eval/rag): retrieval recall@1/@5 and answer accuracy.

Retrieval: a question counts as found at k when one of the top-k passages contains its
answer ``passage`` (whitespace-normalised), and separately when one comes from its document.
Answers (when the LLM is available): the share of answers containing the expected ``fact``,
for ggserve's RagAgent and for the same model asked closed-book (the peer: no retrieval),
with the mean embed / search / generate time per question.

    python -m bench rag_eval            # `make eval`
    python -m bench rag_eval --no-llm   # retrieval only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
from pathlib import Path

from bench.harness.server import ROOT
from server.agents import AgentContext, RagAgent
from server.agents.engine_chat import engine_chat, engine_token_counter
from server.engine.types import Engine, SamplingParams
from server.rag.builder import build_index
from server.rag.embedder import Embedder
from server.rag.retriever import Retriever
from server.settings import Settings

EVAL = ROOT / "eval" / "rag"


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def retrieval(retriever: Retriever, questions: list[dict[str, str]]) -> None:
    counts = {"passage@1": 0, "passage@5": 0, "document@1": 0, "document@5": 0}
    misses = []
    for item in questions:
        hits = retriever.search(item["question"], 5).hits
        passage_rank = next((h.n for h in hits if _norm(item["passage"]) in _norm(h.text)), None)
        doc_rank = next((h.n for h in hits if h.document == item["document"]), None)
        for name, rank in (("passage", passage_rank), ("document", doc_rank)):
            counts[f"{name}@1"] += rank == 1
            counts[f"{name}@5"] += rank is not None
        if passage_rank != 1:
            misses.append((item["question"], passage_rank))
    n = len(questions)
    print(f"\n## Retrieval ({n} questions, {retriever.count} passages)")
    print("| measure | recall@1 | recall@5 |")
    print("|---|---|---|")
    for name in ("passage", "document"):
        print(f"| answer {name} | {counts[f'{name}@1'] / n:.2f} | {counts[f'{name}@5'] / n:.2f} |")
    for question, rank in misses:
        print(f"- not first: {question!r} (rank {rank})")


async def answers(
    engine: Engine, retriever: Retriever, questions: list[dict[str, str]], settings: Settings
) -> None:
    agent = RagAgent()
    rows: dict[str, list[bool]] = {"ggserve RagAgent": [], "closed-book (peer)": []}
    embed, search, generate = [], [], []
    for item in questions:
        for name, source in (("ggserve RagAgent", retriever), ("closed-book (peer)", None)):
            ctx = AgentContext(
                settings=settings,
                retriever=source,
                chat=engine_chat(engine),
                request_id="eval",
                params=SamplingParams(max_tokens=64, temperature=0.0),
                count_tokens=engine_token_counter(engine),
                n_ctx=engine.n_ctx_per_slot,
            )
            answer = await agent.answer(item["question"], ctx)
            rows[name].append(_norm(item["fact"]) in _norm(answer.text))
            if source is not None:
                embed.append(answer.timings.embed_ms)
                search.append(answer.timings.search_ms)
                generate.append(answer.timings.generate_ms)
    n = len(questions)
    print(f"\n## Answers contain the expected fact ({n} questions, greedy, max 64 tokens)")
    print("| answerer | fact rate |")
    print("|---|---|")
    for name, found in rows.items():
        print(f"| {name} | {sum(found) / n:.2f} |")
    print(
        f"\nggserve per question (median): embed {statistics.median(embed):.1f} ms, "
        f"search {statistics.median(search):.2f} ms, generate {statistics.median(generate):.0f} ms"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-llm", action="store_true", help="Retrieval recall only.")
    parser.add_argument("--embedder", type=Path, default=ROOT / "models" / "all-MiniLM-L6-v2")
    parser.add_argument(
        "--model", type=Path, default=ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    )
    args = parser.parse_args(argv)
    questions = [json.loads(line) for line in (EVAL / "questions.jsonl").read_text().splitlines()]
    embedder = Embedder(args.embedder, threads=1)  # llama.cpp decodes in this process
    print(f"# ggserve RAG evaluation — {platform.machine()}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        report = build_index(EVAL / "docs", Path(tmp) / "eval", embedder)
        print(
            f"index: {report.total_documents} documents, {report.total_chunks} passages "
            f"({report.index_kind}), embedder {embedder.name}"
        )
        retriever = Retriever.load(Path(tmp) / "eval", embedder)
        retrieval(retriever, questions)
        if args.no_llm:
            return
        if not args.model.is_file():
            print(f"\n(answers skipped: {args.model} missing; run 'ggserve models fetch')")
            return
        from server.runtime.loading import create_engine

        settings = Settings(_env_file=None, model_path=args.model, n_slots=1, warmup=False)
        engine, _ = create_engine(settings)
        try:
            asyncio.run(answers(engine, retriever, questions, settings))
        finally:
            engine.close()


if __name__ == "__main__":
    main()
