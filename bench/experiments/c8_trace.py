"""Where the time goes at 8+ concurrent short chats over HTTP (issue 22, item 2).

Runs the HTTP benchmark's sweep load (``2 × c`` short chats of 64 tokens, ``c`` closed-loop
clients) on ggserve variants and llama-server in the same run, interleaved, and prints per run:
throughput, p50 TTFT, the server process's CPU seconds, and for ggserve the engine's own
counters over the run (decode steps, busy/decode/idle seconds, queue wait). Comparing the
engine's busy time with the run's wall time says whether the engine thread or the path around
it is the bottleneck.

    python -m bench c8_trace --concurrency 8 --rounds 3
    python -m bench c8_trace --variant spin1k=GOMP_SPINCOUNT=1000
    python -m bench c8_trace --against /work/wt-base   # a worktree of the baseline
    python -m bench c8_trace --concurrency 1 --embed-first \
        --variant threads0=GGSERVE_EMBEDDER_THREADS=0      # after a batched /v1/embeddings

A lab tool: results go to stdout (and docs/benchmarks.md by hand), not to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.harness.load import run_load, summarize
from bench.harness.peers import build_llama_server, ggserve_spec, llama_server_spec
from bench.harness.prompts import chat_requests
from bench.harness.server import MODEL, ROOT, RunningServer, ServerSpec, physical_cores, running

METRICS = (
    "ggserve_engine_decode_steps_total",
    "ggserve_engine_graph_passes_total",
    "ggserve_speculative_draft_tokens_total",
    "ggserve_speculative_accepted_tokens_total",
    "ggserve_engine_busy_seconds_total",
    "ggserve_engine_decode_seconds_total",
    "ggserve_engine_idle_seconds_total",
    "ggserve_engine_tokens_generated_total",
    "ggserve_engine_prompt_tokens_evaluated_total",
)


def scrape(server: RunningServer) -> dict[str, float]:
    """The engine counters of :data:`METRICS` (empty for a server without them)."""
    try:
        text = httpx.get(server.url + "/metrics", timeout=10).text
    except httpx.HTTPError:
        return {}
    values: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in METRICS:
            values[name] = float(value)
    return values


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of the process and its children."""
    proc = psutil.Process(pid)
    times = proc.cpu_times()
    return float(times.user + times.system)


def measure(server: RunningServer, concurrency: int, tag: str, per_client: int) -> dict[str, Any]:
    """One sweep-shaped run with the counters around it."""
    before, cpu0, client0 = scrape(server), cpu_seconds(server.proc.pid), time.process_time()
    requests = chat_requests(per_client * concurrency, 64, tag)
    run = asyncio.run(
        run_load(server.url, requests, concurrency, extra_body=server.spec.extra_body)
    )
    after, cpu1, client1 = scrape(server), cpu_seconds(server.proc.pid), time.process_time()
    summary = summarize(run)
    row: dict[str, Any] = {
        "tok_s": summary["throughput_tok_s"],
        "ttft_p50": summary["ttft_p50_s"],
        "wall": summary["wall_s"],
        "server_cpu": round(cpu1 - cpu0, 2),
        "client_cpu": round(client1 - client0, 2),
    }
    if after:
        for key, value in after.items():
            name = key.removeprefix("ggserve_engine_").removesuffix("_total")
            row[name] = round(value - before.get(key, 0.0), 2)
    ttfts = sorted((r.started, r.ttft) for r in run.results if r.ttft is not None)
    row["first_wave_ttft"] = [round(t, 2) for _, t in ttfts[:concurrency]]
    return row


def embed_batch(server: RunningServer, texts: int = 64) -> None:
    """One batched ``/v1/embeddings`` call, as a RAG client indexing documents makes: it
    loads the server's embedder and runs torch (with the server's thread setting)."""
    body = {"input": [f"passage {i} about the weather in the mountains" for i in range(texts)]}
    reply = httpx.post(server.url + "/v1/embeddings", json=body, timeout=300)
    reply.raise_for_status()


def variant_specs(model: Path, threads: int, variants: list[str]) -> list[ServerSpec]:
    """ggserve as benchmarked, plus one spec per ``name=ENV=VALUE[,ENV=VALUE]`` variant."""
    base = ggserve_spec(model, threads, 8, 1024)
    specs = [base]
    for variant in variants:
        name, _, assignments = variant.partition("=")
        env = dict(a.split("=", 1) for a in assignments.split(",") if a)
        specs.append(dataclasses.replace(base, name=f"ggserve {name}", env={**base.env, **env}))
    return specs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-client", type=int, default=2, help="requests per client")
    parser.add_argument("--variant", action="append", default=[])
    parser.add_argument("--no-llama-server", action="store_true")
    parser.add_argument(
        "--embed-first",
        action="store_true",
        help="each ggserve server embeds a batch of 64 texts (/v1/embeddings) before the runs",
    )
    parser.add_argument("--against", type=Path, help="a checkout of the baseline commit")
    args = parser.parse_args(argv)
    threads = physical_cores()
    specs = variant_specs(MODEL, threads, args.variant)
    if args.against is not None:  # same interpreter and venv, the other checkout's code first
        base = specs[0]
        command = ["env", "-C", str(args.against.resolve()), *base.command]
        specs.append(dataclasses.replace(base, name="ggserve baseline", command=command))
    if not args.no_llama_server:
        specs.append(llama_server_spec(build_llama_server(), MODEL, threads, 8, 1024))
    print(f"load average before: {os.getloadavg()}", flush=True)
    logs = ROOT / ".cache/bench/logs"
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(running(spec, logs)) for spec in specs]
        for server in servers:
            warm = chat_requests(2, 8)
            asyncio.run(run_load(server.url, warm, 1, extra_body=server.spec.extra_body))
            if args.embed_first and server.spec.name.startswith("ggserve"):
                embed_batch(server)
        for round_no in range(args.rounds):
            for concurrency in args.concurrency:
                shift = round_no % len(servers)
                for server in servers[shift:] + servers[:shift]:
                    time.sleep(1.0)
                    tag = f", trace {round_no}.{concurrency}"
                    row = measure(server, concurrency, tag, args.per_client)
                    print(f"r{round_no} c={concurrency} {server.spec.name:24s} {row}", flush=True)
    print(f"load average after: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
