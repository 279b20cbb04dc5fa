"""``ggserve eval``: a thin command over ``flywheel/gate`` (candidate GGUF vs the baseline it
replaces)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from artifacts.gguf import gguf_problem

if TYPE_CHECKING:
    from flywheel.gate.report import GateReport
    from flywheel.gate.runner import ModelResult
    from flywheel.gate.suite import EvalItem
    from server.agents.types import Searcher
    from server.settings import Settings

console = Console(stderr=True)
out = Console()

EXIT_PASSED, EXIT_REGRESSED, EXIT_ERROR = 0, 1, 2


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}", soft_wrap=True)
    return typer.Exit(EXIT_ERROR)


def evaluate(
    candidate: Path | None = typer.Option(
        None,
        help="The new GGUF (e.g. models/NAME/NAME-Q4_K_M.gguf); with --candidate-adapter, the "
        "model it applies over (default: --baseline).",
    ),
    baseline: Path = typer.Option(..., help="The GGUF in service today."),
    candidate_adapter: Path | None = typer.Option(
        None,
        help="Gate a GGUF LoRA: the candidate is --candidate (default --baseline) with this "
        "adapter applied at run time, as the server applies it per request.",
    ),
    adapter_scale: float = typer.Option(1.0, help="Strength of --candidate-adapter."),
    suite: list[Path] = typer.Option(
        ...,
        help="JSONL suite: the export's eval split or {question, expected} rows; repeat the "
        "option for several suites (e.g. the new facts and a control set).",
    ),
    index: Path | None = typer.Option(
        None, help="Also ask every question through the RAG agent over this index."
    ),
    embedder: Path | None = typer.Option(
        None, help="sentence-transformers folder for --index (default: GGSERVE_EMBEDDER_PATH)."
    ),
    max_drop: float = typer.Option(
        0.0, help="Largest allowed fall of a suite's pass rate (0.05 = 5 points)."
    ),
    max_tokens: int = typer.Option(64, help="Tokens generated per answer (greedy)."),
    room: bool = typer.Option(
        False,
        help="Also measure how close each passing answer came to failing: the smallest "
        "log-prob lead over a runner-up token that would fail it (a few more answers per item).",
    ),
    report: Path | None = typer.Option(
        None, help="Write the full report (every answer) as JSON here; 'models register' reads it."
    ),
) -> None:
    """Answer the suites with both models; exit 1 when the candidate regressed beyond the margin."""
    from flywheel.gate.report import compare
    from flywheel.gate.suite import SuiteError, load_suite
    from server.settings import Settings

    if not 0.0 <= max_drop <= 1.0:
        raise _fail(f"--max-drop is {max_drop}; give a share between 0 and 1")
    if not 1 <= max_tokens <= 1024:
        raise _fail(f"--max-tokens is {max_tokens}; give 1 to 1024")
    if candidate is None:
        if candidate_adapter is None:
            raise _fail("give --candidate GGUF, or --candidate-adapter LORA.gguf over --baseline")
        candidate = baseline
    checks = [(candidate, "--candidate"), (baseline, "--baseline")]
    if candidate_adapter is not None:
        checks.append((candidate_adapter, "--candidate-adapter"))
    for path, what in checks:
        problem = gguf_problem(path)
        if problem is not None:
            raise _fail(f"{what} {path} {problem}")
    if candidate_adapter is not None:
        _check_adapter(candidate_adapter, candidate, adapter_scale)
    try:
        items = [item for path in suite for item in load_suite(path)]
    except SuiteError as exc:
        raise _fail(str(exc)) from exc
    suites = list(dict.fromkeys(item.suite for item in items))
    try:
        settings = Settings()  # GGSERVE_* as the server reads them: gated as it will serve
    except ValidationError as exc:
        raise _fail(f"the GGSERVE_* settings are invalid: {exc}") from exc
    retriever = _retriever(index, embedder or settings.embedder_path) if index is not None else None

    lora = None if candidate_adapter is None else (candidate_adapter, adapter_scale)
    results = [
        _run(candidate, items, settings, retriever, max_tokens, room, lora),
        _run(baseline, items, settings, retriever, max_tokens, room, None),
    ]
    gate = compare(
        results[0],
        results[1],
        candidate_path=candidate_adapter or candidate,
        baseline_path=baseline,
        suites=suites,
        max_drop=max_drop,
    )
    _show(gate)
    if room:
        _show_room(results[0], results[1], suites)
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(gate.to_dict(), indent=2) + "\n", encoding="utf-8")
        console.print(f"report: {report}")
    if not gate.passed:
        console.print("[red]REGRESSED:[/red] " + "; ".join(gate.regressions), soft_wrap=True)
        raise typer.Exit(EXIT_REGRESSED)
    console.print("[green]passed[/green]: no measure fell by more than the margin")


def _check_adapter(adapter: Path, model: Path, scale: float) -> None:
    """A GGUF LoRA over a model, at a sane strength; exit 2 naming the flag otherwise."""
    from artifacts.gguf import is_lora_adapter

    if not 0.0 < scale <= 4.0:
        raise _fail(f"--adapter-scale is {scale}; give one in (0, 4]")
    try:
        if not is_lora_adapter(adapter):
            raise _fail(f"--candidate-adapter {adapter} is a full model, not a GGUF LoRA")
        if is_lora_adapter(model):
            raise _fail(f"--candidate {model} is a LoRA adapter; give the model it applies over")
    except ValueError as exc:
        raise _fail(str(exc)) from exc


def _retriever(index: Path, embedder: Path) -> Searcher:
    from server.rag.embedder import Embedder
    from server.rag.errors import RagError
    from server.rag.retriever import Retriever

    if not index.is_dir():
        raise _fail(f"--index {index} is not a folder (build one with 'ggserve index build')")
    try:
        with console.status("loading the index …"):
            return Retriever.load(index, Embedder(embedder, threads=1))  # the cores decode
    except (RagError, OSError, ValueError) as exc:
        raise _fail(f"cannot load index {index}: {exc}") from exc


def _run(
    model: Path,
    items: list[EvalItem],
    settings: Settings,
    retriever: Searcher | None,
    max_tokens: int,
    room: bool,
    lora: tuple[Path, float] | None,
) -> ModelResult:
    from flywheel.gate.runner import load_engine, run_model
    from server.engine.types import ModelLoadError

    name = model.name if lora is None else f"{model.name} + {lora[0].name}"
    try:
        engine = load_engine(model, settings, adapter=lora)
    except (ModelLoadError, ValueError) as exc:
        raise _fail(f"cannot load {name}: {exc}") from exc
    total = len(items) * (2 if retriever is not None else 1)
    try:
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task(f"answering with {name}", total=total)
            return asyncio.run(
                run_model(
                    engine,
                    name,
                    items,
                    retriever=retriever,
                    settings=settings,
                    max_tokens=max_tokens,
                    room=room,
                    on_item=lambda: bar.advance(task),
                )
            )
    finally:
        engine.close()


def _show(gate: GateReport) -> None:
    table = Table(title="eval gate: candidate vs baseline")
    table.add_column("measure")
    table.add_column("candidate", justify="right")
    table.add_column("baseline", justify="right")
    table.add_column("verdict")
    for row in gate.rows:
        style = {"REGRESSED": "red", "better": "green"}.get(row.verdict, "")
        table.add_row(
            row.measure,
            _number(row.candidate),
            _number(row.baseline),
            f"[{style}]{row.verdict}[/{style}]" if style else row.verdict,
        )
    out.print(table)
    for item in gate.item_regressions[:10]:
        out.print(f"  regressed: [{item['suite']}] {item['question']!r} → {item['answer']!r}")


def _show_room(candidate: ModelResult, baseline: ModelResult, suites: list[str]) -> None:
    from flywheel.gate.room import THIN_ROOM

    out.print("room: the smallest log-prob lead of a passing answer over a runner-up that fails it")
    for suite in suites:
        for side, result in (("candidate", candidate), ("baseline", baseline)):
            item = result.thinnest(suite)
            if item is None or item.room is None:
                out.print(f"  {suite:>12} {side:>9}: -")
                continue
            thin = " [yellow](thin: another CPU may answer differently)[/yellow]"
            out.print(
                f"  {suite:>12} {side:>9}: {item.room.lead:.2f} after {item.room.at!r}, "
                f"else {item.room.instead!r}" + (thin if item.room.lead < THIN_ROOM else ""),
                soft_wrap=True,
            )


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
