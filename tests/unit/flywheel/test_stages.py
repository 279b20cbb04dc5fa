"""The stage list is a true map of the loop: its commands and code paths exist."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from flywheel.stages import STAGES, Stage, describe

ROOT = Path(__file__).resolve().parents[3]


def _ggserve_commands(stage_command: str) -> list[list[str]]:
    """The ggserve sub-commands a stage names (words before the first option or argument)."""
    found = []
    for part in stage_command.split(";"):
        words = shlex.split(part.split("(")[0])
        if words[:1] != ["ggserve"]:
            continue
        path = []
        for word in words[1:]:
            if word.startswith("-") or word.isupper():  # an option or a placeholder
                break
            path.append(word)
        found.append(path)
    return found


@pytest.mark.parametrize("stage", STAGES, ids=[s.name for s in STAGES])
def test_each_stage_names_a_command_that_exists(stage: Stage) -> None:
    commands = _ggserve_commands(stage.command)
    assert commands, f"{stage.name} names no ggserve command"
    for command in commands:
        result = CliRunner().invoke(app, [*command, "--help"])
        assert result.exit_code == 0, (command, result.output)


@pytest.mark.parametrize("stage", STAGES, ids=[s.name for s in STAGES])
def test_each_stage_points_at_code_that_exists(stage: Stage) -> None:
    for path in stage.code.split(" → "):
        assert (ROOT / path).exists(), path


def test_the_loop_reads_in_order_from_capture_to_rollout() -> None:
    names = [stage.name for stage in STAGES]
    assert names == [
        "capture",
        "feedback",
        "export",
        "train",
        "convert",
        "gate",
        "register",
        "promote",
        "rollout",
    ]
    assert describe().splitlines()[0].startswith("1. capture:")
