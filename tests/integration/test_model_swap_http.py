"""Hot swap on the real server: promote through the admin API while clients keep asking.

Two real versions of SmolLM2 (the shipped Q4_1 and a Q4_0 requantized from it) and a GGUF
that reads as a model but holds no loadable weights are registered; the server starts on v1.
Under load (streamed and plain chat completions, /ready probes) the broken version is refused
with the old model still serving, v2 is promoted with the CLI, then rolled back: not one request
fails, /ready never leaves 200, and /v1/models, /metrics, the logs and the registry name the
version.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.fixtures.tiny_gguf import write_gguf
from tests.integration.load import LoadGenerator
from tests.integration.server_proc import MODEL, ROOT, running_server

pytestmark = pytest.mark.slow


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _requantize(source: Path, target: Path) -> Path:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
    params.allow_requantize = True
    status = llama_cpp.llama_model_quantize(
        str(source).encode(), str(target).encode(), ctypes.byref(params)
    )
    assert status == 0 and target.is_file()
    return target


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("swap")
    v2 = _requantize(MODEL, folder / "smollm2-q4_0.gguf")
    # Readable metadata (it registers as a model) but not a loadable llama: one tensor of 4x4.
    broken = write_gguf(folder / "broken.gguf", fill=0.5)
    path = folder / "registry.json"
    for model in (MODEL, v2, broken):
        result = _cli("models", "register", str(model), "--registry", str(path))
        assert result.returncode == 0, result.stderr
    assert _cli("models", "promote", "1", "--registry", str(path)).returncode == 0
    return path


def test_swaps_under_load_drop_no_request(registry: Path) -> None:
    env = {"GGSERVE_REGISTRY_PATH": str(registry), "GGSERVE_ADMIN_KEY_IDS": "test"}
    with running_server(env=env) as server:
        models = httpx.get(server.url + "/v1/models", headers=server.headers).json()["data"]
        assert models[0]["version"] == "v1"
        admin = {"--registry": str(registry), "--url": server.url, "--api-key": server.api_key}
        admin_args = [x for kv in admin.items() for x in kv]
        with LoadGenerator(server.url, server.headers, clients=4) as load:
            load.wait_for(8)
            broken = httpx.post(
                server.url + "/admin/models/activate",
                json={"version": 3},
                headers=server.headers,
                timeout=300,
            )
            load.wait_for(4)
            promoted = _cli("models", "promote", "2", *admin_args)
            load.wait_for(8)
            during = dict(load.report.models_seen)
        report = load.report

        assert broken.status_code == 400, broken.text
        assert broken.json()["error"]["code"] == "load_failed"
        assert (
            "v3 did not load, the current model keeps serving" in broken.json()["error"]["message"]
        )
        assert promoted.returncode == 0, promoted.stderr
        assert "now serves v2 (smollm2-q4_0)" in promoted.stdout
        assert report.failures == [], report.failures[:5]
        assert report.ready_not_200 == 0
        assert report.total_ok >= 20
        assert during.get("SmolLM2-135M-Instruct.Q4_1", 0) > 0 and during.get("smollm2-q4_0", 0) > 0

        models = httpx.get(server.url + "/v1/models", headers=server.headers).json()["data"]
        assert (models[0]["id"], models[0]["version"]) == ("smollm2-q4_0", "v2")
        metrics = httpx.get(server.url + "/metrics").text
        assert 'ggserve_model_info{model="smollm2-q4_0",version="v2"} 1.0' in metrics
        assert 'ggserve_model_activations_total{result="load_failed"} 1.0' in metrics

        rolled = _cli("models", "rollback", *admin_args)
        assert rolled.returncode == 0, rolled.stderr
        assert httpx.get(server.url + "/ready").json()["model_version"] == "v1"
        log = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]

    events = [
        (r["event"], r["model_version"])
        for r in log
        if r.get("event") in ("model_activated", "model_retired")
    ]
    # v1 is freed once its last request ends, which may be logged just before the activation
    assert sorted(events[:2]) == [("model_activated", "v2"), ("model_retired", "v1")]
    assert sorted(events[2:]) == [("model_activated", "v1"), ("model_retired", "v2")]
    served_by = {r.get("model_version") for r in log if r.get("path") == "/v1/chat/completions"}
    assert {"v1", "v2"} <= served_by
    state = json.loads(registry.read_text())
    assert state["active"] == 1
    assert [(h["action"], h["version"], h["by"]) for h in state["history"]][-2:] == [
        ("promote", 2, "test"),
        ("rollback", 1, "test"),
    ]
