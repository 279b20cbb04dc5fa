"""RAG burst benchmark: 8 requests sharing a ~1,000-token context, ggserve vs llama-server.

The shape of retrieval-augmented traffic: the same retrieved context (system message) and
different questions, arriving together. Three scenarios per server, each on a context that
server has never seen (a new handbook variant per server, round and scenario):

- ``cold``: 8 requests at once on a new context;
- ``warm``: 8 new questions at once on the context the cold burst just used;
- ``staggered``: 8 requests on a new context, one every 0.25 s.

Reported per scenario: p50/p95 time to first token, wall time, prompt tokens the server took
from its cache; and the ggserve / llama-server ratio of the p50 TTFT. Servers are measured in
turn, ``--rounds`` times with the order rotated; the round with the lowest p50 counts.

    python -m bench burst            # ~5 min on 2 cores once llama-server exists
    python -m bench burst --quick    # one round

Results: bench/results/burst.json (quick runs: .cache/bench/quick/burst.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.harness.load import ChatRequest, RequestResult, chat_body, stream_one
from bench.harness.prompts import QUESTIONS, preamble, preamble_request
from bench.harness.rounds import measure_in_rounds, peer_args, peer_parser, peer_specs
from bench.harness.server import (
    ROOT,
    RunningServer,
    exit_on_signal,
    physical_cores,
)
from bench.harness.stats import percentile

N_CLIENTS = 8
N_CTX_PER_SLOT = 2048
STAGGER_S = 0.25
MAX_TOKENS = 16
SCENARIOS = ("cold", "warm", "staggered")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return peer_args(peer_parser(__doc__), argv)


def questions(offset: int) -> list[str]:
    """``N_CLIENTS`` distinct questions (numbered, so no two prompts are the same)."""
    return [
        f"{QUESTIONS[(offset + i) % len(QUESTIONS)]} (question {offset + i + 1})"
        for i in range(N_CLIENTS)
    ]


async def burst(
    server: RunningServer, requests: list[ChatRequest], stagger_s: float
) -> list[RequestResult]:
    """Send ``requests`` ``stagger_s`` apart (0 = all at once) and wait for every stream."""
    limits = httpx.Limits(max_connections=len(requests) + 2)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(300.0)) as client:
        start = time.perf_counter()

        async def one(i: int, request: ChatRequest) -> RequestResult:
            await asyncio.sleep(i * stagger_s)
            body = chat_body(request, server.spec.extra_body)
            return await stream_one(client, server.url, body, start, 300.0)

        return list(await asyncio.gather(*(one(i, r) for i, r in enumerate(requests))))


def summarize(results: list[RequestResult], wall_s: float) -> dict[str, Any]:
    ttfts = [r.ttft for r in results if r.complete and r.ttft is not None]
    cached = [r.cached_prompt_tokens for r in results if r.cached_prompt_tokens is not None]
    return {
        "requests": len(results),
        "completed": sum(1 for r in results if r.complete),
        "ttft_p50_s": _round(percentile(ttfts, 50)),
        "ttft_p95_s": _round(percentile(ttfts, 95)),
        "wall_s": round(wall_s, 3),
        "prompt_tokens": max((r.prompt_tokens or 0 for r in results), default=0),
        "cached_prompt_tokens": cached,
        "ttft_s": [_round(r.ttft) for r in results],
        "errors": sorted({r.error for r in results if r.error})[:3],
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def scenario_requests(model: Path, variant: int, offset: int) -> list[ChatRequest]:
    text = preamble(model, variant)
    return [preamble_request(text, q, MAX_TOKENS) for q in questions(offset)]


def measure(server: RunningServer, model: Path, variant: int) -> dict[str, Any]:
    """The three scenarios on one server; ``variant`` picks contexts no one has seen yet."""
    out: dict[str, Any] = {}
    plans = (
        ("cold", variant, 0, 0.0),
        ("warm", variant, N_CLIENTS, 0.0),  # same context as cold: now in the cache
        ("staggered", variant + 1, 0, STAGGER_S),
    )
    for name, v, offset, stagger in plans:
        requests = scenario_requests(model, v, offset)
        time.sleep(1.0)  # let the previous burst's OpenMP workers go idle
        started = time.perf_counter()
        results = asyncio.run(burst(server, requests, stagger))
        out[name] = summarize(results, time.perf_counter() - started)
        s = out[name]
        print(
            f"  {server.spec.name:22s} {name:9s} TTFT p50 {s['ttft_p50_s']} s "
            f"p95 {s['ttft_p95_s']} s  wall {s['wall_s']} s  "
            f"complete {s['completed']}/{s['requests']}  cached {s['cached_prompt_tokens']}",
            flush=True,
        )
        for error in s["errors"]:
            print(f"    error: {error}", flush=True)
    return out


def best(rounds: list[dict[str, Any]], scenario: str) -> dict[str, Any]:
    """The round with the lowest p50 TTFT: the one least disturbed by other work."""
    return min(rounds, key=lambda r: r[scenario]["ttft_p50_s"] or float("inf"))[scenario]


def ratios(servers: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """ggserve / llama-server for p50 and p95 TTFT, per scenario."""
    ours = next((v for k, v in servers.items() if k.startswith("ggserve")), None)
    peer = next((v for k, v in servers.items() if k.startswith("llama-server")), None)
    if ours is None or peer is None:
        return {}
    out: dict[str, dict[str, float | None]] = {}
    for scenario in SCENARIOS:
        row: dict[str, float | None] = {}
        for stat in ("ttft_p50_s", "ttft_p95_s"):
            a, b = ours["best"][scenario][stat], peer["best"][scenario][stat]
            row[stat] = round(a / b, 3) if a is not None and b else None
        out[scenario] = row
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the scenarios on every server, print the table and ratios, write burst.json."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_signal)
    threads = args.threads or physical_cores()
    rounds = args.rounds or (1 if args.quick else 2)
    out_dir = args.out or (ROOT / ".cache/bench/quick" if args.quick else ROOT / "bench/results")
    logs = ROOT / ".cache/bench/logs"
    report: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "model": args.model.name,
        "threads": threads,
        "clients": N_CLIENTS,
        "max_tokens": MAX_TOKENS,
        "stagger_s": STAGGER_S,
        "rounds": rounds,
        "servers": {},
        "failures": {},
    }
    failures = report["failures"]
    specs = peer_specs(args.servers, args.model, threads, N_CLIENTS, N_CTX_PER_SLOT, failures)

    def one(server: RunningServer, round_no: int, index: int) -> dict[str, Any]:
        # Variants never repeat across servers or rounds: every "cold" context is new.
        return measure(server, args.model, 1000 + 10 * round_no + 3 * index)

    results = measure_in_rounds(specs, rounds, logs, failures, one)
    for name, runs in results.items():
        report["servers"][name] = {
            "rounds": runs,
            "best": {scenario: best(runs, scenario) for scenario in SCENARIOS},
        }
    report["ratios"] = ratios(report["servers"])
    report["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print_table(report)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "burst.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwrote {out_dir / 'burst.json'}")
    return report


def print_table(report: dict[str, Any]) -> None:
    print(
        f"\nRAG burst: {N_CLIENTS} requests, shared ~1,000-token context, "
        f"{MAX_TOKENS} tokens each; load {report['load_before']} -> {report['load_after']}"
    )
    print(f"{'server':24s} {'scenario':10s} {'TTFT p50':>9s} {'TTFT p95':>9s} {'wall':>7s}")
    for name, data in report["servers"].items():
        for scenario in SCENARIOS:
            s = data["best"][scenario]
            print(
                f"{name:24s} {scenario:10s} {s['ttft_p50_s']!s:>9s} {s['ttft_p95_s']!s:>9s} "
                f"{s['wall_s']!s:>7s}"
            )
    for scenario, row in report["ratios"].items():
        p50, p95 = row["ttft_p50_s"], row["ttft_p95_s"]
        print(f"ggserve/llama-server {scenario:10s} p50 x{p50}  p95 x{p95}")


if __name__ == "__main__":
    main()
