"""Cost of logprobs in the engine: decode tok/s without logprobs, with top-k logprobs, and of
prompt scoring, in-process (no HTTP), best of ``--repeats``.

Run it once from this tree and once with ``PYTHONPATH`` pointing at an older tree (the runs
without logprobs use only fields every version has) to check that requests without logprobs
did not get slower:

    flock /tmp/ggserve-heavy.lock python -m bench logprobs_overhead
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from bench.harness.server import ROOT
from server.engine.config import EngineConfig
from server.engine.llama_engine import LlamaEngine
from server.engine.types import GenerationRequest, SamplingParams, TokenEvent


async def _decode_rate(engine: LlamaEngine, prompt: list[int], params: SamplingParams) -> float:
    first = last = 0.0
    count = 0
    async for event in engine.generate(GenerationRequest("bench", prompt, params)):
        if isinstance(event, TokenEvent):
            now = time.perf_counter()
            first = first or now
            last = now
            count += 1
    return (count - 1) / (last - first)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--model", type=Path, default=ROOT / "models/SmolLM2-135M-Instruct.Q4_1.gguf"
    )
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline-only", action="store_true", help="for trees without logprobs")
    args = parser.parse_args(argv)
    engine = LlamaEngine(EngineConfig(model_path=args.model, n_slots=1, n_ctx=2048))
    engine.warmup()
    prompt = engine.tokenize("Write a long story about a lighthouse keeper and the sea.")
    eos = engine.tokenize("<|im_end|>", add_special=False)
    bias = tuple((t, -100.0) for t in eos)  # no early stop: every run decodes max_tokens
    kinds: dict[str, SamplingParams] = {
        "no logprobs": SamplingParams(max_tokens=args.max_tokens, temperature=0, logit_bias=bias)
    }
    if not args.baseline_only:
        kinds["logprobs, top 5"] = SamplingParams(
            max_tokens=args.max_tokens, temperature=0, logit_bias=bias, logprobs=5
        )
        kinds["logprobs, top 20"] = SamplingParams(
            max_tokens=args.max_tokens, temperature=0, logit_bias=bias, logprobs=20
        )
    best = dict.fromkeys(kinds, 0.0)
    for _ in range(args.repeats):
        for name, params in kinds.items():
            rate = asyncio.run(_decode_rate(engine, prompt, params))
            best[name] = max(best[name], rate)
    for name, rate in best.items():
        print(f"{name:>18}: {rate:7.1f} tok/s decode (best of {args.repeats})")
    if not args.baseline_only:
        long_prompt = engine.tokenize("The quick brown fox jumps over the lazy dog. " * 180)
        params = SamplingParams(max_tokens=0, temperature=0, prompt_logprobs=5)
        started = time.perf_counter()

        async def score() -> None:
            async for _ in engine.generate(GenerationRequest("score", long_prompt, params)):
                pass

        asyncio.run(score())
        elapsed = time.perf_counter() - started
        print(f"scoring {len(long_prompt)} prompt tokens (top 5): {elapsed * 1000:.0f} ms")
    engine.close()


if __name__ == "__main__":
    main()
