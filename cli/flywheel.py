"""``ggserve flywheel``: the loop as one command (a thin Typer layer over ``flywheel/loop.py``)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import typer
from rich.console import Console

from artifacts.names import REGISTRY
from flywheel.loop import LoopError, LoopOptions, plan_loop, run_plan
from flywheel.recipe import RecipeError

app = typer.Typer(
    help="The improvement loop: export → train → adapter GGUF (or merge) → gate → register."
)
console = Console(stderr=True)


@app.command("run")
def run(
    base: Path = typer.Option(
        ..., help="The model serving today (GGUF or HF folder): trained on, gated against."
    ),
    db: Path = typer.Option(
        ..., envvar="GGSERVE_FEEDBACK_DB", help="Feedback database [GGSERVE_FEEDBACK_DB]."
    ),
    suite: list[Path] = typer.Option(
        [], help="Gate suite (JSONL, repeatable), besides the export's held-out rows."
    ),
    name: str | None = typer.Option(
        None, help="Candidate name (models/NAME, registry display name); default: BASE-ft."
    ),
    work: Path | None = typer.Option(
        None, help="New or empty folder for the run's artifacts; default: flywheel-runs/NAME."
    ),
    registry: Path = typer.Option(
        REGISTRY, "--registry", envvar="GGSERVE_REGISTRY_PATH", help="Registry file."
    ),
    seed: int = typer.Option(0, help="Training seed."),
    ship: str = typer.Option(
        "adapter",
        help="adapter: the LoRA as a GGUF LoRA over the base (minutes; served per request "
        "beside it); merged: merged into the base and re-quantized (a full model).",
    ),
    rollout_url: str | None = typer.Option(
        None,
        help="A running server: the registered adapter then challenges what serves there "
        "(ggserve rollout start), promoted or rolled back by live feedback.",
    ),
    rollout_share: float = typer.Option(0.5, help="Share of the traffic for the challenger."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the recipe and each stage's command; run nothing."
    ),
) -> None:
    """Turn the loop once with a recipe chosen from the base's size and architecture; the
    candidate is registered only if the gate passes (promote it with 'ggserve models promote')."""
    chosen = name or base.name.split(".")[0].lower() + "-ft"
    options = LoopOptions(
        base=base,
        db=db,
        registry=registry,
        work=work or Path("flywheel-runs") / chosen,
        name=chosen,
        suites=tuple(suite),
        seed=seed,
        ship=ship,
        rollout_url=rollout_url,
        rollout_share=rollout_share,
    )
    try:
        plan = plan_loop(options)
        if dry_run:
            print(plan.render())
            return
        _echo(plan.render().splitlines()[0])
        run_plan(plan, _ggserve, _echo)
    except (LoopError, RecipeError) as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(1) from exc
    if options.rollout_url is not None:
        how = f"it now challenges on {options.rollout_url}: watch it with 'ggserve rollout status'"
    elif plan.ship == "adapter":
        how = (
            "load it beside the base with 'ggserve adapters load N' (N: its version in "
            "'ggserve models list'); a request picks it by its name"
        )
    else:
        how = "serve it with: ggserve models promote N --url URL"
    console.print(
        f"[green]registered[/green] {plan.candidate} (gate report {plan.report}); {how}",
        soft_wrap=True,
    )


def _echo(line: str) -> None:
    """A plan line as it is: unwrapped (it is a command to copy) and not read as markup."""
    console.print(line, soft_wrap=True, markup=False, highlight=False)


def _ggserve(argv: Sequence[str]) -> int:
    """One stage as its own process: each loads what it needs and gives the memory back."""
    return subprocess.run([sys.executable, "-m", "cli.main", *argv], check=False).returncode
