"""The files the images COPY from the repository are enough to build and run the ggserve CLI.

Catches a new top-level package or data file that the code needs but the Dockerfiles do not copy,
without a Docker engine: the same `pip install --no-deps .` runs on a folder holding only them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO
from tests.deploy.dockerfile import Dockerfile


def _context_copies(dockerfile: Dockerfile) -> list[str]:
    return [
        source
        for copy in dockerfile.stage("venv").copies()
        if copy.from_stage is None
        for source in copy.sources
    ]


CHECK_CLI = """
import sys
from typer.testing import CliRunner
import cli.main
assert cli.main.__file__.startswith(sys.argv[1]), cli.main.__file__
for args in (["--help"], ["serve", "--help"], ["health", "--help"]):
    result = CliRunner().invoke(cli.main.app, args)
    assert result.exit_code == 0, (args, result.output, result.exception)
print("ok")
"""


def test_both_images_copy_the_same_sources(
    cpu_dockerfile: Dockerfile, cuda_dockerfile: Dockerfile
) -> None:
    assert _context_copies(cpu_dockerfile) == _context_copies(cuda_dockerfile)


def test_copied_sources_install_a_working_ggserve_command(
    cpu_dockerfile: Dockerfile, tmp_path: Path
) -> None:
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not in this venv (needed to build without network access)")
    context, target = tmp_path / "context", tmp_path / "site"
    for source in _context_copies(cpu_dockerfile):
        for path in REPO.glob(source):
            destination = context / path.relative_to(REPO)
            destination.parent.mkdir(parents=True, exist_ok=True)
            if path.is_dir():
                shutil.copytree(path, destination, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(path, destination)
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(context)],
        capture_output=True, text=True, timeout=180, cwd=tmp_path,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-2000:]
    assert (target / "bin" / "ggserve").is_file(), "the ggserve console script was not installed"
    # Run the installed copy, not the repository: cwd outside it, the install first on the path.
    check = subprocess.run(
        [sys.executable, "-c", CHECK_CLI, str(target)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(target)},
    )  # fmt: skip
    assert check.returncode == 0 and check.stdout.strip() == "ok", check.stderr[-3000:]


def test_the_cli_imports_neither_llama_cpp_nor_torch_until_a_command_needs_them() -> None:
    # The CUDA image smoke-tests `ggserve --help` at build time, where no GPU driver exists and
    # loading llama.cpp's CUDA library fails; the serving images lack the convert extra (peft,
    # gguf); and the HEALTHCHECK starts the CLI every 30 s, so it must stay light (0.84 s, 48 MB).
    heavy = ("llama_cpp", "torch", "sentence_transformers", "faiss", "transformers", "peft", "gguf")
    code = f"import sys, cli.main; print([m for m in {heavy!r} if m in sys.modules])"
    probe = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert probe.stdout.strip() == "[]", f"imported by `import cli.main`: {probe.stdout.strip()}"
