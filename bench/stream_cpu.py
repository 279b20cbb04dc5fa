"""Server CPU per 1,000 streamed tokens: the event loop's share of short streamed chats.

Starts ggserve (speculation off, 8 slots) and drives ``--concurrency`` closed-loop clients
streaming short chats of ``--max-tokens`` tokens, then reads the server's CPU time (user + sys)
per thread from ``/proc/PID/task/*/schedstat`` over each round. CPU seconds, not wall time: another
process on the machine slows a round down but barely changes what the server spends per token,
so the figure holds on a busy box. The main thread is the event loop (HTTP, SSE, the API
layer); llama.cpp's decode threads and the engine thread are reported apart.

    python -m bench stream_cpu                           # this checkout, 3 rounds
    python -m bench stream_cpu --root /tmp/base-checkout # the same driver on another commit

``--root`` runs the server from another checkout (a ``git worktree`` of the commit to compare,
with its own ``models`` link), so a before/after pair uses one driver.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from bench.harness.load import run_load, summarize
from bench.harness.prompts import chat_requests
from bench.harness.server import ggserve, running

TICKS = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """(name, CPU seconds) of each live thread of ``pid``, by thread id: the scheduler's own
    nanosecond count (``schedstat``), not the 10 ms ticks of ``stat``."""
    out: dict[int, tuple[str, float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            on_cpu_ns = int((task / "schedstat").read_text().split()[0])
            name = (task / "comm").read_text().strip()
        except OSError:  # the thread ended meanwhile
            continue
        out[int(task.name)] = (name, on_cpu_ns / 1e9)
    return out


def process_cpu(pid: int) -> float:
    """User + sys CPU seconds of the whole process, ended threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def split(pid: int, before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]):
    """CPU seconds spent during a round: the event loop (main thread), the engine thread, the
    rest (llama.cpp's decode threads, worker threads)."""
    loop = engine = other = 0.0
    for tid, (name, seconds) in after.items():
        spent = seconds - before.get(tid, (name, 0.0))[1]
        if tid == pid:
            loop += spent
        elif "engine" in name:
            engine += spent
        else:
            other += spent
    return loop, engine, other


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--requests", type=int, default=6, help="Requests per client per round.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--root", type=Path, default=None, help="Serve from this checkout.")
    parser.add_argument("--json", type=Path, default=None, help="Also write the rounds here.")
    args = parser.parse_args(argv)
    spec = ggserve(
        {
            "GGSERVE_N_SLOTS": "8",
            "GGSERVE_AUTH_DISABLED": "true",
            "GGSERVE_SPECULATIVE": "off",
        }
    )
    if args.root is not None:  # same interpreter and venv, the other checkout's code first
        spec.command[:0] = ["env", "-C", str(args.root.resolve())]
    print(f"# stream_cpu — {args.root or 'this checkout'}; load before {os.getloadavg()[0]:.2f}")
    rounds = []
    with tempfile.TemporaryDirectory() as tmp, running(spec, Path(tmp)) as server:
        pid = server.proc.pid
        warm = chat_requests(args.concurrency, args.max_tokens, run="warm")
        asyncio.run(run_load(server.url, warm, args.concurrency, headers=server.headers))
        for r in range(args.rounds):
            requests = chat_requests(
                args.concurrency * args.requests, args.max_tokens, run=f"cpu{r}"
            )
            before, total_before = thread_cpu(pid), process_cpu(pid)
            load = asyncio.run(
                run_load(server.url, requests, args.concurrency, headers=server.headers)
            )
            after, total_after = thread_cpu(pid), process_cpu(pid)
            stats = summarize(load)
            tokens = stats["tokens"] or 1
            loop, engine, other = split(pid, before, after)
            row = {
                "tokens": stats["tokens"],
                "completed": stats["completed"],
                "tok_s": stats["throughput_tok_s"],
                "process_cpu_s_per_1k": round(1000 * (total_after - total_before) / tokens, 3),
                "loop_cpu_s_per_1k": round(1000 * loop / tokens, 3),
                "engine_cpu_s_per_1k": round(1000 * engine / tokens, 3),
                "other_cpu_s_per_1k": round(1000 * other / tokens, 3),
            }
            rounds.append(row)
            print(json.dumps(row), flush=True)
    for key in ("loop_cpu_s_per_1k", "process_cpu_s_per_1k", "tok_s"):
        print(f"median {key}: {statistics.median(r[key] for r in rounds)}")
    if args.json is not None:
        args.json.write_text(json.dumps(rounds, indent=2) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
