"""``ggserve convert --imatrix/--calibration``: bad values are refused in one line, before work."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    base = tmp_path / "base.gguf"
    base.write_bytes(b"GGUF" + bytes(64))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 16}))
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    return base, adapter


def _convert(inputs: tuple[Path, Path], out: Path, *extra: str) -> tuple[int, str]:
    base, adapter = inputs
    result = runner.invoke(
        app,
        ["convert", "--base", str(base), "--adapter", str(adapter), "--out", str(out), *extra],
    )
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (None, ["--calibration", "{cal}"], "--calibration is only used to compute"),
        (None, ["--imatrix", "{tmp}/none.gguf"], "imatrix file .*none.gguf does not exist"),
        (b"\xc3\x28 invalid utf-8", ["--imatrix", "auto", "--calibration", "{cal}"], "not UTF-8"),
        (b"", ["--imatrix", "auto", "--calibration", "{cal}"], "is empty"),
        (b"text", ["--imatrix", "{cal}"], "cannot read imatrix"),
        (b"text", ["--imatrix", "{cal}", "--calibration", "{cal}"], "exclude each other"),
    ],
)
def test_bad_imatrix_options_are_refused_in_one_line(
    inputs: tuple[Path, Path],
    tmp_path: Path,
    make: bytes | None,
    extra: list[str],
    message: str,
) -> None:
    calibration = tmp_path / "cal.txt"
    if make is not None:
        calibration.write_bytes(make)
    args = [a.format(cal=calibration, tmp=tmp_path) for a in extra]
    code, output = _convert(inputs, tmp_path / "out", *args)
    assert code == 1
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert re.search(message, errors[0]), errors[0]
    assert "Traceback" not in output
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
