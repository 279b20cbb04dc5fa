"""Measure ggserve and llama-server in turn, on one machine, in the same run.

What the burst and returning-conversation benchmarks share: build the peers' specs (a peer that
cannot be built or started is reported, not fatal), start them all, and run ``rounds`` rounds with
the order rotated, so neither server always goes first on a cooler machine.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness.peers import build_llama_server, ggserve_spec, llama_server_spec
from bench.harness.server import ROOT, RunningServer, ServerSpec, ServerStartError, running


def peer_parser(description: str | None) -> argparse.ArgumentParser:
    """The options every peer-against-peer benchmark has: --quick, --model, --threads,
    --rounds, --out, --servers (read back with ``peer_args``)."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one round instead of two")
    parser.add_argument(
        "--model", type=Path, default=ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    )
    parser.add_argument("--threads", type=int, default=0, help="0 = physical cores")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument(
        "--servers", default="ggserve,llama-server", help="comma list: ggserve, llama-server"
    )
    return parser


def peer_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv``: ``servers`` becomes a list; a missing model file is a usage error."""
    args = parser.parse_args(argv)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    if not args.model.is_file():
        parser.error(f"model file {args.model} not found; run 'make models' to fetch it")
    return args


def peer_specs(
    keys: list[str],
    model: Path,
    threads: int,
    slots: int,
    n_ctx: int,
    failures: dict[str, str],
    ggserve_env: dict[str, str] | None = None,
) -> list[ServerSpec]:
    """Specs for ``keys`` (``ggserve``, ``llama-server``) with ``slots`` sequences of ``n_ctx``
    tokens; a peer that cannot be built goes into ``failures`` with the reason."""
    specs: list[ServerSpec] = []
    for key in keys:
        try:
            if key == "ggserve":
                spec = ggserve_spec(model, threads, slots, n_ctx)
                spec.env.update(ggserve_env or {})
                specs.append(spec)
            elif key == "llama-server":
                specs.append(llama_server_spec(build_llama_server(), model, threads, slots, n_ctx))
            else:
                raise ServerStartError(f"unknown server {key!r}: use ggserve or llama-server")
        except ServerStartError as exc:
            failures[key] = str(exc)
            print(f"{key}: not measured: {exc}", file=sys.stderr)
    return specs


def measure_in_rounds(
    specs: list[ServerSpec],
    rounds: int,
    logs: Path,
    failures: dict[str, str],
    measure: Callable[[RunningServer, int, int], dict[str, Any]],
) -> dict[str, list[dict[str, Any]]]:
    """Start every spec, then ``measure(server, round_no, index)`` each server once per round,
    the order rotated by round; per server name, its rounds' results."""
    with contextlib.ExitStack() as stack:
        servers: list[RunningServer] = []
        for spec in specs:
            try:
                servers.append(stack.enter_context(running(spec, logs)))
            except ServerStartError as exc:
                failures[spec.name] = str(exc)
                print(f"{spec.name}: not measured: {exc}", file=sys.stderr)
        results: dict[str, list[dict[str, Any]]] = {s.spec.name: [] for s in servers}
        for round_no in range(rounds):
            print(f"\n-- round {round_no + 1}", flush=True)
            order = servers[round_no % 2 :] + servers[: round_no % 2]
            for server in order:
                index = servers.index(server)
                results[server.spec.name].append(measure(server, round_no, index))
    return results
