"""`ggserve flywheel run`: the plan it prints is what it runs, and bad inputs stop it early."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from flywheel.loop import LoopError, LoopOptions, Plan, plan_loop, run_plan
from flywheel.recipe import RecipeError
from flywheel.stages import STAGES


def _gguf(path: Path, arch: str = "llama") -> Path:
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(30)
    writer.add_embedding_length(576)
    writer.add_file_type(3)  # Q4_1, as the SmolLM2 base
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def options(tmp_path: Path) -> LoopOptions:
    (tmp_path / "feedback.db").write_bytes(b"")
    (tmp_path / "facts.jsonl").write_text('{"prompt": "q", "expected": "a"}\n')
    return LoopOptions(
        base=_gguf(tmp_path / "base.gguf"),
        db=tmp_path / "feedback.db",
        registry=tmp_path / "registry.json",
        work=tmp_path / "run",
        name="smollm2-fact",
        suites=(tmp_path / "facts.jsonl",),
    )


class FakeGgserve:
    """Stands in for the stage commands: records each argv, writes what exports would."""

    def __init__(self, train_rows: int = 3, eval_rows: int = 1, fail: str | None = None) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.train_rows, self.eval_rows, self.fail = train_rows, eval_rows, fail

    def __call__(self, argv: Sequence[str]) -> int:
        self.calls.append(tuple(argv))
        if argv[0] == "feedback":
            out = Path(argv[argv.index("--out") + 1])
            out.mkdir(parents=True)
            (out / "train.jsonl").write_text('{"messages": []}\n' * self.train_rows)
            (out / "eval.jsonl").write_text('{"messages": []}\n' * self.eval_rows)
        if argv[0] == self.fail:
            if argv[0] == "eval":  # the gate writes its report, then refuses
                report = Path(argv[argv.index("--report") + 1])
                report.write_text(json.dumps({"passed": False}))
            return 1
        return 0


def test_the_plan_walks_the_stages_in_their_defined_order(options: LoopOptions) -> None:
    plan = plan_loop(options)
    names = [step.stage.name for step in plan.steps]
    assert names == ["export", "export", "train", "convert", "gate", "register"]
    order = [stage.name for stage in STAGES]
    assert [order.index(n) for n in names] == sorted(order.index(n) for n in names)
    assert all(
        step.stage is next(s for s in STAGES if s.name == step.stage.name) for step in plan.steps
    )


def test_each_stage_reads_what_the_one_before_wrote_when_shipping_merged(
    options: LoopOptions,
) -> None:
    export, replay, train, convert, gate, register = plan_loop(
        LoopOptions(**{**options.__dict__, "ship": "merged"})
    ).steps
    assert train.argv[train.argv.index("--data") + 1] == export.argv[export.argv.index("--out") + 1]
    assert (
        train.argv[train.argv.index("--replay") + 1] == replay.argv[replay.argv.index("--out") + 1]
    )
    adapter = train.argv[train.argv.index("--out") + 1]
    assert convert.argv[convert.argv.index("--adapter") + 1] == adapter
    candidate = convert.writes[0]
    assert gate.argv[gate.argv.index("--candidate") + 1] == candidate == register.argv[2]
    report = gate.argv[gate.argv.index("--report") + 1]
    assert register.argv[register.argv.index("--eval-report") + 1] == report
    # The replay is the same split (seed and fraction) plus the curated 👍 answers.
    assert replay.argv[: replay.argv.index("--out")] == export.argv[: export.argv.index("--out")]
    assert replay.argv[-1] == "--include-positive" and "--include-positive" not in export.argv


def test_the_dry_run_prints_every_command_and_runs_none(options: LoopOptions) -> None:
    result = CliRunner().invoke(
        app,
        [
            "flywheel", "run", "--base", str(options.base), "--db", str(options.db),
            "--suite", str(options.suites[0]), "--work", str(options.work),
            "--name", options.name, "--registry", str(options.registry), "--dry-run",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith("recipe: llama, 30 layers, hidden 576")
    for step in plan_loop(options).steps:
        assert f"run:    {step.command}" in out
    assert "--layers 0-14 --target-modules gate_proj,up_proj,down_proj" in out
    assert (
        "ggserve convert-adapter" in out and "--outtype f32" in out
    )  # the default ships an adapter
    assert "--quant" not in out
    assert not options.work.exists() and not options.registry.exists()


def test_an_adapter_ship_gates_base_plus_lora_and_registers_it_over_the_base(
    options: LoopOptions,
) -> None:
    plan = plan_loop(options)
    assert plan.ship == "adapter"
    *_, train, convert, gate, register = plan.steps
    adapter = train.argv[train.argv.index("--out") + 1]
    assert convert.argv[0] == "convert-adapter"
    assert convert.argv[convert.argv.index("--adapter") + 1] == adapter
    lora = convert.argv[convert.argv.index("--out") + 1]
    assert lora == str(plan.candidate) and lora.endswith(".gguf")
    # The gate: the base alone against the base with the LoRA applied at run time.
    assert gate.argv[gate.argv.index("--candidate-adapter") + 1] == lora
    assert gate.argv[gate.argv.index("--baseline") + 1] == str(options.base)
    assert "--candidate" not in gate.argv
    # Registered over the base it was trained on, its lineage read from the adapter folder.
    assert register.argv[2] == lora
    assert register.argv[register.argv.index("--base") + 1] == str(options.base)
    assert register.argv[register.argv.index("--adapter") + 1] == adapter
    report = gate.argv[gate.argv.index("--report") + 1]
    assert register.argv[register.argv.index("--eval-report") + 1] == report


def test_the_dry_run_with_ship_merged_merges_and_quantizes(options: LoopOptions) -> None:
    result = CliRunner().invoke(
        app,
        [
            "flywheel", "run", "--base", str(options.base), "--db", str(options.db),
            "--suite", str(options.suites[0]), "--work", str(options.work),
            "--name", options.name, "--registry", str(options.registry), "--dry-run",
            "--ship", "merged",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "ggserve convert --base" in result.output and "--quant Q8_0" in result.output
    assert "convert-adapter" not in result.output and "--candidate-adapter" not in result.output


def test_an_unknown_ship_is_refused(options: LoopOptions) -> None:
    with pytest.raises(LoopError, match="--ship 'lora': choose adapter or merged"):
        plan_loop(LoopOptions(**{**options.__dict__, "ship": "lora"}))


def test_a_run_executes_the_planned_commands_in_order(options: LoopOptions) -> None:
    plan = plan_loop(options)
    fake = FakeGgserve()
    run_plan(plan, fake, echo=lambda _: None)
    assert fake.calls == [step.argv for step in plan.steps]


def test_without_held_out_rows_the_gate_runs_on_the_given_suites_only(
    options: LoopOptions,
) -> None:
    plan = plan_loop(options)
    fake = FakeGgserve(eval_rows=0)
    run_plan(plan, fake, echo=lambda _: None)
    gate = next(c for c in fake.calls if c[0] == "eval")
    suites = [gate[i + 1] for i, arg in enumerate(gate) if arg == "--suite"]
    assert suites == [str(options.suites[0])]


def test_no_suite_and_no_held_out_rows_stops_before_the_gate(options: LoopOptions) -> None:
    plan = plan_loop(LoopOptions(**{**options.__dict__, "suites": ()}))
    fake = FakeGgserve(eval_rows=0)
    with pytest.raises(LoopError, match="no suite"):
        run_plan(plan, fake, echo=lambda _: None)
    assert [c[0] for c in fake.calls] == [
        "feedback",
        "feedback",
        "train-lora",
        "convert-adapter",
    ]


def test_an_empty_export_stops_before_training(options: LoopOptions) -> None:
    fake = FakeGgserve(train_rows=0)
    with pytest.raises(LoopError, match=r"no training rows.*--accept"):
        run_plan(plan_loop(options), fake, echo=lambda _: None)
    assert len(fake.calls) == 1


def test_a_refused_gate_registers_nothing_and_says_so(options: LoopOptions) -> None:
    plan = plan_loop(options)
    fake = FakeGgserve(fail="eval")
    with pytest.raises(LoopError, match=r"gate refused.*nothing was registered"):
        run_plan(plan, fake, echo=lambda _: None)
    assert fake.calls[-1][0] == "eval"


def test_a_failing_stage_is_named(options: LoopOptions) -> None:
    with pytest.raises(LoopError, match=r"stage train failed \(exit 1\): ggserve train-lora"):
        run_plan(plan_loop(options), FakeGgserve(fail="train-lora"), echo=lambda _: None)


def test_a_missing_database_is_refused_before_anything_runs(options: LoopOptions) -> None:
    with pytest.raises(LoopError, match=r"no feedback database.*GGSERVE_FEEDBACK_DB"):
        plan_loop(LoopOptions(**{**options.__dict__, "db": options.db.with_name("nope.db")}))


def test_an_unknown_base_is_refused(options: LoopOptions, tmp_path: Path) -> None:
    gpt2 = _gguf(tmp_path / "gpt2.gguf", arch="gpt2")
    with pytest.raises(RecipeError, match="no recipe for architecture 'gpt2'"):
        plan_loop(LoopOptions(**{**options.__dict__, "base": gpt2}))
    with pytest.raises(RecipeError, match="does not exist"):
        plan_loop(LoopOptions(**{**options.__dict__, "base": tmp_path / "absent.gguf"}))


def test_a_used_work_folder_and_a_missing_suite_are_refused(options: LoopOptions) -> None:
    options.work.mkdir()
    (options.work / "old").write_text("x")
    with pytest.raises(LoopError, match="not empty"):
        plan_loop(options)
    with pytest.raises(LoopError, match="suite not found"):
        plan_loop(LoopOptions(**{**options.__dict__, "suites": (Path("nope.jsonl"),)}))


@pytest.mark.parametrize("name", ["", "../up", ".hidden", "a/b"])
def test_a_name_that_is_not_a_plain_file_name_is_refused(options: LoopOptions, name: str) -> None:
    with pytest.raises(LoopError, match="plain file name"):
        plan_loop(LoopOptions(**{**options.__dict__, "name": name}))


def test_the_cli_reports_a_missing_database_as_an_error_not_a_traceback(
    options: LoopOptions,
) -> None:
    result = CliRunner().invoke(
        app,
        ["flywheel", "run", "--base", str(options.base), "--db", "/nonexistent/f.db", "--dry-run"],
    )
    assert result.exit_code == 1
    assert "no feedback database" in result.output and "Traceback" not in result.output


def test_the_plan_renders_one_block_per_step(options: LoopOptions) -> None:
    plan: Plan = plan_loop(options)
    lines = plan.render().splitlines()
    assert len(lines) == 1 + 4 * len(plan.steps)
    assert (
        lines[1]
        == "1. export: the accepted corrections as SFT rows (a share held out for the gate)"
    )


def test_with_a_rollout_url_the_registered_adapter_challenges_on_that_server(
    options: LoopOptions,
) -> None:
    plan = plan_loop(
        LoopOptions(**{**options.__dict__, "rollout_url": "http://edge:8000", "rollout_share": 0.2})
    )
    register, rollout = plan.steps[-2:]
    assert (register.stage.name, rollout.stage.name) == ("register", "rollout")
    assert rollout.argv[:3] == ("rollout", "start", options.name)
    assert rollout.argv[rollout.argv.index("--registered") + 1] == register.argv[2]
    assert rollout.argv[rollout.argv.index("--registry") + 1] == str(options.registry)
    assert rollout.argv[-4:] == ("--share", "0.2", "--url", "http://edge:8000")
    assert "rollout start" in plan.render()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rollout_url": "http://edge:8000", "ship": "merged"}, "needs --ship adapter"),
        ({"rollout_url": "http://edge:8000", "rollout_share": 1.0}, "between 0 and 1"),
    ],
)
def test_a_rollout_that_cannot_run_is_refused_when_planned(
    options: LoopOptions, change: dict[str, object], message: str
) -> None:
    with pytest.raises(LoopError, match=message):
        plan_loop(LoopOptions(**{**options.__dict__, **change}))
