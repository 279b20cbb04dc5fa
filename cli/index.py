"""``ggserve index``: build, update, inspect and query retrieval indexes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TimeRemainingColumn
from rich.table import Table

from server.rag.errors import RagError
from server.settings import Settings

if TYPE_CHECKING:
    from server.rag.builder import BuildReport, ProgressFn
    from server.rag.embedder import Embedder

app = typer.Typer(help="Retrieval indexes: build from a documents folder, update, inspect, query.")
console = Console(stderr=True)
out = Console()

IndexOption = typer.Option(
    None, "--index", "-i", help="Index folder (default: GGSERVE_INDEX_PATH)."
)
EmbedderOption = typer.Option(
    None, "--embedder", help="sentence-transformers folder (default: GGSERVE_EMBEDDER_PATH)."
)


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(1)


def _index_path(given: Path | None) -> Path:
    path = given or Settings().index_path
    if path is None:
        raise _fail("no index given: pass --index indexes/NAME or set GGSERVE_INDEX_PATH")
    return path


def _embedder(given: Path | None) -> Embedder:
    from server.rag.embedder import Embedder

    path = given or Settings().embedder_path
    with console.status(f"loading embedder {path} …"):
        return Embedder(path)


@contextmanager
def _progress() -> Iterator[ProgressFn]:
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def report(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                label = {
                    "load": "reading files",
                    "embed": "embedding passages",
                    "write": "writing index",
                }.get(phase, phase)
                tasks[phase] = bar.add_task(label, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        yield report


def _print_report(report: BuildReport) -> None:
    if report.skipped:
        table = Table("skipped file", "reason", title="Skipped", title_justify="left")
        for item in report.skipped:
            table.add_row(item.path, item.reason)
        console.print(table)
    if report.version is None:
        console.print(
            f"nothing changed ({len(report.unchanged)} unchanged); {report.index} left as it was"
        )
        return
    parts = [
        f"{len(report.added)} added",
        f"{len(report.replaced)} replaced",
        f"{len(report.unchanged)} unchanged",
        f"{len(report.removed)} removed",
        f"{len(report.skipped)} skipped",
    ]
    rate = report.chunks_embedded / report.embed_seconds if report.embed_seconds else 0.0
    out.print(f"{report.index} → {report.version}: " + ", ".join(parts))
    out.print(
        f"{report.total_documents} documents, {report.total_chunks} passages "
        f"({report.index_kind}); embedded {report.chunks_embedded} passages at "
        f"{rate:.0f}/s; {report.seconds:.1f} s"
    )


@app.command("build")
def build(
    docs_dir: Path = typer.Argument(..., help="Folder of .md, .txt, .html and .pdf files."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Index folder, e.g. indexes/docs."),
    hnsw: bool | None = typer.Option(
        None,
        "--hnsw/--flat",
        help="Force HNSW (approximate) or Flat (exact); default: by size.",
    ),
    chunk_tokens: int = typer.Option(200, min=8, help="Passage size in embedder tokens."),
    overlap: int = typer.Option(40, min=0, help="Tokens shared by consecutive passages."),
    embedder_path: Path | None = EmbedderOption,
) -> None:
    """Index every supported file under DOCS_DIR. A failed build leaves OUT untouched."""
    from server.rag.builder import build_index

    try:
        embedder = _embedder(embedder_path)
        with _progress() as progress:
            report = build_index(
                docs_dir,
                out_dir,
                embedder,
                kind="auto" if hnsw is None else ("hnsw" if hnsw else "flat"),
                chunk_tokens=chunk_tokens,
                overlap_tokens=overlap,
                progress=progress,
            )
    except (RagError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    _print_report(report)


@app.command("add")
def add(
    paths: list[Path] = typer.Argument(..., help="Files or folders to add or refresh."),
    index: Path | None = IndexOption,
    embedder_path: Path | None = EmbedderOption,
) -> None:
    """Add new documents and re-index changed ones; unchanged files are skipped by hash."""
    from server.rag.builder import update_index

    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise _fail(f"no such file or folder: {', '.join(missing)}")
    try:
        index_dir = _index_path(index)
        embedder = _embedder(embedder_path)
        with _progress() as progress:
            report = update_index(index_dir, embedder, add=paths, progress=progress)
    except RagError as exc:
        raise _fail(str(exc)) from exc
    _print_report(report)


@app.command("remove")
def remove(
    documents: list[str] = typer.Argument(..., help="Document names as 'index info' lists them."),
    index: Path | None = IndexOption,
    embedder_path: Path | None = EmbedderOption,
) -> None:
    """Remove documents from the index."""
    from server.rag.builder import update_index

    try:
        index_dir = _index_path(index)
        embedder = _embedder(embedder_path)
        report = update_index(index_dir, embedder, remove=documents)
    except RagError as exc:
        raise _fail(str(exc)) from exc
    _print_report(report)


@app.command("info")
def info(
    index: Path | None = IndexOption,
    documents: bool = typer.Option(False, "--documents", help="List every document."),
) -> None:
    """Show what an index holds and what built it."""
    from server.rag import layout
    from server.rag.manifest import IndexManifest

    try:
        index_dir = _index_path(index)
        live = layout.current_version(index_dir)
        manifest = IndexManifest.read(live)
    except RagError as exc:
        raise _fail(str(exc)) from exc
    table = Table(show_header=False, box=None)
    rows = [
        ("index", str(index_dir)),
        ("version", live.name),
        ("embedder", f"{manifest.embedder_name} ({manifest.dimension}-d)"),
        ("embedder folder", manifest.embedder_path),
        ("type", f"{manifest.index_kind} (requested: {manifest.kind_requested})"),
        ("documents", str(manifest.documents)),
        ("passages", str(manifest.count)),
        ("chunking", f"{manifest.chunk_tokens} tokens, {manifest.overlap_tokens} overlap"),
        ("built", manifest.built_at),
        ("updated", manifest.updated_at),
        ("source folder", manifest.docs_root),
        ("skipped (last run)", str(len(manifest.skipped))),
    ]
    for key, value in rows:
        table.add_row(f"[bold]{key}[/bold]", value)
    out.print(table)
    if documents:
        docs = Table("document", "sha256")
        for path, digest in sorted(manifest.files.items()):
            docs.add_row(path, digest[:16])
        out.print(docs)
    for item in manifest.skipped:
        out.print(f"  skipped {item['path']}: {item['reason']}")


@app.command("query")
def query(
    text: str = typer.Argument(..., help="The question to search for."),
    k: int = typer.Option(5, "-k", min=1, max=100, help="Passages to show."),
    threshold: float | None = typer.Option(
        None, help="Score a passage needs to be used (default: GGSERVE_RAG_SCORE_THRESHOLD)."
    ),
    index: Path | None = IndexOption,
    embedder_path: Path | None = EmbedderOption,
) -> None:
    """Show the top passages for TEXT with their scores (for debugging retrieval)."""
    from server.rag.retriever import Retriever

    if not text.strip():
        raise _fail("the query is empty")
    settings = Settings()
    cutoff = settings.rag_score_threshold if threshold is None else threshold
    try:
        index_dir = _index_path(index)
        retriever = Retriever.load(index_dir, _embedder(embedder_path))
        result = retriever.search(text, k)
    except RagError as exc:
        raise _fail(str(exc)) from exc
    table = Table("n", "score", "used", "document", "heading", "snippet")
    for hit in result.hits:
        used = "yes" if hit.score >= cutoff else "no"
        table.add_row(str(hit.n), f"{hit.score:.3f}", used, hit.document, hit.heading, hit.snippet)
    out.print(table)
    out.print(
        f"embed {result.embed_ms:.1f} ms, search {result.search_ms:.1f} ms; "
        f"threshold {cutoff} ({sum(h.score >= cutoff for h in result.hits)} used)"
    )
