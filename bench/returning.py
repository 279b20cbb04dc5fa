"""Returning conversations: more chats than slots, each coming back with its history resent.

What every chat client does: a conversation's second turn resends the whole first turn. With
more conversations than slots, a slot is reused before its conversation returns, so the server
either kept the evicted history somewhere (ggserve's RAM prompt cache, llama-server's
``--cache-ram``) or prefills it again.

- ``open``: ``--chats`` (16) conversations, each with its own ~``--history`` (1,200) token
  system message, opened ``--concurrency`` (4) at a time on ``--slots`` (8) slots;
- ``return``: each conversation's second turn (history + first answer + a new question), in the
  same order, ``--concurrency`` at a time.

Reported per server: p50/p95 time to first token of each phase, the return/open ratio and the
prompt tokens taken from cache; and the ggserve / llama-server ratio of the return p50. Servers
are measured in turn, ``--rounds`` times with the order rotated, on histories no server has seen;
the round with the lowest return p50 counts.

    python -m bench returning                  # ~6 min on 2 cores once llama-server exists
    python -m bench returning --quick          # one round
    python -m bench returning --servers ggserve --ggserve-env GGSERVE_PROMPT_CACHE_MB=0

Results: bench/results/returning.json (quick runs: .cache/bench/quick/returning.json).
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

N_CTX_PER_SLOT = 2048
MAX_TOKENS = 16
PHASES = ("open", "return")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = peer_parser(__doc__)
    parser.add_argument("--chats", type=int, default=16, help="conversations")
    parser.add_argument("--slots", type=int, default=8, help="parallel sequences per server")
    parser.add_argument("--concurrency", type=int, default=4, help="conversations at a time")
    parser.add_argument("--history", type=int, default=1200, help="tokens of each history")
    parser.add_argument(
        "--ggserve-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra GGSERVE_* setting for ggserve (repeatable)",
    )
    return peer_args(parser, argv)


def first_turns(model: Path, variant: int, chats: int, history: int) -> list[ChatRequest]:
    """One opening request per conversation, each on a history of its own."""
    return [
        preamble_request(
            preamble(model, variant + i, history),
            f"{QUESTIONS[i % len(QUESTIONS)]} (conversation {i + 1})",
            MAX_TOKENS,
        )
        for i in range(chats)
    ]


def second_turn(first: ChatRequest, answer: str, index: int) -> ChatRequest:
    """The conversation as a chat client resends it: first turn, its answer, a new question."""
    question = QUESTIONS[(index + 7) % len(QUESTIONS)]
    return ChatRequest(
        messages=[
            *first.messages,
            {"role": "assistant", "content": answer},
            {"role": "user", "content": f"And then: {question}"},
        ],
        max_tokens=MAX_TOKENS,
    )


async def waves(
    server: RunningServer, requests: list[ChatRequest], concurrency: int
) -> list[RequestResult]:
    """Send ``requests`` with at most ``concurrency`` in flight, in order."""
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency + 2)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(300.0)) as client:
        start = time.perf_counter()

        async def one(request: ChatRequest) -> RequestResult:
            async with gate:
                body = chat_body(request, server.spec.extra_body)
                return await stream_one(client, server.url, body, start, 300.0)

        return list(await asyncio.gather(*(one(r) for r in requests)))


def summarize(results: list[RequestResult], wall_s: float) -> dict[str, Any]:
    ttfts = [r.ttft for r in results if r.complete and r.ttft is not None]
    cached = [r.cached_prompt_tokens for r in results if r.cached_prompt_tokens is not None]
    return {
        "requests": len(results),
        "completed": sum(1 for r in results if r.complete),
        "ttft_p50_s": _round(percentile(ttfts, 50)),
        "ttft_p95_s": _round(percentile(ttfts, 95)),
        "wall_s": round(wall_s, 3),
        "prompt_tokens_p50": percentile([r.prompt_tokens or 0 for r in results], 50),
        "cached_prompt_tokens": cached,
        "errors": sorted({r.error for r in results if r.error})[:3],
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def measure(server: RunningServer, args: argparse.Namespace, variant: int) -> dict[str, Any]:
    """Open every conversation, then bring each back for its second turn."""
    opening = first_turns(args.model, variant, args.chats, args.history)
    time.sleep(1.0)  # let the previous run's OpenMP workers go idle
    started = time.perf_counter()
    opened = asyncio.run(waves(server, opening, args.concurrency))
    out = {"open": summarize(opened, time.perf_counter() - started)}
    returning = [
        second_turn(f, r.text, i) for i, (f, r) in enumerate(zip(opening, opened, strict=True))
    ]
    time.sleep(1.0)
    started = time.perf_counter()
    returned = asyncio.run(waves(server, returning, args.concurrency))
    out["return"] = summarize(returned, time.perf_counter() - started)
    for phase in PHASES:
        s = out[phase]
        print(
            f"  {server.spec.name:22s} {phase:7s} TTFT p50 {s['ttft_p50_s']} s "
            f"p95 {s['ttft_p95_s']} s  wall {s['wall_s']} s  "
            f"complete {s['completed']}/{s['requests']}  prompt p50 {s['prompt_tokens_p50']}",
            flush=True,
        )
        for error in s["errors"]:
            print(f"    error: {error}", flush=True)
    return out


def ratios(servers: dict[str, Any]) -> dict[str, float | None]:
    """Return/open per server, and ggserve / llama-server of each phase's p50."""
    out: dict[str, float | None] = {}
    for name, data in servers.items():
        best = data["best"]
        cold, back = best["open"]["ttft_p50_s"], best["return"]["ttft_p50_s"]
        out[f"{name}: return/open"] = round(back / cold, 3) if cold and back else None
    ours = next((v for k, v in servers.items() if k.startswith("ggserve")), None)
    peer = next((v for k, v in servers.items() if k.startswith("llama-server")), None)
    if ours is not None and peer is not None:
        for phase in PHASES:
            a, b = ours["best"][phase]["ttft_p50_s"], peer["best"][phase]["ttft_p50_s"]
            out[f"ggserve/llama-server {phase}"] = round(a / b, 3) if a and b else None
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run both phases on every server, print the table and ratios, write returning.json."""
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
        "chats": args.chats,
        "slots": args.slots,
        "concurrency": args.concurrency,
        "history_tokens": args.history,
        "max_tokens": MAX_TOKENS,
        "ggserve_env": args.ggserve_env,
        "rounds": rounds,
        "servers": {},
        "failures": {},
    }
    env = dict(item.partition("=")[::2] for item in args.ggserve_env)
    failures = report["failures"]
    specs = peer_specs(args.servers, args.model, threads, args.slots, N_CTX_PER_SLOT, failures, env)

    def one(server: RunningServer, round_no: int, index: int) -> dict[str, Any]:
        # Histories never repeat across servers or rounds: every opening is cold.
        return measure(server, args, 5000 + 100 * round_no + 40 * index)

    results = measure_in_rounds(specs, rounds, logs, failures, one)
    for name, runs in results.items():
        best = min(runs, key=lambda r: r["return"]["ttft_p50_s"] or float("inf"))
        report["servers"][name] = {"rounds": runs, "best": best}
    report["ratios"] = ratios(report["servers"])
    report["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print_table(report)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "returning.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwrote {out_dir / 'returning.json'}")
    return report


def print_table(report: dict[str, Any]) -> None:
    print(
        f"\nReturning conversations: {report['chats']} chats on {report['slots']} slots, "
        f"~{report['history_tokens']}-token histories, {report['concurrency']} at a time; "
        f"load {report['load_before']} -> {report['load_after']}"
    )
    print(f"{'server':24s} {'phase':7s} {'TTFT p50':>9s} {'TTFT p95':>9s} {'wall':>7s}")
    for name, data in report["servers"].items():
        for phase in PHASES:
            s = data["best"][phase]
            print(
                f"{name:24s} {phase:7s} {s['ttft_p50_s']!s:>9s} {s['ttft_p95_s']!s:>9s} "
                f"{s['wall_s']!s:>7s}"
            )
    for label, value in report["ratios"].items():
        print(f"{label}: x{value}")


if __name__ == "__main__":
    main()
