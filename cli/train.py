"""``ggserve train-lora``: a thin Typer command over ``flywheel/train``."""

from __future__ import annotations

import os
import time
from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from cli.convert import RichReporter, _fail, console
from convert.errors import ConvertError
from flywheel.train.lora import (  # no torch at import: the CLI stays fast
    Hyperparameters,
    parse_layers,
)

DEFAULTS = Hyperparameters()


def train_lora(
    base: Path = typer.Option(..., help="Base model: a Hugging Face folder or a .gguf file."),
    data: Path = typer.Option(
        ..., help="Dataset: the folder of 'ggserve feedback export --format sft' or a .jsonl."
    ),
    out: Path = typer.Option(
        ..., help="Adapter folder to write (then: ggserve convert --adapter)."
    ),
    replay: Path | None = typer.Option(
        None,
        help="Answers to keep (same format, e.g. an export with --include-positive): the model "
        "is held to the base's own distribution along them (KL), not trained on them as targets.",
    ),
    steps: int = typer.Option(DEFAULTS.steps, help="Optimizer steps."),
    batch_size: int = typer.Option(DEFAULTS.batch_size, help="Conversations learned per step."),
    replay_batch_size: int = typer.Option(
        DEFAULTS.replay_batch_size, help="Replay conversations anchored per step."
    ),
    replay_weight: float = typer.Option(
        DEFAULTS.replay_weight, help="Weight of the replay's KL drift against the loss on the data."
    ),
    stop_loss: float = typer.Option(
        DEFAULTS.stop_loss,
        help="Stop before --steps once a step's loss on the data is at or below this (0: never).",
    ),
    rank: int = typer.Option(DEFAULTS.rank, help="LoRA rank r."),
    alpha: float = typer.Option(DEFAULTS.alpha, help="LoRA alpha (scale = alpha / r)."),
    learning_rate: float = typer.Option(DEFAULTS.learning_rate, help="AdamW learning rate."),
    seed: int = typer.Option(DEFAULTS.seed, help="Seed for the LoRA init and the batch order."),
    target_modules: str = typer.Option(
        ",".join(DEFAULTS.target_modules),
        help="Comma list of the linear modules the LoRA patches.",
    ),
    layers: str = typer.Option(
        "",
        help="Decoder layers the LoRA patches, e.g. 0-9 or 0,2,4 (empty: all). Early layers "
        "learn a fact with the least damage to other answers (docs/flywheel-experiments.md §2).",
    ),
    device: str = typer.Option("auto", help="auto (a CUDA GPU when present), cpu or cuda."),
    force: bool = typer.Option(False, help="Replace OUT if it exists."),
) -> None:
    """Train a LoRA adapter on a chat dataset (peft; CPU for small models, GPU when present)."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    from artifacts.names import LOSS_PLOT
    from flywheel.train.run import TrainOptions
    from flywheel.train.run import train_lora as run_training

    started = time.perf_counter()
    try:
        options = TrainOptions(
            base=base,
            data=data,
            out=out,
            replay=replay,
            device=device,
            force=force,
            hyperparameters=Hyperparameters(
                steps=steps,
                batch_size=batch_size,
                replay_batch_size=replay_batch_size,
                replay_weight=replay_weight,
                stop_loss=stop_loss,
                rank=rank,
                alpha=alpha,
                learning_rate=learning_rate,
                seed=seed,
                target_modules=tuple(m.strip() for m in target_modules.split(",") if m.strip()),
                layers=parse_layers(layers),
            ),
        )
        with _progress_with_loss() as bar:
            task: TaskID | None = None

            def on_step(done: int, total: int, loss: float) -> None:
                nonlocal task
                if task is None:
                    task = bar.add_task("train LoRA", total=total)
                bar.update(task, completed=done, total=total, loss=loss)

            result = run_training(options, RichReporter(bar), on_step)
    except ConvertError as exc:
        raise _fail(exc) from exc
    losses, drift = result.losses, result.record["drift"]
    kept = f", replay KL drift {drift[-1]:.4f}" if drift else ""
    console.print(
        f"[green]done[/green] in {time.perf_counter() - started:.0f} s on {result.record['device']}"
        f": loss {losses[0]:.3f} → {losses[-1]:.3f} over {len(losses)} steps{kept} "
        f"({result.record['data']['rows']} rows, data sha256 "
        f"{result.record['data']['sha256'][:12]}) → {result.folder}\n"
        f"loss curve: {result.folder / LOSS_PLOT}\n"
        f"next: ggserve convert --base {base} --adapter {result.folder} --out models/NAME"
    )


class _LossColumn(ProgressColumn):
    """The latest loss of the training task; blank for the other steps."""

    def render(self, task: Task) -> Text:
        loss = task.fields.get("loss")
        return Text("" if loss is None else f"loss {loss:.4f}")


def _progress_with_loss() -> Progress:
    return Progress(
        SpinnerColumn(),
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        _LossColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
