"""``ggserve drift report``: reference vs current from JSONL files, as a table and a picture."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import typer
from rich import box
from rich.console import Console
from rich.table import Table

from server.drift.config import DriftConfig
from server.drift.observation import Observation
from server.drift.records import RecordError, read_records
from server.drift.report import DriftReport
from server.drift.windows import WindowSample, evaluate
from server.rag.errors import RagError
from server.settings import Settings

if TYPE_CHECKING:
    from server.rag.embedder import Embedder

app = typer.Typer(help="Drift: does recent traffic still look like the reference?")
console = Console(stderr=True)
out = Console()

# Both windows are read into memory and the MMD kernel is (n+m)²: keep a report interactive.
MAX_ROWS = 5000


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(1)


def _read(path: Path, rows: int, *, last: bool) -> list[Observation]:
    if not path.is_file():
        raise _fail(f"{path} is not a file")
    try:
        records = read_records(path)
    except RecordError as exc:
        raise _fail(str(exc)) from exc
    return records[-rows:] if last else records[:rows]


def _embed(embedder: Embedder, obs: list[Observation]) -> np.ndarray:
    return embedder.embed([o.query for o in obs])


@app.command("report")
def report(
    reference: Path = typer.Option(
        ..., "--reference", "-r", help="JSONL of reference questions or interactions."
    ),
    current: Path = typer.Option(
        ..., "--current", "-c", help="JSONL of recent questions or interactions."
    ),
    embedder_path: Path | None = typer.Option(
        None, "--embedder", help="sentence-transformers folder (default: GGSERVE_EMBEDDER_PATH)."
    ),
    no_embeddings: bool = typer.Option(
        False, "--no-embeddings", help="Skip the query-embedding test (no embedder needed)."
    ),
    rows: int = typer.Option(
        1000,
        min=2,
        max=MAX_ROWS,
        help="Rows per window: the first of --reference, the last of --current.",
    ),
    min_samples: int = typer.Option(200, min=2, help="Samples each window needs for a verdict."),
    permutations: int = typer.Option(500, min=1, max=100_000, help="MMD permutations."),
    alpha: float = typer.Option(0.05, help="Family-wise false-alarm rate across signals."),
    png: Path | None = typer.Option(None, "--png", help="Write the distributions as a PNG."),
    html_path: Path | None = typer.Option(None, "--html", help="Write a self-contained HTML page."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON, not a table."),
) -> None:
    """Compare two windows signal by signal; exit 0 either way, the verdict is in the output."""
    try:
        config = DriftConfig(
            reference_size=rows,
            window_size=rows,
            min_samples=min_samples,
            permutations=permutations,
            alpha=alpha,
        )
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    ref_obs = _read(reference, rows, last=False)
    cur_obs = _read(current, rows, last=True)
    ref = WindowSample(ref_obs)
    cur = WindowSample(cur_obs)
    if not no_embeddings:
        from server.rag.embedder import Embedder

        path = embedder_path or Settings().embedder_path
        try:
            with console.status(f"embedding {len(ref_obs) + len(cur_obs)} questions with {path} …"):
                model = Embedder(path)
                ref = WindowSample(ref_obs, _embed(model, ref_obs))
                cur = WindowSample(cur_obs, _embed(model, cur_obs))
        except RagError as exc:
            raise _fail(f"{exc} (or pass --no-embeddings)") from exc
    result = evaluate(ref, cur, config, reference_source=str(reference))
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        _print_table(result)
    if png or html_path:
        from cli import drift_plots

        try:
            image = drift_plots.render_png(result, ref, cur)
        except RuntimeError as exc:
            raise _fail(str(exc)) from exc
        if png:
            drift_plots.write(png, image)
            console.print(f"wrote {png}")
        if html_path:
            drift_plots.write(html_path, drift_plots.render_html(result, image))
            console.print(f"wrote {html_path}")


def _print_table(result: DriftReport) -> None:
    table = Table(
        title="drift: reference vs current", box=box.SIMPLE, pad_edge=False, collapse_padding=True
    )
    table.add_column("signal", no_wrap=True)
    for column in ("n", "ref", "cur", "stat", "p", "PSI", ""):
        table.add_column(column, no_wrap=True)
    for s in result.signals:
        verdict = {True: "[red]DRIFT[/red]", False: "[green]ok[/green]", None: "–"}[s.drifted]
        table.add_row(
            s.name,
            f"{s.reference_n}/{s.current_n}",
            _fmt(s.reference_value),
            _fmt(s.current_value),
            _fmt(s.statistic),
            _fmt_p(s.p_value),
            _fmt(s.psi),
            verdict,
        )
    out.print(table)
    for s in result.signals:
        if s.note is not None:
            out.print(f"{s.name}: no verdict, {s.note}")
    overall = {True: "[red]drift[/red]", False: "[green]no drift[/green]", None: "no verdict"}
    out.print(
        f"overall: {overall[result.drifted]}  (alpha {result.alpha}, per-signal p < "
        f"{_fmt(result.p_threshold)}; stat: MMD², KS D or rate difference; "
        f"{result.elapsed_s:.2f} s)"
    )


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def _fmt_p(value: float | None) -> str:
    if value is None:
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"
