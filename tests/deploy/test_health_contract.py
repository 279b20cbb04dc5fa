"""The health contract the images and manifests rely on, checked against the real server.

The Docker HEALTHCHECK command and the Kubernetes probe paths are read from the files, then run
against ``ggserve serve``: ready (real SmolLM2 model) and not ready (model file missing).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.deploy.conftest import DOCKERFILES, K8S, REPO, load_yaml_documents
from tests.deploy.dockerfile import Dockerfile, parse
from tests.integration.server_proc import free_port, running_server


def _healthcheck(dockerfile: Dockerfile, port: int) -> int:
    """Exit code of the image's HEALTHCHECK command, run by /bin/sh as Docker does."""
    [check] = dockerfile.final.of("HEALTHCHECK")
    command = check.exec_form()
    assert command is not None and command[:2] == ["/bin/sh", "-c"]
    env = {
        **os.environ,
        "GGSERVE_PORT": str(port),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    return subprocess.run(command, env=env, capture_output=True, timeout=60).returncode


def _probe_paths() -> dict[str, str]:
    [deployment] = load_yaml_documents(K8S / "cpu" / "deployment.yaml")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return {
        probe: container[probe]["httpGet"]["path"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe")
    }


def test_both_images_share_one_healthcheck() -> None:
    checks = [parse(REPO / name).final.of("HEALTHCHECK")[0].args for name in DOCKERFILES]
    assert checks[0] == checks[1]


def test_healthcheck_reports_an_unreachable_server_as_unhealthy_not_reserved() -> None:
    # `ggserve health` exits 2 when nothing answers; Docker reserves 2, the command must say 1.
    assert _healthcheck(parse(REPO / "Dockerfile.cpu"), free_port()) == 1


@pytest.mark.slow
def test_missing_model_keeps_the_pod_alive_but_out_of_the_service(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model.gguf"
    with running_server({"GGSERVE_MODEL_PATH": str(missing)}, wait_ready=False) as server:
        port = int(server.url.rsplit(":", 1)[1])
        paths = _probe_paths()
        for probe in ("startupProbe", "livenessProbe"):
            assert httpx.get(server.url + paths[probe], timeout=5).status_code == 200, probe
        ready = httpx.get(server.url + paths["readinessProbe"], timeout=5)
        assert ready.status_code == 503
        assert _healthcheck(parse(REPO / "Dockerfile.cpu"), port) == 1


@pytest.mark.slow
def test_loaded_model_passes_every_probe_and_the_healthcheck() -> None:
    with running_server() as server:
        port = int(server.url.rsplit(":", 1)[1])
        for probe, path in _probe_paths().items():
            assert httpx.get(server.url + path, timeout=5).status_code == 200, probe
        assert _healthcheck(parse(REPO / "Dockerfile.cpu"), port) == 0
