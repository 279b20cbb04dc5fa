"""Where a serving step's time goes, for a ggserve server under 1 and 8 streams.

Starts ggserve (as the HTTP benchmark does) and drives closed-loop clients streaming short
chats. For each concurrency it prints the engine's own split from /metrics (counters the engine
keeps: time in the decode call, the rest of each step, idle waits), which no profiler distorts;
with ``--py-spy`` it also records the process with ``py-spy record --idle --nonblocking`` at
50 Hz and prints, per thread (engine, event loop), the share of samples in each part: the
decode, sampling, the planner, the HTTP layer (FastAPI, pydantic, chat template, SSE) and idle
waits. py-spy itself takes CPU on a 2-core machine, so rates under it are lower.

    pip install py-spy     # not a project dependency: a tool of this experiment
    python -m bench profile_engine --seconds 20            # the engine's own step split
    python -m bench profile_engine --seconds 20 --py-spy   # plus py-spy samples per thread
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import httpx

from bench.harness.load import run_load, summarize
from bench.harness.prompts import chat_requests
from bench.harness.server import ROOT, ggserve, running

# (category, substrings of a frame: the deepest frame matching one names the sample)
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("llama_decode (native)", ("llama_decode", "ggml_", "llama_context", "llm_graph")),
    ("batch fill", ("_put (server/engine/executor.py",)),
    ("llama_decode call", ("decode (server/engine/executor.py",)),
    ("sampling", ("sampling.py", "llama_sampler", "logprobs.py")),
    ("planner", ("planner.py", "scheduling.py", "speculation.py")),
    ("executor other", ("executor.py",)),
    ("detokenize/stop strings", ("detokenizer.py", "stop_strings.py", "token_to_piece")),
    ("engine loop other", ("llama_engine.py", "outbox.py")),
    ("chat template/tokenize", ("jinja2", "chat/prompt.py", "chat/template.py", "llama_tokenize")),
    ("HTTP (starlette/uvicorn/pydantic)", ("starlette", "uvicorn", "fastapi", "pydantic", "h11")),
    ("api layer", ("server/api/",)),
    ("asyncio", ("asyncio",)),
)


def categorize(stack: str) -> str:
    """The category of a collapsed stack (frames joined by ';', outermost first)."""
    frames = stack.split(";")
    if any(w in frames[-1] for w in ("wait (threading", "_wait", "select", "epoll", "sleep")):
        return "idle wait"
    for frame in reversed(frames):
        for name, needles in CATEGORIES:
            if any(n in frame for n in needles):
                return name
    if any("wait" in f or "select" in f or "epoll" in f or "sleep" in f for f in frames[-3:]):
        return "idle wait"
    return "other"


def thread_of(stack: str) -> str:
    head = stack.split(";", 1)[0]
    if "ggserve-engine" in head or "_run (server/engine" in stack:
        return "engine thread"
    if "MainThread" in head or "uvicorn" in stack:
        return "event loop"
    return "other threads"


def summarize_profile(raw: Path) -> dict[str, Counter[str]]:
    """Samples per (thread, category) from py-spy's raw (collapsed) output."""
    out: dict[str, Counter[str]] = {}
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        out.setdefault(thread_of(stack), Counter())[categorize(stack)] += int(count)
    return out


async def drive(url: str, headers: dict[str, str], concurrency: int, seconds: float) -> dict:
    requests = chat_requests(concurrency * 40, 64, run="profile")
    load = await run_load(url, requests, concurrency, headers=headers, budget_s=seconds)
    return summarize(load)


def engine_counters(url: str) -> dict[str, float]:
    """The engine's own time and step counters from /metrics (no profiler in the way)."""
    names = ("busy_seconds", "decode_seconds", "idle_seconds", "decode_steps", "tokens_generated")
    out: dict[str, float] = {}
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        for name in names:
            if line.startswith(f"ggserve_engine_{name}_total "):
                out[name] = float(line.split()[-1])
    return out


def step_split(before: dict[str, float], after: dict[str, float]) -> str:
    """Per decode step: ms in the decode call, ms elsewhere in the loop, and idle share."""
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    steps = d.get("decode_steps", 0.0) or 1.0
    busy, decode, idle = d.get("busy_seconds", 0.0), d.get("decode_seconds", 0.0), d["idle_seconds"]
    return (
        f"{int(steps)} steps, {d.get('tokens_generated', 0):.0f} tokens: per step "
        f"{1000 * decode / steps:.1f} ms in decode, {1000 * (busy - decode) / steps:.2f} ms "
        f"elsewhere in the loop (plan, KV edits, sampling, delivery); engine idle "
        f"{100 * idle / max(busy + idle, 1e-9):.0f} % of its time"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--py-spy", action="store_true", help="Also sample with py-spy.")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if args.py_spy and not Path(py_spy).exists():
        raise SystemExit("py-spy is not installed: pip install py-spy")
    print(f"# engine profile — load before {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GGSERVE_N_SLOTS": "8", "GGSERVE_AUTH_DISABLED": "true"}
        with running(ggserve(env), Path(tmp)) as server:
            for concurrency in (int(c) for c in args.concurrency.split(",")):
                raw = Path(tmp) / f"profile-{concurrency}.txt"
                record = None
                if args.py_spy:
                    record = subprocess.Popen(
                        [
                            py_spy,
                            "record",
                            "--pid",
                            str(server.proc.pid),
                            "--idle",
                            "--nonblocking",
                            "--threads",
                            "--format",
                            "raw",
                            "--rate",
                            "50",
                            "--duration",
                            str(int(args.seconds)),
                            "--output",
                            str(raw),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                before = engine_counters(server.url)
                stats = asyncio.run(drive(server.url, server.headers, concurrency, args.seconds))
                after = engine_counters(server.url)
                rate = stats.get("throughput_tok_s") or 0.0
                print(f"\n## {concurrency} stream(s): {rate:.1f} tok/s aggregate")
                print(step_split(before, after))
                if record is None:
                    continue
                record.wait()
                for thread, counts in sorted(summarize_profile(raw).items()):
                    total = sum(counts.values()) or 1
                    print(f"\n{thread} ({total} samples):")
                    for name, n in counts.most_common():
                        print(f"  {name:34s} {100 * n / total:5.1f} %")
                shutil.copy(raw, ROOT / "bench" / "results" / f"profile-{concurrency}.txt")


if __name__ == "__main__":
    main()
