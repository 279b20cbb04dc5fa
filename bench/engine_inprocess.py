"""In-process engine benchmark: ggserve's LlamaEngine vs raw ``llama_cpp.Llama``.

1. single stream: decode tok/s of one greedy streaming chat completion (128 new tokens) through
   the engine and through ``llama_cpp.Llama.create_chat_completion`` with the same model, the
   same threads and the same prompt; prints the engine/raw ratio (target: overhead <= 5%).
2. aggregate: tok/s with 1/2/4/8 concurrent sequences through the engine (8 slots).

End-of-generation tokens are biased away in both so every run produces exactly
``--max-tokens`` tokens. Runs alternate engine/raw ``--repeats`` times and report the best of
each, because the machine may be shared. No HTTP here: see the HTTP benchmarks for that.

    python -m bench engine_inprocess [--model PATH] [--threads N] [--repeats 3]

llama_cpp and the engine are imported in ``main``, after ``--gomp-spincount`` has set
``GOMP_SPINCOUNT``: OpenMP reads its environment when llama_cpp loads libgomp.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench.harness.prompts import TOPICS
from bench.harness.server import ROOT

if TYPE_CHECKING:
    import llama_cpp

    from server.engine.llama_engine import LlamaEngine
    from server.engine.types import FinishEvent

PROMPTS = list(TOPICS[:8])  # the same long-answer topics the HTTP benchmark sends


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--model", type=Path, default=ROOT / "models/SmolLM2-135M-Instruct.Q4_1.gguf"
    )
    parser.add_argument("--threads", type=int, default=0, help="0 = engine default")
    parser.add_argument(
        "--threads-batch",
        type=int,
        default=0,
        help="threads for multi-token batches; 0 = --threads",
    )
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", default="1,2,4,8")
    parser.add_argument(
        "--gomp-spincount",
        default=None,
        help="set GOMP_SPINCOUNT (OpenMP idle spin) for this run; libgomp's default otherwise",
    )
    parser.add_argument("--skip-raw", action="store_true")
    parser.add_argument("--skip-aggregate", action="store_true")
    parser.add_argument("--skip-prefix", action="store_true")
    return parser.parse_args(argv)


def messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def eog_bias(engine: LlamaEngine) -> tuple[tuple[int, float], ...]:
    model = engine._model
    return tuple((t, -100.0) for t in range(model.n_vocab) if model.is_eog(t))


async def engine_stream(
    engine: LlamaEngine, prompt: str, max_tokens: int
) -> tuple[int, float, float]:
    """Returns (tokens, seconds from submit to first token, seconds first → last token)."""
    from server.chat.prompt import ChatPrompt
    from server.engine.types import FinishEvent, GenerationRequest, SamplingParams

    tokens = ChatPrompt(engine).tokens(messages(prompt))
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, logit_bias=eog_bias(engine))
    start = time.perf_counter()
    first = last = start
    count = 0
    async for event in engine.generate(GenerationRequest("bench", tokens, params)):
        now = time.perf_counter()
        if isinstance(event, FinishEvent):
            return event.usage.completion_tokens, first - start, last - first
        if count == 0:
            first = now
        last = now
        count += 1
    raise RuntimeError("stream ended without a FinishEvent")


def raw_stream(
    llm: llama_cpp.Llama, prompt: str, max_tokens: int, bias: dict[str, float]
) -> tuple[int, float, float]:
    start = time.perf_counter()
    first = last = start
    count = 0
    for _chunk in llm.create_chat_completion(
        messages=messages(prompt),  # type: ignore[arg-type]
        max_tokens=max_tokens,
        temperature=0.0,
        stream=True,
        logit_bias=bias,  # type: ignore[arg-type]  # llama-cpp-python takes str keys too
    ):
        now = time.perf_counter()
        if count == 0:
            first = now
        last = now
        count += 1
    # the first chunk carries only the role, the last only the finish reason
    return count - 2, first - start, last - first


def main(argv: list[str] | None = None) -> None:
    """Run the three parts and print their tables."""
    args = _parse(argv)
    # OpenMP reads its environment when llama_cpp loads libgomp: set it before that import.
    if args.gomp_spincount is not None:
        os.environ["GOMP_SPINCOUNT"] = args.gomp_spincount
    import llama_cpp

    from server.engine.llama_engine import LlamaEngine
    from server.engine.threads import resolve_threads
    from server.runtime.engine_config import engine_config
    from server.settings import Settings

    threads, threads_batch = resolve_threads(args.threads, args.threads_batch)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
        f"threads={threads}/{threads_batch} (decode/batch), "
        f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
        f"llama-cpp-python {llama_cpp.__version__}"
    )
    print(f"model: {args.model.name}, greedy, {args.max_tokens} new tokens, streaming chat")
    concurrency = [int(c) for c in args.concurrency.split(",")]
    config = engine_config(
        Settings(),
        model_path=args.model,
        n_slots=max(concurrency),
        n_ctx=2048,
        n_threads=threads,
        n_threads_batch=threads_batch,
    )
    engine = LlamaEngine(config)
    engine.warmup()
    llm = None
    if not args.skip_raw:
        llm = llama_cpp.Llama(
            str(args.model),
            n_ctx=2048,
            n_threads=threads,
            n_threads_batch=threads_batch,
            verbose=False,
        )
        bias = {str(t): b for t, b in eog_bias(engine)}
        raw_stream(llm, PROMPTS[0], 8, bias)  # warm up

    prompt = PROMPTS[0]
    best_engine = best_raw = 0.0
    for run in range(args.repeats):
        n, ttft, decode = asyncio.run(engine_stream(engine, prompt, args.max_tokens))
        engine_tps = (n - 1) / decode
        best_engine = max(best_engine, engine_tps)
        line = f"run {run + 1}: engine {engine_tps:6.1f} tok/s (ttft {ttft * 1000:.0f} ms)"
        if llm is not None:
            n_raw, ttft_raw, decode_raw = raw_stream(llm, prompt, args.max_tokens, bias)
            raw_tps = (n_raw - 1) / decode_raw
            best_raw = max(best_raw, raw_tps)
            line += f" | raw Llama {raw_tps:6.1f} tok/s (ttft {ttft_raw * 1000:.0f} ms)"
        print(line, flush=True)
    print(f"\nsingle stream decode: engine {best_engine:.1f} tok/s", end="")
    if llm is not None:
        ratio = best_engine / best_raw
        print(
            f", raw llama_cpp.Llama {best_raw:.1f} tok/s, ratio {ratio:.3f} "
            f"(overhead {(1 - ratio) * 100:+.1f}%, target <= 5%)"
        )
    else:
        print()

    if not args.skip_aggregate:
        print("\nconcurrent sequences | aggregate tok/s | mean TTFT ms | wall s")

        async def burst(n: int) -> tuple[int, float, float]:
            start = time.perf_counter()
            results = await asyncio.gather(
                *(
                    engine_stream(engine, PROMPTS[i % len(PROMPTS)], args.max_tokens)
                    for i in range(n)
                )
            )
            wall = time.perf_counter() - start
            return sum(r[0] for r in results), wall, sum(r[1] for r in results) / n

        for n in concurrency:
            best = None
            for _ in range(max(1, args.repeats - 1)):
                tokens, wall, ttft = asyncio.run(burst(n))
                if best is None or tokens / wall > best[0] / best[1]:
                    best = (tokens, wall, ttft)
            assert best is not None
            print(
                f"{n:20d} | {best[0] / best[1]:15.1f} | {best[2] * 1000:12.0f} | {best[1]:6.2f}",
                flush=True,
            )
    if not args.skip_prefix:
        prefix_reuse(engine)
    engine.close()


def prefix_reuse(engine: LlamaEngine) -> None:
    """Cold vs warm TTFT for two questions sharing a ~1,000-token system preamble."""
    from server.chat.prompt import ChatPrompt
    from server.engine.types import FinishEvent, GenerationRequest, SamplingParams

    facts = " ".join(
        f"Fact {i}: the warehouse in city {i} stores {i * 7} crates." for i in range(60)
    )
    system = f"You answer questions about warehouses. {facts}"

    chat = ChatPrompt(engine)

    async def ask(question: str) -> FinishEvent:
        msgs = [{"role": "system", "content": system}, {"role": "user", "content": question}]
        params = SamplingParams(max_tokens=8, temperature=0.0)
        request = GenerationRequest("prefix", chat.tokens(msgs), params)
        async for event in engine.generate(request):
            if isinstance(event, FinishEvent):
                return event
        raise RuntimeError("stream ended without a FinishEvent")

    engine.reset_prefix_cache()
    cold = asyncio.run(ask("Which city stores 21 crates?"))
    warm = asyncio.run(ask("How many crates are in city 5?"))
    print("\nshared preamble | prompt tokens | evaluated | cached | TTFT ms")
    for name, event in (("cold", cold), ("warm", warm)):
        print(
            f"{name:>15} | {event.usage.prompt_tokens:13d} | "
            f"{event.timings.prompt_tokens_evaluated:9d} | {event.usage.cached_prompt_tokens:6d} | "
            f"{event.timings.ttft_ms:7.0f}"
        )
    ratio = warm.timings.ttft_ms / cold.timings.ttft_ms
    print(f"warm/cold TTFT = {ratio:.3f} (target <= 0.10)")


if __name__ == "__main__":
    main()
