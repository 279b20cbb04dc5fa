"""Run the maintained benchmarks one after another (``make bench``), so none competes for the CPU.

1. ``engine``: ``engine_inprocess``, the engine vs raw ``llama_cpp.Llama`` in one process;
2. ``http``: ``http_serving``, ggserve vs llama_cpp.server vs llama-server over HTTP, then
   ``burst``, the RAG burst (8 requests sharing a context) vs llama-server;
3. ``rag``: ``rag_embed``, ``rag_eval``, ``rag_search``, the retrieval benchmarks.

Which benchmark belongs to which step is in :mod:`bench.catalog`.

Each step's output is shown and also saved next to the results (``bench/results/`` for a full
run, ``.cache/bench/quick/`` for ``--quick``). The exit status is non-zero if any step failed.

    python -m bench all            # full (~20 min on 2 idle cores)
    python -m bench all --quick    # smoke run of every step
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.catalog import COMMANDS, STEPS
from bench.harness.server import ROOT

BUSY_LOAD = 1.5


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short smoke run of every step")
    parser.add_argument(
        "--only",
        default="engine,http,rag",
        help="comma list of steps to run: engine, http, rag (default: all)",
    )
    return parser.parse_args(argv)


def _env() -> dict[str, str]:
    """Offline and unbuffered; each step runs as ``python -m bench NAME`` from the root."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


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


def plan(steps: set[str], quick: bool) -> list[tuple[str, list[str]]]:
    """The commands of the selected steps, in catalog order, with their quick arguments."""
    return [
        (c.name, [sys.executable, "-m", "bench", c.name, *(c.quick if quick else ())])
        for c in COMMANDS
        if c.step in steps
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the selected steps and print one line per step; non-zero exit if any failed."""
    args = parse_args(argv)
    steps = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = steps - set(STEPS)
    if unknown:
        print(f"unknown step(s) {sorted(unknown)}; choose from {', '.join(STEPS)}", file=sys.stderr)
        return 2
    out_dir = ROOT / (".cache/bench/quick" if args.quick else "bench/results")
    load = os.getloadavg()[0]
    if load > BUSY_LOAD:
        print(
            f"warning: load average {load:.2f} > {BUSY_LOAD}: other work is running on this "
            "machine, so the figures will be low and noisy; rerun when it is idle.",
            flush=True,
        )
    outcomes = [run_step(name, command, out_dir) for name, command in plan(steps, args.quick)]
    print("\n#### summary")
    for name, code, seconds in outcomes:
        status = "ok" if code == 0 else f"FAILED (exit {code})"
        print(f"{name:24s} {status:18s} {seconds:7.1f} s  → {out_dir / (name + '.txt')}")
    return 0 if all(code == 0 for _, code, _ in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
