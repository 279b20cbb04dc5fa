"""Where a serving step's time goes: py-spy samples of a ggserve server under 1 and 8 streams.

Starts ggserve (as the HTTP benchmark does), records it with ``py-spy record --idle
--nonblocking`` at 50 Hz (Python frames: a native call counts under the Python line that made
it; py-spy itself takes CPU, so rates are lower than unprofiled) while closed-loop clients stream short chats, and prints, per concurrency, the share of samples
in each part of the server: llama.cpp's decode, sampling, the planner and the rest of the engine
loop, the HTTP layer (event loop: FastAPI, pydantic, chat template, SSE) and idle waits. The
engine thread and the event loop are reported separately (they run in parallel).

    pip install py-spy     # not a project dependency: a tool of this experiment
    python -m bench.experiments.profile_engine --seconds 20
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", default="1,8")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        raise SystemExit("py-spy is not installed: pip install py-spy")
    print(f"# engine profile — load before {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GGSERVE_N_SLOTS": "8", "GGSERVE_AUTH_DISABLED": "true"}
        with running(ggserve(env), Path(tmp)) as server:
            for concurrency in (int(c) for c in args.concurrency.split(",")):
                raw = Path(tmp) / f"profile-{concurrency}.txt"
                record = subprocess.Popen(
                    [
                        py_spy,
                        "record",
                        "--pid",
                        str(server.proc.pid),
                        "--native",
                        "--idle",
                        "--threads",
                        "--format",
                        "raw",
                        "--rate",
                        "200",
                        "--duration",
                        str(int(args.seconds)),
                        "--output",
                        str(raw),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                stats = asyncio.run(drive(server.url, server.headers, concurrency, args.seconds))
                record.wait()
                rate = stats.get("throughput_tok_s") or 0.0
                print(f"\n## {concurrency} stream(s): {rate:.1f} tok/s aggregate")
                for thread, counts in sorted(summarize_profile(raw).items()):
                    total = sum(counts.values()) or 1
                    print(f"\n{thread} ({total} samples):")
                    for name, n in counts.most_common():
                        print(f"  {name:34s} {100 * n / total:5.1f} %")
                keep = ROOT / "bench" / "results" / f"profile-{concurrency}.txt"
                shutil.copy(raw, keep)


if __name__ == "__main__":
    main()
