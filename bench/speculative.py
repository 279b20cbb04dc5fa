"""Speculative decoding: single-client decode tok/s with prompt lookup on vs off, same run.

Three workloads, each request run both ways back to back (the order alternating), greedy:

- ``ask``: every question of the RAG eval set (eval/rag) with the passages the RagAgent would
  retrieve, in the agent's own grounded prompt (what ``/v1/ask`` decodes);
- ``quote``: chats asking to quote the retrieved passage that answers the question;
- ``chat``: chats that quote nothing (stories, explanations), where speculation must cost
  nothing (target: never below 0.97x).

Decode tok/s counts tokens after the first over the time from the first to the last, so prompt
evaluation is not in it. It also reports how many answers were token-identical both ways. The
peer of speculation is the same engine without it (per-request ``speculative: false``): the
issue's targets are ratios to that (>= 1.4x on extractive answers).

    python -m bench speculative            # writes bench/results/speculative.json
    python -m bench speculative --quick    # 4 items per workload, no results file
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from bench.harness import report
from bench.harness.server import ROOT
from server.agents.prompt import grounded_messages
from server.chat.prompt import ChatPrompt
from server.engine.llama_engine import LlamaEngine
from server.engine.types import FinishEvent, GenerationRequest, SamplingParams, TokenEvent
from server.rag.builder import build_index
from server.rag.embedder import Embedder
from server.rag.retriever import Retriever
from server.runtime.engine_config import engine_config
from server.settings import Settings

EVAL = ROOT / "eval" / "rag"
RESULTS = ROOT / "bench" / "results" / "speculative.json"
CHATS = (
    "Write a short story about a robot who learns to paint.",
    "Explain what a CPU does.",
    "Why is the sky blue?",
    "Give me three tips for a job interview.",
    "Describe a sunset over the ocean.",
    "What makes a good friend?",
    "Write a poem about autumn leaves.",
    "How do airplanes stay in the air?",
)


@dataclass
class Run:
    tokens: list[int]
    decode_s: float


async def generate(engine: LlamaEngine, prompt: list[int], params: SamplingParams) -> Run:
    tokens: list[int] = []
    first = last = 0.0
    async for event in engine.generate(GenerationRequest("bench", prompt, params)):
        if isinstance(event, FinishEvent):
            break
        if not isinstance(event, TokenEvent):
            continue
        last = time.perf_counter()
        if not tokens:
            first = last
        tokens.append(event.token_id)
    return Run(tokens, last - first)


def workloads(quick: bool, embedder_dir: Path) -> dict[str, list[list[dict[str, str]]]]:
    """Chat messages per workload."""
    questions = [json.loads(line) for line in (EVAL / "questions.jsonl").read_text().splitlines()]
    if quick:
        questions = questions[:4]
    settings = Settings(_env_file=None)
    embedder = Embedder(embedder_dir, threads=1)  # llama.cpp decodes in this process
    ask, quote = [], []
    with tempfile.TemporaryDirectory() as tmp:
        build_index(EVAL / "docs", Path(tmp) / "eval", embedder)
        retriever = Retriever.load(Path(tmp) / "eval", embedder)
        for item in questions:
            hits = retriever.search(item["question"], settings.rag_top_k).hits
            ask.append(grounded_messages(settings.system_prompt, item["question"], hits))
            passage = hits[0].text if hits else ""
            quote.append(
                [
                    {
                        "role": "user",
                        "content": f"Passage: {passage}\n\nQuote, word for word, the sentence "
                        f"of the passage that answers: {item['question']}",
                    }
                ]
            )
    chats = [[{"role": "user", "content": c}] for c in (CHATS[:4] if quick else CHATS)]
    return {"ask": ask, "quote": quote, "chat": chats}


async def measure(
    engine: LlamaEngine, sets: dict[str, list[list[dict[str, str]]]], max_tokens: int
) -> dict[str, dict[str, float | int]]:
    chat = ChatPrompt(engine)
    base = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    out: dict[str, dict[str, float | int]] = {}
    for name, conversations in sets.items():
        totals = {True: [0, 0.0], False: [0, 0.0]}
        identical = 0
        before = engine.stats()
        for i, messages in enumerate(conversations):
            prompt = chat.tokens(messages)
            runs: dict[bool, Run] = {}
            for speculative in (True, False) if i % 2 else (False, True):
                engine.reset_prefix_cache()
                runs[speculative] = await generate(
                    engine, prompt, replace(base, speculative=speculative)
                )
                run = runs[speculative]
                totals[speculative][0] += max(len(run.tokens) - 1, 0)
                totals[speculative][1] += run.decode_s
            identical += runs[True].tokens == runs[False].tokens
        after = engine.stats()
        on = totals[True][0] / totals[True][1] if totals[True][1] else 0.0
        off = totals[False][0] / totals[False][1] if totals[False][1] else 0.0
        drafted = after.speculative_draft_tokens_total - before.speculative_draft_tokens_total
        accepted = (
            after.speculative_accepted_tokens_total - before.speculative_accepted_tokens_total
        )
        out[name] = {
            "requests": len(conversations),
            "off_tok_s": round(off, 1),
            "on_tok_s": round(on, 1),
            "ratio": round(on / off, 3) if off else 0.0,
            "identical": identical,
            "drafted": drafted,
            "accepted": accepted,
        }
    return out


def table(results: dict[str, dict[str, float | int]]) -> list[list[str]]:
    """Rows (header first): decode tok/s per workload, off / on, and the ratio."""
    rows = [["workload", "requests", "off tok/s", "on tok/s", "on / off", "identical", "accepted"]]
    for name, r in results.items():
        rate = f"{r['accepted']}/{r['drafted']}" if r["drafted"] else "0"
        rows.append(
            [
                name,
                str(r["requests"]),
                f"{r['off_tok_s']:.1f}",
                f"{r['on_tok_s']:.1f}",
                f"{r['ratio']:.2f}x",
                f"{r['identical']}/{r['requests']}",
                rate,
            ]
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 items per workload, no file.")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--embedder", type=Path, default=ROOT / "models" / "all-MiniLM-L6-v2")
    parser.add_argument(
        "--model", type=Path, default=ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    )
    args = parser.parse_args(argv)
    sets = workloads(args.quick, args.embedder)
    load_before = os.getloadavg()[0]
    settings = Settings(_env_file=None, model_path=args.model, n_slots=2)
    engine = LlamaEngine(engine_config(settings))
    try:
        engine.warmup()
        results = asyncio.run(measure(engine, sets, args.max_tokens))
    finally:
        engine.close()
    print(
        f"# speculative decoding — {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load before {load_before:.2f}; greedy, {args.max_tokens} tokens max, single client"
    )
    print(report.markdown_table(table(results)))
    if not args.quick:
        record = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "load_before": round(load_before, 2),
            "max_tokens": args.max_tokens,
            "model": args.model.name,
            "workloads": results,
        }
        RESULTS.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
