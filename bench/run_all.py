"""``make bench``: every benchmark, one after another, so none competes with another for the CPU.

1. ``bench/engine_inprocess.py`` — the engine vs raw ``llama_cpp.Llama`` in one process;
2. ``bench/http_bench.py`` — ggserve vs llama_cpp.server vs llama-server over HTTP, then
   ``bench/burst_bench.py`` — the RAG burst (8 requests sharing a context) vs llama-server;
3. ``bench/rag_*.py`` — the retrieval benchmarks, when present.

Each step's output is shown and also saved next to the results (``bench/results/`` for a full
run, ``.cache/bench/quick/`` for ``--quick``). The exit status is non-zero if any step failed.

    .venv/bin/python bench/run_all.py            # full (~20 min on 2 idle cores)
    .venv/bin/python bench/run_all.py --quick    # smoke run of every step
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
BUSY_LOAD = 1.5
# Smoke-run arguments of benchmarks that have no --quick flag of their own.
QUICK_FALLBACK = {"rag_search": ["--sizes", "10000"]}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short smoke run of every step")
    parser.add_argument(
        "--only",
        default="engine,http,rag",
        help="comma list of steps to run: engine, http, rag (default: all)",
    )
    return parser.parse_args()


def accepts_quick(script: Path) -> bool:
    """Whether a script's --help mentions --quick (the RAG benches may or may not have it)."""
    help_text = subprocess.run(
        [sys.executable, str(script), "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_env(),
        timeout=120,
        check=False,
    ).stdout
    return "--quick" in help_text


def _env() -> dict[str, str]:
    """Offline, unbuffered, and the project root importable (``server.*``) without install."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}


def run_step(name: str, command: list[str], out_dir: Path) -> tuple[str, int, float]:
    """Run one benchmark, echo its output and save it as ``<name>.txt``; returns the outcome."""
    print(f"\n#### {name}: {' '.join(command)}", flush=True)
    started = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    with subprocess.Popen(
        command,
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        assert proc.stdout is not None

        def stop_child(signum: int, _frame: object) -> None:
            proc.terminate()  # the benchmark stops the servers it started, then exits
            proc.wait(timeout=60)
            raise SystemExit(128 + signum)

        previous = signal.signal(signal.SIGTERM, stop_child)
        try:
            for line in proc.stdout:
                print(line, end="", flush=True)
                lines.append(line)
            code = proc.wait()
        finally:
            signal.signal(signal.SIGTERM, previous)
    (out_dir / f"{name}.txt").write_text("".join(lines))
    return name, code, time.monotonic() - started


def main() -> int:
    """Run the selected steps and print one line per step; non-zero exit if any failed."""
    args = parse_args()
    steps = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = steps - {"engine", "http", "rag"}
    if unknown:
        print(f"unknown step(s) {sorted(unknown)}; choose from engine, http, rag", file=sys.stderr)
        return 2
    out_dir = ROOT / (".cache/bench/quick" if args.quick else "bench/results")
    load = os.getloadavg()[0]
    if load > BUSY_LOAD:
        print(
            f"warning: load average {load:.2f} > {BUSY_LOAD}: other work is running on this "
            "machine, so the figures will be low and noisy; rerun when it is idle.",
            flush=True,
        )
    python = sys.executable
    plan: list[tuple[str, list[str]]] = []
    if "engine" in steps:
        engine_args = ["--repeats", "1", "--concurrency", "1,8"] if args.quick else []
        plan.append(
            ("engine_inprocess", [python, str(BENCH / "engine_inprocess.py"), *engine_args])
        )
    if "http" in steps:
        plan.append(
            ("http_bench", [python, str(BENCH / "http_bench.py")] + ["--quick"] * args.quick)
        )
        plan.append(
            ("burst_bench", [python, str(BENCH / "burst_bench.py")] + ["--quick"] * args.quick)
        )
    if "rag" in steps:
        for script in sorted(BENCH.glob("rag_*.py")):
            quick: list[str] = []
            if args.quick:
                quick = (
                    ["--quick"] if accepts_quick(script) else QUICK_FALLBACK.get(script.stem, [])
                )
            plan.append((script.stem, [python, str(script), *quick]))
    outcomes = [run_step(name, command, out_dir) for name, command in plan]
    print("\n#### summary")
    for name, code, seconds in outcomes:
        status = "ok" if code == 0 else f"FAILED (exit {code})"
        print(f"{name:24s} {status:18s} {seconds:7.1f} s  → {out_dir / (name + '.txt')}")
    return 0 if all(code == 0 for _, code, _ in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
