"""Soak test: mixed traffic at 2x the slot count for N minutes, with clients that walk away.

Starts the real server (``python -m cli.main serve``) on a loopback port with a small document
index, then runs ``2 * n_slots`` closed-loop clients. Each picks at random: chat, streaming
chat, text completion, embeddings or /v1/ask; one request in five disconnects early (a stream
closed after a few chunks, or a non-streaming request abandoned after a short timeout).

Prints requests by status, p50/p95 latency of the first and the last minute, server RSS at the
start and the end, and the slots still active once traffic stops, then checks the targets:
0 responses >= 500 other than 503 overload, RSS growth < 5 %, last-minute p95 within 20 % of
the first, 0 slots held at the end. Exit status 1 when a target is missed; then the run's
folder (server log, index) is kept and its path printed, and every ERROR record of the server
log is printed whole, with its traceback.

    flock /tmp/ggserve-heavy.lock python -m bench soak --minutes 10     # make soak
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.harness import server_log
from bench.harness.server import ROOT, RunningServer, ServerSpec, ggserve, running
from bench.harness.stats import percentile
from server.security.api_keys import hash_key

KEY = "ggs-soak-key"
DOCS = {
    "travel.md": "# Travel\n\nTravel expenses above 200 euros need a receipt and the approval "
    "of the finance team within 30 days.\n",
    "safety.md": "# Safety\n\nReport a safety incident to the safety officer the same day, "
    "using the incident form; the officer answers within 48 hours.\n",
    "holidays.md": "# Holidays\n\nA holiday needs two weeks of notice; more than ten days in a "
    "row need the approval of the project lead.\n",
}
QUESTIONS = (
    "Who approves travel expenses?",
    "How do I report a safety incident?",
    "How much notice does a holiday need?",
)
TOPICS = (
    "Explain how a bicycle stays upright.",
    "Write a short poem about the sea.",
    "Describe the water cycle.",
    "Give three tips for better sleep.",
    "What is a prime number?",
)
KINDS = ("chat", "chat_stream", "completion", "embedding", "ask")


@dataclass
class Sample:
    kind: str
    status: str  # HTTP status, or "disconnect" / an exception class name
    started: float  # seconds since traffic began
    latency: float


@dataclass
class Soak:
    url: str
    deadline: float
    t0: float
    disconnect_rate: float
    rng: random.Random
    samples: list[Sample] = field(default_factory=list)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _body(kind: str, rng: random.Random) -> tuple[str, dict[str, object]]:
    max_tokens = rng.randint(8, 48)
    if kind in ("chat", "chat_stream"):
        return "/v1/chat/completions", {
            "messages": [{"role": "user", "content": rng.choice(TOPICS)}],
            "max_tokens": max_tokens,
            "stream": kind == "chat_stream",
        }
    if kind == "completion":
        return "/v1/completions", {"prompt": rng.choice(TOPICS), "max_tokens": max_tokens}
    if kind == "embedding":
        return "/v1/embeddings", {"input": [rng.choice(TOPICS), rng.choice(QUESTIONS)]}
    return "/v1/ask", {"question": rng.choice(QUESTIONS), "max_tokens": max_tokens}


async def one_request(client: httpx.AsyncClient, soak: Soak) -> None:
    rng = soak.rng
    kind = rng.choice(KINDS)
    path, body = _body(kind, rng)
    leave = rng.random() < soak.disconnect_rate
    started = time.monotonic()
    status: str
    try:
        if kind == "chat_stream":
            async with client.stream("POST", path, json=body) as response:
                status = str(response.status_code)
                chunks = 0
                async for _line in response.aiter_lines():
                    chunks += 1
                    if leave and chunks >= rng.randint(1, 6):
                        status = "disconnect"
                        break
        elif leave:
            try:
                response = await client.post(path, json=body, timeout=rng.uniform(0.05, 1.0))
                status = str(response.status_code)
            except httpx.TimeoutException:
                status = "disconnect"
        else:
            response = await client.post(path, json=body)
            status = str(response.status_code)
    except httpx.HTTPError as exc:
        status = type(exc).__name__
    soak.samples.append(Sample(kind, status, started - soak.t0, time.monotonic() - started))


async def client_loop(soak: Soak) -> None:
    headers = {"X-API-KEY": KEY}
    async with httpx.AsyncClient(base_url=soak.url, headers=headers, timeout=120) as client:
        while time.monotonic() < soak.deadline:
            await one_request(client, soak)


def soak_server(n_slots: int, index: Path) -> ServerSpec:
    """ggserve with ``n_slots`` slots, the soak's key, ``index`` for /v1/ask and a short queue."""
    return ggserve(
        {
            "GGSERVE_API_KEYS": f"soak:{hash_key(KEY)}",
            "GGSERVE_N_SLOTS": str(n_slots),
            "GGSERVE_INDEX_PATH": str(index),
            "GGSERVE_MAX_QUEUE": str(4 * n_slots),
        },
        name="ggserve-soak",
    )


def build_index(work: Path) -> Path:
    docs = work / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text)
    index = work / "index"
    subprocess.run(
        [sys.executable, "-m", "cli.main", "index", "build", str(docs), "--out", str(index)],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return index


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def report(soak: Soak, minutes: float, rss: tuple[float, float], slots_end: int) -> bool:
    """Print the counts, latencies and memory of the run; True when every target is met."""
    by_status = Counter(s.status for s in soak.samples)
    by_kind = Counter(s.kind for s in soak.samples)
    ok = [s for s in soak.samples if s.status == "200"]
    first = [s.latency for s in ok if s.started < 60]
    last_start = minutes * 60 - 60
    last = [s.latency for s in ok if s.started >= last_start]
    p95_first, p95_last = percentile(first, 95), percentile(last, 95)
    growth = (rss[1] - rss[0]) / rss[0] * 100
    server_errors = sum(
        n for status, n in by_status.items() if status[0] == "5" and status != "503"
    )
    print(f"requests: {len(soak.samples)} in {minutes:g} min; by kind: {dict(by_kind)}")
    print("by status: " + ", ".join(f"{k}: {v}" for k, v in sorted(by_status.items())))
    print(
        f"latency first minute: p50 {_seconds(percentile(first, 50))}, "
        f"p95 {_seconds(p95_first)} ({len(first)} requests)"
    )
    print(
        f"latency last minute:  p50 {_seconds(percentile(last, 50))}, "
        f"p95 {_seconds(p95_last)} ({len(last)} requests)"
    )
    print(
        f"RSS less the prompt cache: after the first minute {rss[0]:.0f} MB, end {rss[1]:.0f} MB "
        f"({growth:+.1f} %)"
    )
    print(f"slots active at the end: {slots_end}")
    checks = {
        "no 5xx other than 503": server_errors == 0,
        "RSS growth < 5 %": growth < 5,
        "last-minute p95 within 20 % of the first": p95_first is not None
        and p95_last is not None
        and p95_last <= 1.2 * p95_first,
        "0 slots held at the end": slots_end == 0,
    }
    for name, passed in checks.items():
        print(f"  [{'ok' if passed else 'MISSED'}] {name}")
    return all(checks.values())


def print_errors(log: Path, limit: int = 20) -> int:
    """Print the server log's ERROR records whole (traceback included); returns their number."""
    errors = server_log.error_records(log) if log.exists() else []
    print(f"server log ERROR records: {len(errors)}")
    for record in errors[:limit]:
        print(server_log.format_record(record))
    if len(errors) > limit:
        print(f"... and {len(errors) - limit} more in {log}")
    return len(errors)


def prompt_cache_mb(metrics_text: str) -> float:
    """The RAM prompt cache's size from /metrics: memory the server keeps on purpose, bounded by
    GGSERVE_PROMPT_CACHE_MB, so not a leak."""
    for line in metrics_text.splitlines():
        if line.startswith("ggserve_prompt_cache_bytes "):
            return float(line.split()[-1]) / 2**20
    return 0.0


async def soak_traffic(
    url: str, clients: int, minutes: float, disconnect_rate: float, pid: int
) -> tuple[Soak, list[tuple[float, float]]]:
    """Run the clients; every 10 s sample the server's RSS less its RAM prompt cache."""
    t0 = time.monotonic()
    soak = Soak(url, t0 + minutes * 60, t0, disconnect_rate, random.Random(1234))
    rss: list[tuple[float, float]] = []

    async def sample_rss() -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            while time.monotonic() < soak.deadline:
                cache = prompt_cache_mb((await client.get(url + "/metrics")).text)
                rss.append((time.monotonic() - t0, rss_mb(pid) - cache))
                await asyncio.sleep(10)

    await asyncio.gather(sample_rss(), *(client_loop(soak) for _ in range(clients)))
    return soak, rss


def measure(server: RunningServer, args: argparse.Namespace) -> bool:
    """Run the traffic against ``server``, print the report; True when every target is met."""
    rss_ready = rss_mb(server.proc.pid)
    soak, samples = asyncio.run(
        soak_traffic(
            server.url, 2 * args.slots, args.minutes, args.disconnect_rate, server.proc.pid
        )
    )
    time.sleep(2)  # cancelled requests free their slot within one engine step
    health = httpx.get(server.url + "/health", timeout=5).json()
    cache_end = prompt_cache_mb(httpx.get(server.url + "/metrics", timeout=10).text)
    rss_end = rss_mb(server.proc.pid) - cache_end
    alive = server.proc.poll() is None
    # Growth is measured from the end of the first minute: the first requests fault in the KV
    # cache, the embedder's buffers and allocator arenas once (a one-off step).
    warm = [mb for at, mb in samples if at >= 60] or [rss_end]
    print(f"load average (1, 5, 15 min): {os.getloadavg()}")
    print(f"RSS when ready (before traffic): {rss_ready:.0f} MB")
    print(f"RAM prompt cache at the end (kept on purpose, excluded below): {cache_end:.0f} MB")
    passed = report(soak, args.minutes, (warm[0], rss_end), health["slots_active"])
    print(f"server alive at the end: {alive}")
    return passed and alive


def main(argv: list[str] | None = None) -> int:
    """Soak one server; exit status 1 (and the run's folder kept) when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="traffic duration")
    parser.add_argument("--slots", type=int, default=4, help="GGSERVE_N_SLOTS of the server")
    parser.add_argument("--disconnect-rate", type=float, default=0.2)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ggserve-soak-"))
    log = work / "server.log"
    passed = False
    try:
        spec = soak_server(args.slots, build_index(work))
        with running(spec, work, timeout=300, log_name="server", stop_timeout=60) as server:
            passed = measure(server, args)
    finally:
        # After the server stopped, so records of its shutdown are there too.
        errors = print_errors(log)
        if passed and errors == 0:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept the run's folder: {work} (server log: {log})")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
