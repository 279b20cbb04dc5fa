"""What .dockerignore keeps out of the build context."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.conftest import REPO
from tests.deploy.dockerignore import DockerIgnore


@pytest.mark.parametrize(
    "path",
    [
        "models/SmolLM2-135M-Instruct.Q4_1.gguf",
        "models/all-MiniLM-L6-v2/model.safetensors",
        "indexes/docs/index.faiss",
        ".venv/bin/python",
        ".cache/ggserve/anything",
        ".git/HEAD",
        ".env",
        ".env.production",
        "data/feedback.db",
        "server/__pycache__/app.cpython-311.pyc",
        "somewhere/else/model.gguf",
    ],
)
def test_models_venvs_caches_data_and_secrets_stay_out_of_the_context(
    dockerignore: DockerIgnore, path: str
) -> None:
    assert dockerignore.ignores(path)


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        "README.md",
        "server/app.py",
        "cli/main.py",
        "convert/__init__.py",
        "artifacts/__init__.py",
        "flywheel/__init__.py",
    ],
)
def test_what_the_images_install_stays_in_the_context(
    dockerignore: DockerIgnore, path: str
) -> None:
    assert not dockerignore.ignores(path)


def test_matcher_follows_docker_rules(tmp_path: Path) -> None:
    ignore_file = tmp_path / ".dockerignore"
    ignore_file.write_text("docs\n!docs/keep.md\n*.log\n**/tmp\n")
    rules = DockerIgnore(ignore_file)
    assert rules.ignores("docs/other.md")
    assert not rules.ignores("docs/keep.md")
    assert rules.ignores("build.log")
    assert not rules.ignores("sub/build.log"), "a bare pattern matches at the context root only"
    assert rules.ignores("a/b/tmp/file")


def test_the_repository_dockerignore_exists() -> None:
    assert (REPO / ".dockerignore").is_file()
