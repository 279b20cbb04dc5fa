"""Adapter mixing: aggregate tok/s, p50 TTFT and adapter switches with 8 clients over one base.

The engine applies one adapter set to the whole context per decode step (llama.cpp's
``llama_set_adapters_lora``, as in llama-server), so it groups each step by adapter: requests
on different adapters take turns instead of sharing a step. This measures what that costs, with
the same 8-client load (each client sends its requests one after the other) in four scenarios:

- ``base``: every request on the base model;
- ``one``: every request on one adapter (the price of the LoRA itself);
- ``half``: half the clients on the base, half on one adapter;
- ``spread``: the clients spread over three adapters.

The adapters are GGUF LoRAs shaped as the flywheel recipe trains them (rank 16 on the MLPs of
the first half of the layers), written here from random weights unless ``--adapter`` names real
ones: the cost depends on their shape, not their values. End-of-generation tokens are biased
away, so every request generates exactly ``--max-tokens``. Adapter switches are the engine's
own count (``set_adapters`` calls), read before and after each scenario.

    python -m bench adapters                                # writes bench/results/adapters.json
    python -m bench adapters --requests 8 --max-tokens 16 --no-save   # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bench.harness import report
from bench.harness.prompts import TOPICS
from bench.harness.server import ROOT
from bench.harness.stats import percentile

if TYPE_CHECKING:
    from server.engine.llama_engine import LlamaEngine

RESULTS = ROOT / "bench" / "results" / "adapters.json"
MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
CLIENTS = 8
SCENARIOS = ("base", "one", "half", "spread")
ADAPTER_NAMES = ("a1", "a2", "a3")


def parse_scenarios(text: str) -> tuple[str, ...]:
    """``"base,half"`` → the scenarios in that order; ValueError naming an unknown one."""
    chosen = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown or not chosen:
        raise ValueError(
            f"unknown scenario(s) {', '.join(unknown) or '(none)'}: choose from "
            f"{', '.join(SCENARIOS)}"
        )
    return chosen


def client_adapter(scenario: str, client: int) -> str:
    """The adapter client ``client`` uses in ``scenario`` ("" = the base)."""
    if scenario == "base":
        return ""
    if scenario == "one":
        return ADAPTER_NAMES[0]
    if scenario == "half":
        return ADAPTER_NAMES[0] if client % 2 else ""
    if scenario == "spread":
        return ADAPTER_NAMES[client % len(ADAPTER_NAMES)]
    raise ValueError(f"unknown scenario {scenario!r}")


@dataclass
class Outcome:
    """One scenario's figures."""

    requests: int
    tokens: int
    seconds: float
    tok_s: float
    ttft_p50_s: float | None
    adapter_switches: int
    decode_steps: int


def summarize(
    ttfts: list[float], tokens: int, seconds: float, switches: int, steps: int
) -> Outcome:
    """The scenario's aggregate tok/s and p50 TTFT from its requests."""
    return Outcome(
        requests=len(ttfts),
        tokens=tokens,
        seconds=round(seconds, 3),
        tok_s=round(tokens / seconds, 1) if seconds > 0 else 0.0,
        ttft_p50_s=None if not ttfts else round(percentile(ttfts, 50) or 0.0, 3),
        adapter_switches=switches,
        decode_steps=steps,
    )


def ratios(outcomes: dict[str, Outcome]) -> dict[str, float | None]:
    """Each scenario's tok/s over the base scenario's (None without a base run)."""
    base = outcomes.get("base")
    if base is None or base.tok_s == 0:
        return {name: None for name in outcomes}
    return {name: round(o.tok_s / base.tok_s, 3) for name, o in outcomes.items()}


def table(outcomes: dict[str, Outcome], versus: dict[str, float | None]) -> list[list[str]]:
    """Rows (header first) for the README and the console."""
    rows = [["scenario", "tok/s", "vs base", "p50 TTFT s", "adapter switches", "decode steps"]]
    for name, o in outcomes.items():
        ratio = versus.get(name)
        rows.append(
            [
                name,
                f"{o.tok_s:.1f}",
                "-" if ratio is None else f"{ratio:.2f}x",
                "-" if o.ttft_p50_s is None else f"{o.ttft_p50_s:.2f}",
                str(o.adapter_switches),
                str(o.decode_steps),
            ]
        )
    return rows


def write_lora(path: Path, model: Path, *, seed: int, rank: int = 16) -> Path:
    """A random GGUF LoRA on the MLPs of the first half of ``model``'s layers (the recipe's)."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(model)
    arch = str(reader.get_field("general.architecture").contents())  # type: ignore[union-attr]
    layers = int(reader.get_field(f"{arch}.block_count").contents())  # type: ignore[union-attr]
    hidden = int(reader.get_field(f"{arch}.embedding_length").contents())  # type: ignore[union-attr]
    ffn = int(reader.get_field(f"{arch}.feed_forward_length").contents())  # type: ignore[union-attr]
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(2 * rank))
    shapes = {"ffn_gate": (hidden, ffn), "ffn_up": (hidden, ffn), "ffn_down": (ffn, hidden)}
    for layer in range(layers // 2):
        for name, (fan_in, fan_out) in shapes.items():
            lora_a = rng.standard_normal((rank, fan_in), dtype=np.float32) * 0.01
            lora_b = rng.standard_normal((fan_out, rank), dtype=np.float32) * 0.01
            writer.add_tensor(f"blk.{layer}.{name}.weight.lora_a", lora_a)
            writer.add_tensor(f"blk.{layer}.{name}.weight.lora_b", lora_b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _switches(engine: LlamaEngine) -> tuple[int, int]:
    """The engine's adapter switches and decode steps so far."""
    stats = engine.stats()
    return stats.adapter_switches_total, stats.decode_steps_total


async def run_scenario(
    engine: LlamaEngine, scenario: str, requests: int, max_tokens: int
) -> Outcome:
    """``requests`` chats from 8 clients, each sending its share one after the other."""
    from server.chat.prompt import ChatPrompt
    from server.engine.types import FinishEvent, GenerationRequest, SamplingParams, TokenEvent

    model = engine._model
    bias = tuple((t, -100.0) for t in range(model.n_vocab) if model.is_eog(t))
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, logit_bias=bias)
    chat = ChatPrompt(engine)
    ttfts: list[float] = []
    tokens = 0

    async def client(number: int) -> None:
        nonlocal tokens
        adapter = client_adapter(scenario, number)
        for index in range(number, requests, CLIENTS):
            topic = TOPICS[index % len(TOPICS)]
            prompt = chat.tokens([{"role": "user", "content": topic}])
            request = GenerationRequest(f"{scenario}-{index}", prompt, params, adapter=adapter)
            started = time.perf_counter()
            first = None
            async for event in engine.generate(request):
                if isinstance(event, TokenEvent) and first is None:
                    first = time.perf_counter() - started
                elif isinstance(event, FinishEvent):
                    tokens += event.usage.completion_tokens
                    break
            ttfts.append(first if first is not None else time.perf_counter() - started)

    switches_before, steps_before = _switches(engine)
    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(CLIENTS)))
    seconds = time.perf_counter() - started
    switches_after, steps_after = _switches(engine)
    return summarize(
        ttfts, tokens, seconds, switches_after - switches_before, steps_after - steps_before
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument(
        "--adapter",
        type=Path,
        action="append",
        default=[],
        help="a GGUF LoRA over --model (up to 3; random ones of the recipe's shape otherwise)",
    )
    parser.add_argument("--requests", type=int, default=48, help="per scenario, over 8 clients")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--no-save", action="store_true", help=f"do not write {RESULTS.name}")
    args = parser.parse_args(argv)
    scenarios = parse_scenarios(args.scenarios)
    if len(args.adapter) > len(ADAPTER_NAMES):
        parser.error(f"at most {len(ADAPTER_NAMES)} --adapter")
    if args.requests < CLIENTS:
        parser.error(f"--requests must be at least {CLIENTS} (one per client)")

    from server.engine.llama_engine import LlamaEngine
    from server.runtime.engine_config import engine_config
    from server.settings import Settings

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="ggserve-bench-adapters-") as scratch:
        paths = list(args.adapter)
        for seed in range(len(paths), len(ADAPTER_NAMES)):
            paths.append(write_lora(Path(scratch) / f"lora{seed}.gguf", args.model, seed=seed))
        adapters = tuple((name, path, 1.0) for name, path in zip(ADAPTER_NAMES, paths, strict=True))
        settings = Settings(_env_file=None, model_path=args.model, n_slots=CLIENTS)
        # Speculation off: drafts would vary with step timings, which is not what is measured.
        engine = LlamaEngine(engine_config(settings, adapters=adapters, speculative="off"))
        try:
            engine.warmup()
            outcomes = {
                name: asyncio.run(run_scenario(engine, name, args.requests, args.max_tokens))
                for name in scenarios
            }
        finally:
            engine.close()
    versus = ratios(outcomes)
    print(
        f"# adapter mixing — {os.cpu_count()} CPUs, load before {load_before:.2f}; "
        f"{CLIENTS} clients, {args.requests} requests per scenario, {args.max_tokens} tokens each"
    )
    print(report.markdown_table(table(outcomes, versus)))
    if not args.no_save:
        record = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": report.machine(),
            "load_before": round(load_before, 2),
            "model": args.model.name,
            "clients": CLIENTS,
            "requests": args.requests,
            "max_tokens": args.max_tokens,
            "adapters": "given" if args.adapter else "random, rank 16, MLPs of the first half",
            "scenarios": {name: asdict(o) for name, o in outcomes.items()},
            "ratios": versus,
        }
        RESULTS.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
