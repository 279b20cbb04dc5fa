"""train-lora, eval and the models registry commands refuse bad input in one line, losing nothing.

None of these load a model: every check runs before the slow part.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()
GOOD_ROW = {"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A"}]}


def _errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF" + b"\0" * 64)
    return path


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "sft"
    folder.mkdir()
    (folder / "train.jsonl").write_text(json.dumps(GOOD_ROW) + "\n")
    return folder


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--steps": "0"}, "steps is 0"),
        ({"--learning-rate": "nan"}, "learning_rate is nan"),
        ({"--rank": "100000"}, "rank is 100000"),
        ({"--replay-batch-size": "0"}, "replay_batch_size is 0"),
        ({"--replay-weight": "-1"}, "replay_weight is -1"),
        ({"--stop-loss": "-1"}, "stop_loss is -1"),
        ({"--layers": "3-x"}, "'3-x' is not a layer number or range"),
        ({"--layers": "9-2"}, "'9-2' is not a valid range"),
        ({"--base": "/nonexistent/base.gguf"}, "does not exist"),
        ({"--data": "/nonexistent/sft"}, "does not exist"),
        ({"--device": "tpu"}, "unknown device"),
        ({"--target-modules": " , "}, "no target modules"),
    ],
)
def test_train_lora_refuses_bad_options_before_loading_anything(
    tmp_path: Path, gguf: Path, data: Path, change: dict[str, str], message: str
) -> None:
    options = {"--base": str(gguf), "--data": str(data), "--out": str(tmp_path / "adapter")}
    options.update(change)
    result = runner.invoke(app, ["train-lora", *[x for kv in options.items() for x in kv]])
    assert result.exit_code == 1, result.output
    assert len(_errors(result.output)) == 1 and message in _errors(result.output)[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "adapter").exists()


def test_layers_option_reads_ranges_and_lists() -> None:
    from flywheel.train.lora import parse_layers

    assert parse_layers("0-2, 5") == (0, 1, 2, 5)
    assert parse_layers("") == ()


def test_train_lora_refuses_a_dataset_row_with_invalid_utf8(
    tmp_path: Path, gguf: Path, data: Path
) -> None:
    (data / "train.jsonl").write_bytes(json.dumps(GOOD_ROW).encode() + b"\n\xc3\x28\n")
    result = runner.invoke(
        app, ["train-lora", "--base", str(gguf), "--data", str(data), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 1 and "not UTF-8" in result.output


def test_train_lora_will_not_overwrite_an_adapter(tmp_path: Path, gguf: Path, data: Path) -> None:
    existing = tmp_path / "adapter"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    result = runner.invoke(
        app, ["train-lora", "--base", str(gguf), "--data", str(data), "--out", str(existing)]
    )
    assert result.exit_code == 1 and "already exists" in result.output
    assert (existing / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-drop", "2"], "--max-drop is 2.0"),
        (["--max-tokens", "0"], "--max-tokens is 0"),
        (["--candidate", "SUITE"], "is not a GGUF file"),
        (["--baseline", "/nonexistent.gguf"], "is not a file"),
        (["--suite", "BADSUITE"], "line 1: not JSON"),
        (["--index", "/nonexistent/index"], "is not a folder"),
    ],
)
def test_eval_refuses_bad_input_with_exit_2(
    tmp_path: Path, gguf: Path, args: list[str], message: str
) -> None:
    suite = tmp_path / "suite.jsonl"
    suite.write_text(json.dumps({"question": "Q?", "expected": "A"}) + "\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n")
    options = {"--candidate": str(gguf), "--baseline": str(gguf), "--suite": str(suite)}
    for key, value in zip(args[::2], args[1::2], strict=True):
        options[key] = {"SUITE": str(suite), "BADSUITE": str(bad)}.get(value, value)
    result = runner.invoke(app, ["eval", *[x for kv in options.items() for x in kv]])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_models_register_list_promote_rollback(tmp_path: Path, gguf: Path) -> None:
    registry = tmp_path / "registry.json"
    second = tmp_path / "second.gguf"
    second.write_bytes(b"GGUF" + b"\1" * 64)
    reg = ["--registry", str(registry)]
    assert (
        runner.invoke(app, ["models", "register", str(gguf), "--name", "base", *reg]).exit_code == 0
    )
    assert runner.invoke(app, ["models", "register", str(second), *reg]).exit_code == 0
    assert runner.invoke(app, ["models", "promote", "1", "--by", "ann", *reg]).exit_code == 0
    assert runner.invoke(app, ["models", "promote", "2", "--by", "bob", *reg]).exit_code == 0
    listed = runner.invoke(app, ["models", "list", *reg], env={"COLUMNS": "200"})
    assert "v2" in listed.output and "second" in listed.output and "by bob" in listed.output
    back = runner.invoke(app, ["models", "rollback", "--by", "cy", *reg])
    assert back.exit_code == 0 and "v1 is now active" in back.output
    state = json.loads(registry.read_text())
    assert state["active"] == 1 and state["history"][-1]["action"] == "rollback"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["register", "/nonexistent.gguf"], "is not a file"),
        (["register", "NOTGGUF"], "is not a GGUF file"),
        (["promote", "9"], "no version 9"),
        (["rollback"], "nothing to roll back"),
        (["promote", "1", "--url", "http://127.0.0.1:9"], "cannot reach"),
    ],
)
def test_models_commands_refuse_bad_input(
    tmp_path: Path, gguf: Path, args: list[str], message: str
) -> None:
    registry = tmp_path / "registry.json"
    runner.invoke(app, ["models", "register", str(gguf), "--registry", str(registry)])
    before = registry.read_text()
    not_gguf = tmp_path / "x.gguf"
    not_gguf.write_text("hello")
    args = [str(not_gguf) if a == "NOTGGUF" else a for a in args]
    result = runner.invoke(app, ["models", *args, "--registry", str(registry)])
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output
    assert registry.read_text() == before


def test_register_refuses_a_candidate_whose_eval_gate_failed(tmp_path: Path, gguf: Path) -> None:
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"passed": False, "suite": "facts"}))
    result = runner.invoke(
        app,
        [
            "models",
            "register",
            str(gguf),
            "--eval-report",
            str(report),
            "--registry",
            str(tmp_path / "r.json"),
        ],
    )
    assert result.exit_code == 1 and "eval gate failed" in result.output
    assert not (tmp_path / "r.json").exists()


def test_a_corrupt_registry_is_reported_not_overwritten(tmp_path: Path, gguf: Path) -> None:
    registry = tmp_path / "registry.json"
    registry.write_bytes(b'{"versions": [\xff')
    for args in (["list"], ["register", str(gguf)], ["promote", "1"], ["rollback"]):
        result = runner.invoke(app, ["models", *args, "--registry", str(registry)])
        assert result.exit_code == 1 and "corrupt" in result.output, (args, result.output)
    assert registry.read_bytes() == b'{"versions": [\xff'
