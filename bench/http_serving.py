"""HTTP serving benchmark: ggserve vs llama_cpp.server vs llama.cpp's llama-server, one run.

Same model file, same threads, same context per slot, all on 127.0.0.1. Requests are streaming
chat completions, greedy, with a fixed number of new tokens (SmolLM2's EOS ids biased away with
``logit_bias``; every summary reports how many streams really reached that length).

Scenarios, per server:
  (a) 8 concurrent clients: aggregate tok/s, p50/p95 TTFT and latency; ggserve/peer ratios;
  (b) concurrency sweep 1/2/4/8/16 → bench/results/concurrency.png (tok/s and p95 latency);
  (c) shared 1,000-token preamble: TTFT of its first (cold) request vs later (warm) ones.
Plus a demonstration that llama_cpp.server's default ``interrupt_requests`` cuts streams short.

    python -m bench http_serving            # full run (~15 min on 2 cores)
    python -m bench http_serving --quick    # smoke run (~3 min once llama-server is built)
    python -m bench http_serving --servers ggserve,llama-server

Results: bench/results/latest.json, latest.md and concurrency.png (quick runs write to
.cache/bench/quick/ instead, so they never replace the committed full results).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import report as report_mod
from bench.harness.load import ChatRequest, LoadResult, raw_results, run_load, summarize
from bench.harness.peers import (
    build_llama_server,
    ggserve_spec,
    llama_cpp_server_spec,
    llama_server_spec,
)
from bench.harness.prompts import QUESTIONS, chat_requests, preamble, preamble_request
from bench.harness.server import (
    ROOT,
    RunningServer,
    ServerSpec,
    ServerStartError,
    exit_on_signal,
    physical_cores,
    running,
)

SERVER_KEYS = ("ggserve", "llama-server", "llama_cpp.server")
N_CTX_PER_SLOT = 2048
CONCURRENT_CLIENTS = 8


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument(
        "--model", type=Path, default=ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    )
    parser.add_argument("--threads", type=int, default=0, help="0 = physical cores")
    parser.add_argument("--servers", default=",".join(SERVER_KEYS), help="comma list")
    parser.add_argument("--max-tokens", type=int, default=None, help="new tokens per request")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument("--budget-s", type=float, default=600.0, help="time limit per load run (s)")
    parser.add_argument(
        "--ggserve-extra-threads",
        type=int,
        default=0,
        help="also measure ggserve with this many threads (an extra row, not in the targets)",
    )
    parser.add_argument(
        "--ggserve-flash-attn",
        action="store_true",
        help="also measure ggserve with GGSERVE_FLASH_ATTN=true (llama-server's default is auto)",
    )
    args = parser.parse_args(argv)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(args.servers) - set(SERVER_KEYS)
    if unknown:
        parser.error(f"unknown server(s) {sorted(unknown)}; choose from {', '.join(SERVER_KEYS)}")
    if not args.model.is_file():
        parser.error(f"model file {args.model} not found; run 'make models' to fetch it")
    return args


class Plan:
    """Request counts and sizes of a full or a quick run."""

    def __init__(self, quick: bool, max_tokens: int | None) -> None:
        self.quick = quick
        self.max_tokens = max_tokens or (32 if quick else 64)
        self.concurrent_requests = 8 if quick else 32
        self.sweep = (1, 4, 16) if quick else (1, 2, 4, 8, 16)
        self.preamble_variants = 1 if quick else 3
        self.warm_per_variant = 2 if quick else 3
        self.preamble_max_tokens = 8
        self.rounds = 1 if quick else 2

    def sweep_requests(self, concurrency: int) -> int:
        """Enough requests that every client sends at least one (two in a full run)."""
        return concurrency if self.quick else max(4, 2 * concurrency)

    def as_dict(self) -> dict[str, Any]:
        return {
            "max_tokens": self.max_tokens,
            "concurrent_clients": CONCURRENT_CLIENTS,
            "concurrent_requests": self.concurrent_requests,
            "sweep_concurrency": list(self.sweep),
            "sweep_requests": {c: self.sweep_requests(c) for c in self.sweep},
            "preamble_variants": self.preamble_variants,
            "warm_requests_per_variant": self.warm_per_variant,
            "preamble_max_tokens": self.preamble_max_tokens,
            "rounds": self.rounds,
            "n_ctx_per_slot": N_CTX_PER_SLOT,
        }


def load(
    server: RunningServer, requests: list[ChatRequest], concurrency: int, budget: float
) -> LoadResult:
    """One closed-loop run against a started server."""
    return asyncio.run(
        run_load(
            server.url,
            requests,
            concurrency,
            extra_body=server.spec.extra_body,
            budget_s=budget,
        )
    )


def _print_summary(label: str, s: dict[str, Any]) -> None:
    print(
        f"  {label}: {s['throughput_tok_s']} tok/s, TTFT p50 {s['ttft_p50_s']} s "
        f"p95 {s['ttft_p95_s']} s, latency p50 {s['latency_p50_s']} s p95 {s['latency_p95_s']} s, "
        f"complete {s['completed']}/{s['requests']}, full length {s['full_length']}",
        flush=True,
    )
    for error in s["errors"]:
        print(f"    error: {error}")


def preamble_scenario(server: RunningServer, plan: Plan, model: Path) -> dict[str, Any]:
    """Cold (first) vs warm (same preamble, new question) TTFT, one request at a time."""
    cold: list[float] = []
    warm: list[float] = []
    warm_cached: list[int] = []
    prompt_tokens: list[int] = []
    records = []
    for variant in range(plan.preamble_variants):
        text = preamble(model, variant + 100 * plan.quick)
        questions = QUESTIONS[: plan.warm_per_variant + 1]
        for i, question in enumerate(questions):
            request = preamble_request(text, question, plan.preamble_max_tokens)
            result = load(server, [request], 1, 120.0).results[0]
            records.append({"variant": variant, "warm": i > 0, **raw_results_one(result)})
            if not result.complete or result.ttft is None:
                print(f"    preamble request failed: {result.error}")
                continue
            if result.prompt_tokens is not None:
                prompt_tokens.append(result.prompt_tokens)
            if i == 0:
                cold.append(result.ttft)
            else:
                warm.append(result.ttft)
                if result.cached_prompt_tokens is not None:
                    warm_cached.append(result.cached_prompt_tokens)
    cold_p50 = statistics.median(cold) if cold else None
    warm_p50 = statistics.median(warm) if warm else None
    ratio = round(warm_p50 / cold_p50, 4) if cold_p50 and warm_p50 is not None else None
    return {
        "prompt_tokens": int(statistics.median(prompt_tokens)) if prompt_tokens else None,
        "cold_ttft_s": [round(x, 4) for x in cold],
        "warm_ttft_s": [round(x, 4) for x in warm],
        "cold_ttft_p50_s": None if cold_p50 is None else round(cold_p50, 4),
        "warm_ttft_p50_s": None if warm_p50 is None else round(warm_p50, 4),
        "warm_over_cold": ratio,
        "warm_cached_tokens_p50": int(statistics.median(warm_cached)) if warm_cached else None,
        "requests": records,
    }


def raw_results_one(result: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(result).items() if k != "text"}


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the highest throughput: the one least disturbed by other work."""
    return max(runs, key=lambda s: s["throughput_tok_s"] or 0.0)


def bench_servers(
    specs: list[ServerSpec], plan: Plan, args: argparse.Namespace, logs: Path
) -> tuple[dict[str, Any], dict[str, str]]:
    """Every scenario on every server, interleaved.

    All servers are started first (idle ones cost nothing). Each measurement then runs on every
    server back to back, ``plan.rounds`` times with the order rotated, so a burst of outside
    load hits all servers alike rather than whichever happened to be measured at that moment.
    The best round per server and measurement is reported; all rounds stay in the JSON.
    """
    results: dict[str, Any] = {}
    failures: dict[str, str] = {}
    steps = [("concurrent8", CONCURRENT_CLIENTS, plan.concurrent_requests)] + [
        ("sweep", c, plan.sweep_requests(c)) for c in plan.sweep
    ]
    with contextlib.ExitStack() as stack:
        servers: list[RunningServer] = []
        for spec in specs:
            try:
                servers.append(stack.enter_context(running(spec, logs)))
            except ServerStartError as exc:
                print(f"\n{spec.name}: not measured: {exc}", file=sys.stderr)
                failures[spec.name] = str(exc)
        for server in servers:
            load(server, chat_requests(1, 8), 1, 60.0)  # first-request costs out of the way
            results[server.spec.name] = {
                "settings": server.spec.settings,
                "command": " ".join(server.spec.command),
                "log": str(server.log_path),
                "rounds": {name: {} for name, _, _ in steps},
            }
        for round_no in range(plan.rounds):
            shift = round_no % max(1, len(servers))
            order = servers[shift:] + servers[:shift]
            for step, concurrency, n_requests in steps:
                print(f"\n-- round {round_no + 1}, {step} c={concurrency}", flush=True)
                for server in order:
                    time.sleep(1.0)  # the previous server's OpenMP workers stop spinning
                    tag = f", run {round_no + 1}.{step}.{concurrency}"
                    run = load(
                        server,
                        chat_requests(n_requests, plan.max_tokens, tag),
                        concurrency,
                        args.budget_s,
                    )
                    summary = summarize(run)
                    summary["round"] = round_no + 1
                    summary["_requests"] = raw_results(run)
                    rounds = results[server.spec.name]["rounds"][step]
                    rounds.setdefault(concurrency, []).append(summary)
                    _print_summary(f"{server.spec.name:20s}", summary)
        for server in servers:
            print(f"\n-- shared preamble: {server.spec.name}", flush=True)
            p = preamble_scenario(server, plan, args.model)
            results[server.spec.name]["preamble"] = p
            print(
                f"  {p['prompt_tokens']} prompt tokens: cold TTFT {p['cold_ttft_p50_s']} s, "
                f"warm {p['warm_ttft_p50_s']} s, warm/cold {p['warm_over_cold']}",
                flush=True,
            )
    for result in results.values():
        c8_runs = result["rounds"]["concurrent8"][CONCURRENT_CLIENTS]
        best = _best(c8_runs)
        result["concurrent8_requests"] = best["_requests"]
        result["concurrent8"] = best
        result["sweep"] = [_best(runs) for _, runs in sorted(result["rounds"]["sweep"].items())]
        for runs in [*result["rounds"]["sweep"].values(), c8_runs]:
            for run in runs:
                run.pop("_requests", None)
    return results, failures


def interrupt_demo(model: Path, threads: int, plan: Plan, logs: Path) -> dict[str, Any]:
    """llama_cpp.server with its default interrupt_requests: how many streams survive."""
    spec = llama_cpp_server_spec(model, threads, N_CTX_PER_SLOT, interrupt_requests=True)
    print(f"\n== {spec.name}: {CONCURRENT_CLIENTS} concurrent clients ==", flush=True)
    with running(spec, logs) as server:
        load(server, chat_requests(1, 8), 1, 60.0)
        result = load(
            server, chat_requests(CONCURRENT_CLIENTS, plan.max_tokens), CONCURRENT_CLIENTS, 300.0
        )
    summary = summarize(result)
    tokens = [r.tokens for r in result.results]
    demo = {
        "requests": len(result.results),
        "max_tokens": plan.max_tokens,
        "full_length": sum(1 for t in tokens if t == plan.max_tokens),
        "tokens_per_stream": tokens,
        "finish_reasons": [r.finish_reason for r in result.results],
        "summary": summary,
    }
    print(
        f"  {demo['full_length']}/{demo['requests']} streams reached {plan.max_tokens} tokens; "
        f"tokens per stream {tokens}; finish reasons {demo['finish_reasons']}",
        flush=True,
    )
    return demo


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the tables, write JSON, Markdown and the plot; return the report."""
    args = parse_args(argv)
    # SIGTERM (and SIGINT, which background shells ignore) unwind normally, so every server
    # this run started is stopped by its context manager instead of being left running.
    signal.signal(signal.SIGTERM, exit_on_signal)
    plan = Plan(args.quick, args.max_tokens)
    out_dir = args.out or (ROOT / ".cache/bench/quick" if args.quick else ROOT / "bench/results")
    logs = ROOT / ".cache/bench/logs"
    threads = args.threads or physical_cores()
    started = time.monotonic()
    report: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "quick" if args.quick else "full",
        "machine": report_mod.machine(),
        "load_before": load_average(),
        "model": args.model.name,
        "threads": threads,
        "config": plan.as_dict(),
        "servers": {},
        "failures": {},
    }
    specs: list[ServerSpec] = []
    for key in args.servers:
        try:
            if key == "ggserve":
                specs.append(ggserve_spec(args.model, threads, CONCURRENT_CLIENTS, N_CTX_PER_SLOT))
                if args.ggserve_flash_attn:
                    base = ggserve_spec(args.model, threads, CONCURRENT_CLIENTS, N_CTX_PER_SLOT)
                    specs.append(
                        dataclasses.replace(
                            base,
                            name="ggserve flash-attn",
                            env={**base.env, "GGSERVE_FLASH_ATTN": "true"},
                            settings={**base.settings, "flash_attn": True},
                        )
                    )
                if args.ggserve_extra_threads:
                    n = args.ggserve_extra_threads
                    specs.append(
                        ggserve_spec(
                            args.model, n, CONCURRENT_CLIENTS, N_CTX_PER_SLOT, f"ggserve -t {n}"
                        )
                    )
            elif key == "llama-server":
                binary = build_llama_server()
                specs.append(
                    llama_server_spec(
                        binary, args.model, threads, CONCURRENT_CLIENTS, N_CTX_PER_SLOT
                    )
                )
            else:
                specs.append(llama_cpp_server_spec(args.model, threads, N_CTX_PER_SLOT))
        except ServerStartError as exc:
            print(f"\n{key}: not measured: {exc}", file=sys.stderr)
            report["failures"][key] = str(exc)
    servers, failures = bench_servers(specs, plan, args, logs)
    report["servers"] = servers
    report["failures"] |= failures
    if "llama_cpp.server" in args.servers:
        try:
            report["interrupt_demo"] = interrupt_demo(args.model, threads, plan, logs)
        except ServerStartError as exc:
            report["failures"]["llama_cpp.server (defaults)"] = str(exc)
    report["load_after"] = load_average()
    report["duration_s"] = round(time.monotonic() - started, 1)
    report["targets"] = report_mod.targets(report["servers"])
    write_outputs(report, out_dir)
    return report


def write_outputs(report: dict[str, Any], out_dir: Path) -> None:
    """Print the tables; write latest.json, latest.md and concurrency.png into ``out_dir``."""
    servers = report["servers"]
    print(
        f"\n{CONCURRENT_CLIENTS} concurrent clients, {report['config']['max_tokens']} tokens each"
    )
    print(report_mod.text_table(report_mod.concurrent_table(servers)))
    if report["targets"]:
        print("\ntargets (ratio = ggserve / peer)")
        print(report_mod.text_table(report_mod.targets_table(report["targets"])))
    print("\nconcurrency sweep: aggregate tok/s, p95 latency s")
    print(report_mod.text_table(report_mod.sweep_table(servers)))
    print("\nshared 1,000-token preamble")
    print(report_mod.text_table(report_mod.preamble_table(servers)))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "latest.json").write_text(json.dumps(report, indent=1) + "\n")
    (out_dir / "latest.md").write_text(report_mod.markdown_report(report))
    m = report["machine"]
    title = (
        f"{report['model']}, streaming chat, {report['config']['max_tokens']} tokens/request, "
        f"{report['threads']} threads — {m['cpu_model']}, {m['physical_cores']} cores, "
        f"{report['date']}"
    )
    report_mod.plot_sweep(servers, out_dir / "concurrency.png", title)
    print(f"\nwrote {out_dir}/latest.json, latest.md, concurrency.png ({report['duration_s']} s)")
    if report["mode"] == "full" and out_dir == ROOT / "bench/results":
        doc = ROOT / "docs/benchmarks.md"
        if report_mod.update_doc(
            doc, report_mod.markdown_report(report), "../bench/results/concurrency.png"
        ):
            print(f"updated the results section of {doc}")


if __name__ == "__main__":
    main()
