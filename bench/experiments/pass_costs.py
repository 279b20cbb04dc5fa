"""What a step costs by its shape: tokens, and passes over the weights.

With one KV stream per sequence llama.cpp runs a step as micro-batches of consecutive seq ids
(``server/engine/micro_batches.py``). This times the engine's own executor on batch shapes
that differ only in that: 8 decoding sequences with and without an idle slot between them,
2 with and without, 11 tokens as one pass (11 sequences) or two (8 sequences and a 3-token
draft on one), and drafts on a lone sequence. Shapes run in a shuffled order each round, every
sequence trimmed back after each step, so all see the same cache lengths. Prints the median of
``--repeats`` rounds per shape. The numbers behind ``StepCost``'s pass term and the planner's
preference for slots next to busy ones (docs/engine.md).

    python -m bench pass_costs --repeats 30
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

from bench.harness.server import MODEL

PROMPT = 60  # tokens each sequence holds before every timed step
SLOTS = 12


def shapes() -> dict[str, dict[int, int]]:
    """Shape name -> {seq_id: rows} (1 row = the decode token, more = a draft after it)."""
    ones = {s: 1 for s in range(8)}
    return {
        "1 seq": {0: 1},
        "1 seq + 1 drafted": {0: 2},
        "1 seq + 3 drafted": {0: 4},
        "2 seqs": {0: 1, 1: 1},
        "2 seqs, gap": {0: 1, 2: 1},
        "8 seqs": ones,
        "8 seqs, gap": {**{s: 1 for s in range(4)}, **{s: 1 for s in range(5, 9)}},
        "9 seqs": {s: 1 for s in range(9)},
        "11 seqs": {s: 1 for s in range(11)},
        "8 seqs + 3 drafted on one": {**ones, 3: 4},
        "8 seqs + 1 drafted on each": {s: 2 for s in range(8)},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--threads", type=int, default=0, help="0 = physical cores")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)

    from server.engine.threads import apply_openmp_defaults

    apply_openmp_defaults()  # before llama_cpp loads libgomp
    from server.engine.config import EngineConfig
    from server.engine.executor import Slot, StepExecutor
    from server.engine.micro_batches import graph_passes
    from server.engine.model import LoadedModel
    from server.engine.planner import DecodeToken, PromptChunk, StepPlan

    config = EngineConfig(
        model_path=args.model, n_slots=SLOTS, n_ctx=SLOTS * 256, n_threads=args.threads
    )
    model = LoadedModel(config)
    executor = StepExecutor(model.ctx, model.memory, model.n_batch, [Slot(i) for i in range(SLOTS)])
    tokens = list(range(100, 100 + PROMPT))
    for seq_id in range(SLOTS):
        chunk = PromptChunk(key=seq_id, seq_id=seq_id, start=0, end=PROMPT, completes=True)
        executor.decode(StepPlan(chunks=(chunk,)), lambda _: tokens)
    table = shapes()
    seconds: dict[str, list[float]] = {name: [] for name in table}
    order = list(table)
    rng = random.Random(0)
    for _ in range(args.repeats):
        rng.shuffle(order)
        for name in order:
            decodes = tuple(
                DecodeToken(key=s, seq_id=s, token=7, pos=PROMPT, draft=(8,) * (rows - 1))
                for s, rows in sorted(table[name].items())
            )
            started = time.perf_counter()
            status = executor.decode(StepPlan(decodes=decodes), lambda _: tokens).status
            seconds[name].append(time.perf_counter() - started)
            if status != 0:
                raise SystemExit(f"llama_decode failed ({status}) on {name}")
            for seq_id in table[name]:
                executor.keep_prefix(seq_id, PROMPT)
    print(f"{args.model.name}, {PROMPT}-token caches, median of {args.repeats} rounds")
    print(f"  {'shape':28s} {'tokens':>6s} {'passes':>6s} {'ms':>8s}")
    for name, rows in table.items():
        n_tokens, passes = sum(rows.values()), graph_passes(rows.items())
        median = statistics.median(seconds[name]) * 1000
        print(f"  {name:28s} {n_tokens:6d} {passes:6d} {median:8.2f}")
    executor.close()
    model.close()


if __name__ == "__main__":
    main()
