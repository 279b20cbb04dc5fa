"""``python -m bench``: every runnable module is listed, and each listed one can run."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from bench import __main__ as dispatcher
from bench.catalog import COMMANDS, STEPS, Command

ROOT = Path(__file__).resolve().parents[3]
BENCH = ROOT / "bench"


def _runnable_modules() -> set[str]:
    """Modules of bench/ and bench/experiments/ (harness and package files aside)."""
    found = set()
    for folder, package in ((BENCH, "bench"), (BENCH / "experiments", "bench.experiments")):
        for path in folder.glob("*.py"):
            if not path.name.startswith("_") and path.name != "catalog.py":
                found.add(f"{package}.{path.stem}")
    return found


def test_every_bench_module_is_a_listed_command_and_every_command_exists() -> None:
    listed = {command.module for command in COMMANDS}
    assert _runnable_modules() - listed == set(), "a module of bench/ missing from bench.catalog"
    assert listed - _runnable_modules() == set(), "bench.catalog names a module that is gone"
    assert len({c.name for c in COMMANDS}) == len(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
def test_each_command_defines_main_taking_argv_and_a_summary(command: Command) -> None:
    tree = ast.parse(command.path.read_text())
    mains = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
    assert mains, f"{command.module} has no top-level main()"
    assert [a.arg for a in mains[0].args.args] == ["argv"], (
        "main(argv) is what the dispatcher calls"
    )
    assert command.summary and "\n" not in command.summary


def test_all_runs_only_known_steps_and_every_step_has_a_benchmark() -> None:
    steps = {c.step for c in COMMANDS if c.step is not None}
    assert steps == set(STEPS)
    assert all(c.kind == "benchmark" for c in COMMANDS if c.step is not None)


def test_help_lists_every_command_with_its_summary() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = result.stdout.splitlines()
    for command in COMMANDS:
        assert any(
            line.split()[:1] == [command.name] and command.summary in line for line in lines
        ), f"{command.name} is not listed with its summary"


def test_an_unknown_command_exits_2_and_names_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert dispatcher.main(["no_such_bench"]) == 2
    assert "unknown command 'no_such_bench'" in capsys.readouterr().err


def test_quick_plan_of_all_runs_each_step_as_python_dash_m_bench() -> None:
    from bench import all as run_all

    plan = run_all.plan({"rag"}, quick=True)
    assert [name for name, _ in plan] == ["rag_embed", "rag_eval", "rag_search"]
    assert plan[2][1][1:] == ["-m", "bench", "rag_search", "--sizes", "10000"]
    assert run_all.plan({"rag"}, quick=False)[2][1][-1] == "rag_search"
