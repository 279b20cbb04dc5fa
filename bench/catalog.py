"""Every command ``python -m bench`` runs: the benchmarks, the tools and the experiments.

A command is a module with ``main(argv)``; its one-line summary is the first paragraph of its
docstring, read from the source so that ``--help`` imports none of them (llama_cpp, torch).
``step`` puts a benchmark in ``python -m bench all`` (``make bench``), with the arguments of
its ``--quick`` smoke run.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path


@dataclass(frozen=True)
class Command:
    """One runnable module of the bench package."""

    name: str
    module: str
    kind: str  # "benchmark", "tool" or "experiment"
    step: str | None = None  # the step of ``bench all`` that runs it, if any
    quick: tuple[str, ...] = ()  # its arguments in ``bench all --quick``

    @property
    def path(self) -> Path:
        spec = find_spec(self.module)
        if spec is None or spec.origin is None:
            raise LookupError(f"{self.module} is not importable")
        return Path(spec.origin)

    @property
    def summary(self) -> str:
        """The first paragraph of the module's docstring, on one line."""
        tree = ast.parse(self.path.read_text(encoding="utf-8"))
        doc = (ast.get_docstring(tree) or "").strip()
        return " ".join(doc.split("\n\n")[0].split()).replace("``", "")


COMMANDS: tuple[Command, ...] = (
    Command(
        "engine_inprocess",
        "bench.engine_inprocess",
        "benchmark",
        step="engine",
        quick=("--repeats", "1", "--concurrency", "1,8"),
    ),
    Command("http_serving", "bench.http_serving", "benchmark", step="http", quick=("--quick",)),
    Command("burst", "bench.burst", "benchmark", step="http", quick=("--quick",)),
    Command("returning", "bench.returning", "benchmark", step="http", quick=("--quick",)),
    Command("speculative", "bench.speculative", "benchmark", step="engine", quick=("--quick",)),
    Command("adapters", "bench.adapters", "benchmark"),
    Command("rag_embed", "bench.rag_embed", "benchmark", step="rag"),
    Command("rag_eval", "bench.rag_eval", "benchmark", step="rag"),
    Command("rag_search", "bench.rag_search", "benchmark", step="rag", quick=("--sizes", "10000")),
    Command("drift", "bench.drift", "benchmark"),
    Command("stream_cpu", "bench.stream_cpu", "benchmark"),
    Command("soak", "bench.soak", "benchmark"),
    Command("all", "bench.all", "tool"),
    Command("table", "bench.table", "tool"),
    Command("capture_overhead", "bench.experiments.capture_overhead", "experiment"),
    Command("profile_engine", "bench.experiments.profile_engine", "experiment"),
    Command("kv_share_probe", "bench.experiments.kv_share_probe", "experiment"),
    Command("logprobs_overhead", "bench.experiments.logprobs_overhead", "experiment"),
    Command("c8_trace", "bench.experiments.c8_trace", "experiment"),
    Command("reuse_costs", "bench.experiments.reuse_costs", "experiment"),
    Command("pass_costs", "bench.experiments.pass_costs", "experiment"),
)

BY_NAME = {command.name: command for command in COMMANDS}
STEPS = ("engine", "http", "rag")
