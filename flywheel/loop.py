"""The loop as one command: export → train → convert → gate → register, planned then run.

What it ships is ``ship``: an ``adapter`` (the default: the LoRA exported alone as a GGUF LoRA,
gated as base + adapter, registered as an adapter version over the base; an improvement in
minutes, served per request beside the base with no second copy of the weights) or a
``merged`` model (the LoRA merged into the base and re-quantized: a full version that
replaces the served model).

:func:`plan_loop` turns a base model, a feedback database and the gate's suites into a
:class:`Plan`: the recipe chosen from the base's shape (``flywheel/recipe.py``) and one
:class:`Step` per stage of ``flywheel/stages.py``, each naming what it reads, what it writes
and the ``ggserve`` command it runs. ``ggserve flywheel run --dry-run`` prints that plan;
:func:`run_plan` runs the same commands in order and stops at the first that fails, with a
message saying which stage and why. The plan is the single source: what is printed is what
runs.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from artifacts.names import DATASET_EVAL, DATASET_TRAIN, TRAINING_RECORD
from flywheel.recipe import Recipe, read_shape, recipe_for
from flywheel.stages import STAGES, Stage

_STAGE = {stage.name: stage for stage in STAGES}
SHIPS = ("adapter", "merged")


class LoopError(Exception):
    """The loop cannot be planned or a stage failed; the message says which and what to do."""


@dataclass(frozen=True)
class LoopOptions:
    """What a run needs; everything else comes from the recipe."""

    base: Path  # the GGUF (or HF folder) the adapter is trained on and the gate compares with
    db: Path  # the feedback database: accepted corrections and curated 👍 answers
    registry: Path
    work: Path  # a new or empty folder for the run's artifacts
    name: str  # the candidate's name (models/NAME, the registry's display name)
    suites: tuple[Path, ...] = ()  # gate suites besides the export's held-out split
    seed: int = 0
    ship: str = "adapter"  # "adapter" (a GGUF LoRA over the base) or "merged" (a full model)
    rollout_url: str | None = None  # a running server: the adapter then challenges on it
    rollout_share: float = 0.5


@dataclass(frozen=True)
class Step:
    """One command of the plan, tied to the stage it performs."""

    stage: Stage
    purpose: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    argv: tuple[str, ...]  # after ``ggserve``
    optional_suite: Path | None = None  # the gate's held-out split: dropped when not exported

    @property
    def command(self) -> str:
        return "ggserve " + shlex.join(self.argv)

    def resolved(self) -> tuple[str, ...]:
        """The argv as it runs: the held-out suite only when the export wrote rows to it."""
        if self.optional_suite is None or _rows(self.optional_suite) > 0:
            return self.argv
        argv = list(self.argv)
        at = argv.index(str(self.optional_suite))
        del argv[at - 1 : at + 1]  # "--suite PATH"
        return tuple(argv)


@dataclass(frozen=True)
class Plan:
    """The recipe and the steps, in order; ``candidate`` and ``report`` are what the gate
    judges and writes (``candidate`` is the GGUF LoRA when the loop ships an adapter)."""

    recipe: Recipe
    steps: tuple[Step, ...]
    data: Path
    candidate: Path
    report: Path
    ship: str = "adapter"

    def render(self) -> str:
        """The plan as ``--dry-run`` prints it."""
        lines = [f"recipe: {self.recipe.why}"]
        for number, step in enumerate(self.steps, start=1):
            lines += [
                f"{number}. {step.stage.name}: {step.purpose}",
                f"   reads:  {'; '.join(step.reads)}",
                f"   writes: {'; '.join(step.writes)}",
                f"   run:    {step.command}",
            ]
        return "\n".join(lines)


def plan_loop(options: LoopOptions) -> Plan:
    """The plan for ``options``; LoopError (or RecipeError) when an input is missing or
    unusable, before anything runs."""
    if not options.db.is_file():
        raise LoopError(
            f"no feedback database at {options.db}: serve with GGSERVE_FEEDBACK_DB set and "
            "GGSERVE_CAPTURE=full, collect 👎 with corrections, then accept them "
            "('ggserve feedback label ID --accept')"
        )
    missing = [str(s) for s in options.suites if not s.is_file()]
    if missing:
        raise LoopError(f"gate suite not found: {', '.join(missing)}")
    if options.work.exists() and (not options.work.is_dir() or any(options.work.iterdir())):
        raise LoopError(f"{options.work} is not empty: give --work a new or empty folder")
    if not options.name or "/" in options.name or options.name.startswith("."):
        raise LoopError(f"--name {options.name!r} must be a plain file name")
    if options.ship not in SHIPS:
        raise LoopError(f"--ship {options.ship!r}: choose {' or '.join(SHIPS)}")
    if options.rollout_url is not None and options.ship != "adapter":
        raise LoopError("--rollout-url needs --ship adapter: a rollout's challenger is an adapter")
    if not 0 < options.rollout_share < 1:
        raise LoopError(f"--rollout-share {options.rollout_share}: give one between 0 and 1")
    recipe = recipe_for(read_shape(options.base), seed=options.seed)
    work, base, db = options.work, str(options.base), str(options.db)
    data, replay, adapter = work / "data", work / "replay", work / "adapter"
    out = work / "models" / options.name
    report = work / "eval-report.json"
    held_out = data / DATASET_EVAL
    fraction = f"{recipe.eval_fraction:g}"
    suites = [arg for suite in options.suites for arg in ("--suite", str(suite))]
    if options.ship == "adapter":
        candidate = out / f"{options.name}-lora-{recipe.adapter_outtype}.gguf"
        ship = _adapter_steps(options, recipe, adapter, candidate, report, held_out, suites)
    else:
        candidate = out / f"{options.name}-{recipe.quant}.gguf"
        ship = _merged_steps(options, recipe, adapter, candidate, report, held_out, suites)
    steps = (
        Step(
            _STAGE["export"],
            "the accepted corrections as SFT rows (a share held out for the gate)",
            (db,),
            (f"{data}/{DATASET_TRAIN}", str(held_out)),
            (
                "feedback",
                "export",
                "--format",
                "sft",
                "--out",
                str(data),
                "--db",
                db,
                "--eval-fraction",
                fraction,
            ),
        ),
        Step(
            _STAGE["export"],
            "the same split plus curated 👍 answers: the replay training holds to the base",
            (db,),
            (f"{replay}/{DATASET_TRAIN}",),
            (
                "feedback",
                "export",
                "--format",
                "sft",
                "--out",
                str(replay),
                "--db",
                db,
                "--eval-fraction",
                fraction,
                "--include-positive",
            ),
        ),
        Step(
            _STAGE["train"],
            "a LoRA on the corrections, anchored to the base along the replay",
            (base, f"{data}/{DATASET_TRAIN}", f"{replay}/{DATASET_TRAIN}"),
            (f"{adapter}/{TRAINING_RECORD}",),
            (
                "train-lora",
                "--base",
                base,
                "--data",
                str(data),
                "--replay",
                str(replay),
                "--out",
                str(adapter),
                *recipe.train_args(),
            ),
        ),
        *ship,
        *_rollout_steps(options, candidate),
    )
    return Plan(recipe, steps, data, candidate, report, options.ship)


def _rollout_steps(options: LoopOptions, candidate: Path) -> tuple[Step, ...]:
    """With a server to roll out on: load the registered adapter there and let live traffic
    decide between it and what serves now."""
    if options.rollout_url is None:
        return ()
    return (
        Step(
            _STAGE["rollout"],
            f"the adapter loaded on {options.rollout_url} as {options.name!r}, challenging what "
            f"serves now on {options.rollout_share:.0%} of the traffic; promoted or rolled back "
            "by live feedback (ggserve rollout status)",
            (str(candidate), str(options.registry)),
            (f"{options.rollout_url}/admin/rollout",),
            (
                "rollout",
                "start",
                options.name,
                "--registered",
                str(candidate),
                "--registry",
                str(options.registry),
                "--share",
                str(options.rollout_share),
                "--url",
                options.rollout_url,
            ),
        ),
    )


def _merged_steps(
    options: LoopOptions,
    recipe: Recipe,
    adapter: Path,
    candidate: Path,
    report: Path,
    held_out: Path,
    suites: list[str],
) -> tuple[Step, ...]:
    """Convert, gate and register a merged, re-quantized model: a full version."""
    base, out = str(options.base), candidate.parent
    return (
        Step(
            _STAGE["convert"],
            f"the adapter merged into the base, written as {recipe.quant}",
            (base, str(adapter)),
            (str(candidate),),
            (
                "convert",
                "--base",
                base,
                "--adapter",
                str(adapter),
                "--out",
                str(out),
                "--quant",
                recipe.quant,
            ),
        ),
        _gate_step(
            options,
            "--candidate",
            "the candidate against the base on the suites (and the held-out rows)",
            candidate,
            report,
            held_out,
            suites,
        ),
        Step(
            _STAGE["register"],
            "the gated candidate as the registry's next version (not yet serving)",
            (str(candidate), str(report)),
            (str(options.registry),),
            (
                "models",
                "register",
                str(candidate),
                "--eval-report",
                str(report),
                "--registry",
                str(options.registry),
            ),
        ),
    )


def _gate_step(
    options: LoopOptions,
    candidate_flag: str,
    purpose: str,
    candidate: Path,
    report: Path,
    held_out: Path,
    suites: list[str],
) -> Step:
    """The gate: ``candidate`` (a model with ``--candidate``, a LoRA over the base with
    ``--candidate-adapter``) against the base, on the suites and the held-out rows."""
    base = str(options.base)
    return Step(
        _STAGE["gate"],
        purpose,
        (str(candidate), base, *(str(s) for s in options.suites), f"{held_out} (if any)"),
        (str(report),),
        (
            "eval",
            candidate_flag,
            str(candidate),
            "--baseline",
            base,
            *suites,
            "--suite",
            str(held_out),
            "--report",
            str(report),
            "--room",
        ),
        optional_suite=held_out,
    )


def _adapter_steps(
    options: LoopOptions,
    recipe: Recipe,
    adapter: Path,
    candidate: Path,
    report: Path,
    held_out: Path,
    suites: list[str],
) -> tuple[Step, ...]:
    """Export the LoRA alone, gate base + LoRA, register it as an adapter over the base."""
    base = str(options.base)
    return (
        Step(
            _STAGE["convert"],
            f"the adapter alone as a GGUF LoRA ({recipe.adapter_outtype}), applied over the "
            "base at run time: no merge, no re-quantization",
            (base, str(adapter)),
            (str(candidate),),
            (
                "convert-adapter",
                "--base",
                base,
                "--adapter",
                str(adapter),
                "--out",
                str(candidate),
                "--outtype",
                recipe.adapter_outtype,
            ),
        ),
        _gate_step(
            options,
            "--candidate-adapter",
            "the base with the adapter applied against the base alone, on the suites (and "
            "the held-out rows)",
            candidate,
            report,
            held_out,
            suites,
        ),
        Step(
            _STAGE["register"],
            "the gated adapter as the registry's next version, over the base (not yet serving)",
            (str(candidate), base, str(adapter), str(report)),
            (str(options.registry),),
            (
                "models",
                "register",
                str(candidate),
                "--base",
                base,
                "--adapter",
                str(adapter),
                "--eval-report",
                str(report),
                "--registry",
                str(options.registry),
            ),
        ),
    )


Runner = Callable[[Sequence[str]], int]  # runs ``ggserve ARGV``, returns its exit code


def run_plan(plan: Plan, runner: Runner, echo: Callable[[str], None] = print) -> None:
    """Run each step in order; LoopError naming the stage at the first failure. The export is
    checked before training: no rows to learn means nothing to run."""
    for number, step in enumerate(plan.steps, start=1):
        argv = step.resolved()
        echo(f"[{number}/{len(plan.steps)}] {step.stage.name}: ggserve {shlex.join(argv)}")
        if step.stage.name == "gate" and "--suite" not in argv:
            raise LoopError(
                "the gate has no suite: the export held no rows out and no --suite was given"
            )
        code = runner(argv)
        if code != 0:
            raise LoopError(_failure(step, code, plan))
        if step.stage.name == "export" and step is plan.steps[0]:
            rows = _rows(plan.data / DATASET_TRAIN)
            if rows == 0:
                raise LoopError(
                    f"the export has no training rows ({plan.data / DATASET_TRAIN}): accept "
                    "corrections with 'ggserve feedback label ID --accept' first"
                )


def _failure(step: Step, code: int, plan: Plan) -> str:
    if step.stage.name == "gate" and code == 1 and plan.report.is_file():
        return (
            f"the gate refused the candidate (see {plan.report}); nothing was registered. "
            "More or clearer corrections, or a larger replay, are the usual fixes."
        )
    return f"stage {step.stage.name} failed (exit {code}): {step.command}"


def _rows(path: Path) -> int:
    """Non-empty JSON lines in ``path`` (0 when it is absent)."""
    if not path.is_file():
        return 0
    count = 0
    for line in path.read_text().splitlines():
        if line.strip():
            json.loads(line)  # a torn file fails here, not three stages later
            count += 1
    return count
