"""Fixtures for the deploy checks: the repository, its Dockerfiles, compose file and manifests."""

from __future__ import annotations

import re
import shutil
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.dockerfile import Dockerfile, parse
from tests.deploy.dockerignore import DockerIgnore

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = ("Dockerfile.cpu", "Dockerfile.cuda")
K8S = REPO / "deploy" / "k8s"


def tool(name: str) -> str | None:
    """A command-line tool from this venv first (the dev extra installs them), then PATH."""
    beside_python = Path(sys.executable).parent / name
    return str(beside_python) if beside_python.exists() else shutil.which(name)


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    """Every non-empty document of a YAML file."""
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc]


def settings_fields() -> set[str]:
    """Environment names the server reads: GGSERVE_ + each Settings field, upper-cased."""
    from server.settings import Settings

    return {f"GGSERVE_{name.upper()}" for name in Settings.model_fields}


def check_ggserve_env(env: dict[str, str], where: str) -> None:
    """Every GGSERVE_* variable is a real setting and its value passes the setting's validation."""
    from server.settings import Settings

    known = settings_fields()
    ours = {k: v for k, v in env.items() if k.startswith("GGSERVE_")}
    unknown = sorted(set(ours) - known)
    assert not unknown, f"{where} sets {unknown}, which server/settings.py does not read"
    values = {k.removeprefix("GGSERVE_").lower(): v for k, v in ours.items()}
    # model_validate: these values against the fields, without reading this process's env.
    Settings.model_validate(values)


def compose_default(value: str) -> str:
    """Resolve compose ``${VAR:-default}`` interpolation to its default, as with an empty env."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


@pytest.fixture(scope="session")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


@pytest.fixture(scope="session", params=DOCKERFILES)
def dockerfile(request: pytest.FixtureRequest) -> Dockerfile:
    return parse(REPO / request.param)


@pytest.fixture(scope="session")
def cpu_dockerfile() -> Dockerfile:
    return parse(REPO / "Dockerfile.cpu")


@pytest.fixture(scope="session")
def cuda_dockerfile() -> Dockerfile:
    return parse(REPO / "Dockerfile.cuda")


@pytest.fixture(scope="session")
def dockerignore() -> DockerIgnore:
    return DockerIgnore(REPO / ".dockerignore")


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    with (REPO / "docker-compose.yml").open(encoding="utf-8") as handle:
        loaded: dict[str, Any] = yaml.safe_load(handle)
    return loaded
