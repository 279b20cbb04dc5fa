"""What a prompt token, a slot copy, a state save and a RAM restore cost on this machine.

The numbers behind ``server/engine/reuse_cost.py`` (docs/engine.md, "When a cached prefix is
worth taking"): the engine's own executor on one context of ``--slots`` sequences of
``--n-ctx`` tokens, one thread pool, no HTTP. Prints medians of ``--repeats`` runs:

- ``prefillN``: evaluating N prompt tokens of one sequence;
- ``dec1``: one decode token; ``copy+dec1``: a whole-stream copy (done inside the next
  decode) and that token, so their difference is the copy;
- ``save``/``restore``: a 120-token state out to host RAM and back.

    python -m bench reuse_costs --n-ctx 1024
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from bench.harness.server import MODEL


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--n-ctx", type=int, default=1024, help="tokens per slot")
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="0 = physical cores")
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args(argv)

    from server.engine.threads import apply_openmp_defaults

    apply_openmp_defaults()  # before llama_cpp loads libgomp
    from server.engine.config import EngineConfig
    from server.engine.executor import Slot, StepExecutor
    from server.engine.model import LoadedModel
    from server.engine.planner import DecodeToken, PromptChunk, StepPlan

    config = EngineConfig(
        model_path=args.model, n_slots=args.slots, n_ctx=args.n_ctx, n_threads=args.threads
    )
    model = LoadedModel(config)
    executor = StepExecutor(model.ctx, model.memory, model.n_batch, [Slot(i) for i in range(3)])
    tokens = list(range(100, 220))

    def timed(action: Callable[[], object]) -> float:
        started = time.perf_counter()
        action()
        return time.perf_counter() - started

    def prefill(seq: int, n: int) -> float:
        chunk = PromptChunk(key=seq, seq_id=seq, start=0, end=n, completes=True)
        return timed(lambda: executor.decode(StepPlan(chunks=(chunk,)), lambda _: tokens))

    def decode_one(seq: int, pos: int) -> float:
        token = DecodeToken(key=seq, seq_id=seq, token=5, pos=pos)
        return timed(lambda: executor.decode(StepPlan(decodes=(token,)), lambda _: tokens))

    prefill(0, len(tokens))  # slot 0 holds the 120-token history the others take from
    results: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        executor.clear(1)
        copy = timed(lambda: executor.copy_prefix(0, 1, 40)) + decode_one(1, 40)
        results.setdefault("copy+dec1", []).append(copy)
        results.setdefault("dec1", []).append(decode_one(1, 41))
        started = time.perf_counter()
        saved = executor.save(0)
        results.setdefault("save", []).append(time.perf_counter() - started)
        if saved is None:
            raise SystemExit("llama.cpp gave no state for slot 0")
        data, size = saved
        started = time.perf_counter()
        executor.restore(2, tokens, data, size, 40)
        results.setdefault("restore", []).append(time.perf_counter() - started)
    for n in (4, 8, 16, 32):
        for _ in range(max(2, args.repeats // 2)):
            executor.clear(2)
            results.setdefault(f"prefill{n}", []).append(prefill(2, n))
    print(f"{args.model.name}, {args.slots} slots of {args.n_ctx} tokens, state {size} bytes")
    for name, values in results.items():
        print(f"  {name:10s} {statistics.median(values) * 1000:8.2f} ms")
    executor.close()
    model.close()


if __name__ == "__main__":
    main()
