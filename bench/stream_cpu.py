"""Server CPU per 1,000 streamed tokens: the event loop's share of short streamed chats.

Starts ggserve (speculation off, 8 slots) and drives ``--concurrency`` closed-loop clients
streaming short chats of ``--max-tokens`` tokens, then reads the server's CPU time (user + sys)
per thread from ``/proc/PID/task/*/schedstat`` over each round. CPU seconds, not wall time: another
process on the machine slows a round down but barely changes what the server spends per token,
so the figure holds on a busy box. The main thread is the event loop (HTTP, SSE, the API
layer); every other thread (the engine's, llama.cpp's decode threads) is reported apart.

    python -m bench stream_cpu                              # this checkout, 3 rounds
    python -m bench stream_cpu --against /tmp/base-checkout # before/after, rounds alternating

``--against`` also starts a server from another checkout (a ``git worktree`` of the baseline
commit, with its own ``models`` link) and alternates rounds between the two, so both see the
same machine and one driver measures both.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.harness.load import run_load, summarize
from bench.harness.prompts import chat_requests
from bench.harness.server import RunningServer, ServerSpec, ggserve, running

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


def split(
    pid: int, before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> tuple[float, float]:
    """CPU seconds spent during a round by the event loop (the main thread) and by every other
    thread (the engine thread, llama.cpp's decode threads, worker threads)."""
    loop = other = 0.0
    for tid, (name, seconds) in after.items():
        spent = seconds - before.get(tid, (name, 0.0))[1]
        if tid == pid:
            loop += spent
        else:
            other += spent
    return loop, other


def measure(server: RunningServer, args: argparse.Namespace, tag: str) -> dict[str, Any]:
    """One round of closed-loop streamed chats against ``server`` and what it cost it."""
    pid = server.proc.pid
    requests = chat_requests(args.concurrency * args.requests, args.max_tokens, run=tag)
    before, total_before = thread_cpu(pid), process_cpu(pid)
    load = asyncio.run(run_load(server.url, requests, args.concurrency, headers=server.headers))
    after, total_after = thread_cpu(pid), process_cpu(pid)
    stats = summarize(load)
    tokens = stats["tokens"] or 1
    loop, other = split(pid, before, after)
    return {
        "server": server.spec.name,
        "tokens": stats["tokens"],
        "completed": stats["completed"],
        "tok_s": stats["throughput_tok_s"],
        "process_cpu_s_per_1k": round(1000 * (total_after - total_before) / tokens, 3),
        "loop_cpu_s_per_1k": round(1000 * loop / tokens, 4),
        "other_cpu_s_per_1k": round(1000 * other / tokens, 3),
    }


# ``--fake-engine``: ggserve as served, its engine replaced by the tests' scripted one, which
# yields a token per stream every ``FAKE_TOKEN_S`` without any decode: what is left of the CPU
# is the HTTP path's (the fake's own timers cost both commits alike).
FAKE_TOKEN_S = 0.005
FAKE_SERVER = f"""
import runpy, sys
import server.runtime.loading as loading
from server.runtime.services import ModelMeta
from tests.fakes import FakeEngine
engine = FakeEngine(reply=" ".join(["word"] * 4096), n_ctx=1 << 20, token_delay_s={FAKE_TOKEN_S})
loading.create_engine = lambda settings: (engine, ModelMeta(architecture="fake"))
sys.argv = ["cli.main", "serve"]
runpy.run_module("cli.main", run_name="__main__")
"""


def spec_for(name: str, root: Path | None, fake_engine: bool) -> ServerSpec:
    """ggserve with speculation off and 8 slots, from ``root`` (this checkout when None)."""
    spec = ggserve(
        {"GGSERVE_N_SLOTS": "8", "GGSERVE_AUTH_DISABLED": "true", "GGSERVE_SPECULATIVE": "off"},
        name=name,
    )
    if fake_engine:
        spec.command[1:] = ["-c", FAKE_SERVER]
    if root is not None:  # same interpreter and venv, the other checkout's code first
        spec.command[:0] = ["env", "-C", str(root.resolve())]
    return spec


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--requests", type=int, default=6, help="Requests per client per round.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--against",
        type=Path,
        default=None,
        help="A checkout of the baseline commit: both servers run, rounds alternate.",
    )
    parser.add_argument(
        "--fake-engine",
        action="store_true",
        help=f"No model: a scripted engine yields a token per stream every {FAKE_TOKEN_S}s.",
    )
    parser.add_argument("--json", type=Path, default=None, help="Also write the rounds here.")
    args = parser.parse_args(argv)
    specs = [spec_for("this", None, args.fake_engine)]
    if args.against is not None:
        specs.insert(0, spec_for("baseline", args.against, args.fake_engine))
    print(f"# stream_cpu — load before {os.getloadavg()[0]:.2f}")
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        servers = [stack.enter_context(running(spec, Path(tmp))) for spec in specs]
        for server in servers:  # warm-up: first-request costs stay out of the rounds
            warm = chat_requests(args.concurrency, args.max_tokens, run="warm")
            asyncio.run(run_load(server.url, warm, args.concurrency, headers=server.headers))
        for r in range(args.rounds):
            for server in servers:  # alternating: both see the same machine, round by round
                row = measure(server, args, f"cpu{r}")
                rounds.append(row)
                print(json.dumps(row), flush=True)
    medians = {}
    for spec in specs:
        mine = [row for row in rounds if row["server"] == spec.name]
        medians[spec.name] = {
            key: statistics.median(row[key] for row in mine)
            for key in ("loop_cpu_s_per_1k", "process_cpu_s_per_1k", "tok_s")
        }
        print(
            f"{spec.name}: median " + ", ".join(f"{k} {v}" for k, v in medians[spec.name].items())
        )
    if args.against is not None:
        ratio = medians["this"]["loop_cpu_s_per_1k"] / medians["baseline"]["loop_cpu_s_per_1k"]
        print(f"event-loop CPU per token, this / baseline: {ratio:.2f}x")
    if args.json is not None:
        args.json.write_text(json.dumps(rounds, indent=2) + "\n")


if __name__ == "__main__":
    main()
