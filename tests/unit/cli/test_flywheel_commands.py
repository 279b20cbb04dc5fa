"""train-lora, eval and the models registry commands refuse bad input in one line, losing nothing.

None of these load a model: every check runs before the slow part.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.fixtures.tiny_gguf import write_gguf

runner = CliRunner()
GOOD_ROW = {"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A"}]}


def _errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    return write_gguf(tmp_path / "model.gguf")


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
    second = write_gguf(tmp_path / "second.gguf", fill=1.0)
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


def test_a_gguf_lora_registers_as_an_adapter_over_its_registered_base(
    tmp_path: Path, gguf: Path
) -> None:
    reg = ["--registry", str(tmp_path / "registry.json")]
    lora = write_gguf(tmp_path / "fact-lora.gguf", adapter=True, fill=2.0)
    assert (
        runner.invoke(app, ["models", "register", str(gguf), "--name", "base", *reg]).exit_code == 0
    )
    added = runner.invoke(
        app, ["models", "register", str(lora), "--base", str(gguf), "--scale", "0.8", *reg]
    )
    assert added.exit_code == 0, added.output
    assert "adapter over base" in added.output
    entry = json.loads((tmp_path / "registry.json").read_text())["versions"][1]
    assert (entry["kind"], entry["scale"]) == ("adapter", 0.8)
    assert entry["base_sha256"] == entry["lineage"]["base"]["sha256"]
    assert (
        entry["base_sha256"]
        == json.loads((tmp_path / "registry.json").read_text())["versions"][0]["sha256"]
    )
    listed = runner.invoke(app, ["models", "list", *reg], env={"COLUMNS": "220"})
    row = next(line for line in listed.output.splitlines() if "fact-lora" in line)
    assert "adapter" in row and "v1" in row.split("adapter", 1)[1]  # its base, by label


def test_an_unregistered_base_is_listed_by_its_sha_prefix(tmp_path: Path, gguf: Path) -> None:
    reg = ["--registry", str(tmp_path / "registry.json")]
    lora = write_gguf(tmp_path / "fact-lora.gguf", adapter=True, fill=2.0)
    assert (
        runner.invoke(app, ["models", "register", str(lora), "--base", str(gguf), *reg]).exit_code
        == 0
    )
    sha = json.loads((tmp_path / "registry.json").read_text())["versions"][0]["base_sha256"]
    listed = runner.invoke(app, ["models", "list", *reg], env={"COLUMNS": "220"})
    assert sha[:12] in listed.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["LORA"], "is a LoRA adapter: name the GGUF it applies over with --base"),
        (
            ["MODEL", "--base", "MODEL2"],
            "is a full model, not a LoRA adapter: register it without --base",
        ),
        (["LORA", "--base", "LORA2"], "is itself a LoRA adapter"),
        (
            ["LORA", "--base", "/nonexistent/base.gguf"],
            "--base /nonexistent/base.gguf is not a file",
        ),
        (["LORA", "--base", "NOTGGUF"], "is not a GGUF file"),
        (["TORN"], "unreadable GGUF metadata"),
        (["LORA", "--base", "MODEL", "--scale", "0"], "scale"),
    ],
)
def test_register_refuses_a_wrong_base_or_a_gguf_that_is_neither(
    tmp_path: Path, gguf: Path, args: list[str], message: str
) -> None:
    files = {
        "MODEL": gguf,
        "MODEL2": write_gguf(tmp_path / "other.gguf", fill=3.0),
        "LORA": write_gguf(tmp_path / "lora.gguf", adapter=True, fill=1.0),
        "LORA2": write_gguf(tmp_path / "lora2.gguf", adapter=True, fill=2.0),
        "NOTGGUF": tmp_path / "x.gguf",
        "TORN": tmp_path / "torn.gguf",
    }
    files["NOTGGUF"].write_text("hello")
    files["TORN"].write_bytes(gguf.read_bytes()[:40])  # the magic, then a cut header
    argv = [str(files[a]) if a in files else a for a in args]
    registry = tmp_path / "registry.json"
    result = runner.invoke(app, ["models", "register", *argv, "--registry", str(registry)])
    assert result.exit_code == 1, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output
    assert not registry.exists()


def test_promote_refuses_an_adapter_version_and_says_how_to_serve_it(
    tmp_path: Path, gguf: Path
) -> None:
    registry = tmp_path / "registry.json"
    reg = ["--registry", str(registry)]
    lora = write_gguf(tmp_path / "lora.gguf", adapter=True, fill=1.0)
    assert runner.invoke(app, ["models", "register", str(gguf), *reg]).exit_code == 0
    assert (
        runner.invoke(app, ["models", "register", str(lora), "--base", str(gguf), *reg]).exit_code
        == 0
    )
    assert runner.invoke(app, ["models", "promote", "1", *reg]).exit_code == 0
    before = registry.read_text()
    for extra in ([], ["--url", "http://127.0.0.1:9"]):
        result = runner.invoke(app, ["models", "promote", "2", *reg, *extra])
        assert result.exit_code == 1, result.output
        flat = " ".join(result.output.split())
        assert "is a LoRA adapter" in flat and "GGSERVE_LORA_ADAPTERS=lora=" in flat
        assert "cannot reach" not in flat  # refused before any server is asked
    assert registry.read_text() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--candidate-adapter", "MODEL"], "is a full model, not a GGUF LoRA"),
        (["--candidate-adapter", "LORA", "--candidate", "LORA"], "--candidate"),
        (["--candidate-adapter", "/nonexistent/l.gguf"], "is not a file"),
        (["--candidate-adapter", "LORA", "--adapter-scale", "0"], "--adapter-scale is 0.0"),
        ([], "give --candidate GGUF, or --candidate-adapter"),
    ],
)
def test_eval_refuses_a_bad_candidate_adapter_with_exit_2(
    tmp_path: Path, gguf: Path, args: list[str], message: str
) -> None:
    suite = tmp_path / "suite.jsonl"
    suite.write_text(json.dumps({"question": "Q?", "expected": "A"}) + "\n")
    files = {"MODEL": gguf, "LORA": write_gguf(tmp_path / "lora.gguf", adapter=True)}
    argv = [str(files[a]) if a in files else a for a in args]
    result = runner.invoke(app, ["eval", "--baseline", str(gguf), "--suite", str(suite), *argv])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output
