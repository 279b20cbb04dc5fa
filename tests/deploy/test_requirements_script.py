"""deploy/docker/requirements.py: the dependency list the images install before the code."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from tests.deploy.conftest import REPO

SCRIPT = REPO / "deploy" / "docker" / "requirements.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=30
    )


def test_lists_exactly_the_runtime_dependencies_without_extras() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    result = _run(str(REPO / "pyproject.toml"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == project["dependencies"]


def test_adds_the_requested_extras_once_each(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\nname = "x"\ndependencies = ["a==1", "b>=2"]\n'
        '[project.optional-dependencies]\nconvert = ["c", "a==1"]\ngpu = ["d"]\n'
    )
    result = _run(str(pyproject), "--extras", "convert, gpu")
    assert result.stdout.splitlines() == ["a==1", "b>=2", "c", "d"]


def test_an_unknown_extra_fails_naming_the_known_ones() -> None:
    result = _run(str(REPO / "pyproject.toml"), "--extras", "convrt")
    assert result.returncode == 2
    assert "extra 'convrt' is not in" in result.stderr
    assert "convert" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_pyproject_is_a_one_line_error(tmp_path: Path) -> None:
    result = _run(str(tmp_path / "missing.toml"))
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and "Traceback" not in result.stderr
