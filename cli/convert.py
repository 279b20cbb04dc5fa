"""``ggserve convert`` and ``ggserve convert-adapter``: thin Typer commands over ``convert/``."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TimeElapsedColumn
from rich.table import Table

from artifacts.manifest import Manifest
from convert.errors import ConvertError, QualityGateError

console = Console(stderr=True)


class RichReporter:
    """Shows each pipeline step as a progress line and prints its time when it ends."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    @contextmanager
    def step(self, name: str, total: float | None = None) -> Iterator[_TaskHandle]:
        """Show a running step (a bar when ``total`` is known, else a spinner)."""
        task = self.progress.add_task(name, total=total)
        try:
            yield _TaskHandle(self.progress, task)
        finally:
            self.progress.remove_task(task)

    def done(self, name: str, seconds: float) -> None:
        """Print the finished step and its duration."""
        self.progress.console.print(f"[green]✓[/green] {name:<36} {seconds:7.1f} s")

    def message(self, text: str) -> None:
        """Print a warning line."""
        self.progress.console.print(f"[yellow]![/yellow] {text}")


class _TaskHandle:
    def __init__(self, progress: Progress, task: TaskID) -> None:
        self.progress = progress
        self.task = task

    def update(self, completed: float | None = None, total: float | None = None) -> None:
        self.progress.update(self.task, completed=completed, total=total)


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        "[progress.description]{task.description}",
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def _fail(exc: ConvertError) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
    return typer.Exit(1)


def convert(
    base: Path = typer.Option(..., help="Base model: a Hugging Face folder or a .gguf file."),
    adapter: Path = typer.Option(..., help="PEFT LoRA adapter folder (adapter_config.json)."),
    out: Path = typer.Option(..., help="Output folder, e.g. models/my-model."),
    quant: str = typer.Option("Q4_K_M,Q5_K_M", help="Comma list of quant types to produce."),
    eval_file: Path | None = typer.Option(
        None, help="Plain text for the quality gate (default: ggserve's built-in text)."
    ),
    max_ppl_increase: float = typer.Option(
        0.10, help="Largest allowed perplexity change of a quant against f16 (0.10 = ±10 %)."
    ),
    keep_intermediate: bool = typer.Option(
        False, help="Keep the merged Hugging Face folder (OUT/merged-hf)."
    ),
    force: bool = typer.Option(False, help="Replace OUT if it exists."),
    cache_dir: Path | None = typer.Option(
        None, help="Where llama.cpp's converter is cached (default ~/.cache/ggserve)."
    ),
    sdist: Path | None = typer.Option(
        None, help="Use this llama-cpp-python sdist instead of downloading it."
    ),
    imatrix: str | None = typer.Option(
        None,
        help="Importance-matrix quantization: 'auto' computes one from the calibration text; "
        "or a GGUF imatrix file written by llama-imatrix.",
    ),
    calibration: Path | None = typer.Option(
        None, help="Calibration text for --imatrix auto (default: the eval text)."
    ),
) -> None:
    """Merge a LoRA into its base, export GGUF, quantize, gate on quality, write a manifest."""
    # Set before transformers imports tqdm: its bars would tear through the step display.
    os.environ.setdefault("TQDM_DISABLE", "1")
    from convert.inputs import parse_quants
    from convert.pipeline import ConvertOptions, run_conversion

    started = time.perf_counter()
    try:
        options = ConvertOptions(
            base=base,
            adapter=adapter,
            out=out,
            quants=parse_quants(quant),
            eval_file=eval_file,
            max_ppl_increase=max_ppl_increase,
            keep_intermediate=keep_intermediate,
            force=force,
            cache_dir=cache_dir,
            sdist=sdist,
            imatrix=imatrix,
            calibration=calibration,
        )
        with _progress() as progress:
            result = run_conversion(options, RichReporter(progress))
    except QualityGateError as exc:
        _print_failed_manifest(out)
        raise _fail(exc) from exc
    except ConvertError as exc:
        raise _fail(exc) from exc
    _show(result.manifest)
    console.print(
        f"[green]done[/green] in {time.perf_counter() - started:.0f} s → {result.folder} "
        f"(manifest: {result.folder / 'manifest.json'})"
    )


def convert_adapter(
    base: Path = typer.Option(..., help="Base model the adapter was trained on (folder or .gguf)."),
    adapter: Path = typer.Option(..., help="PEFT LoRA adapter folder."),
    out: Path = typer.Option(..., help="Output .gguf file, e.g. models/my-lora.gguf."),
    outtype: str = typer.Option("f32", help="Adapter tensor type: f32, f16, bf16 or q8_0."),
    force: bool = typer.Option(False, help="Replace OUT if it exists."),
    cache_dir: Path | None = typer.Option(None, help="Where llama.cpp's converter is cached."),
    sdist: Path | None = typer.Option(None, help="Use this llama-cpp-python sdist."),
) -> None:
    """Export a LoRA adapter alone as a GGUF LoRA, applied at load time (GGSERVE_LORA_PATH)."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    from convert.adapter import AdapterExportOptions, export_adapter_gguf

    try:
        options = AdapterExportOptions(
            base=base,
            adapter=adapter,
            out=out,
            outtype=outtype,
            force=force,
            cache_dir=cache_dir,
            sdist=sdist,
        )
        with _progress() as progress:
            path = export_adapter_gguf(options, RichReporter(progress))
    except ConvertError as exc:
        raise _fail(exc) from exc
    console.print(
        f"[green]done[/green] → {path} ({path.stat().st_size / 2**20:.1f} MiB). "
        f"Serve it with GGSERVE_MODEL_PATH=<the base .gguf> GGSERVE_LORA_PATH={path}"
    )


def quality_table(manifest: Manifest) -> Table:
    """The manifest's artifacts as a table: size, fallbacks, quality against the reference, gate."""
    table = Table(title=f"{manifest.name}: quality vs the merged HF model (float32)")
    for column in ("file", "MiB", "fallback", "PPL", "ΔPPL vs f16", "top-1", "KL"):
        table.add_column(column, justify="left" if column == "file" else "right")
    table.add_column("gate")
    for artifact in manifest.artifacts:
        quality = artifact.quality
        increase = quality.ppl_increase_vs_f16 if quality else None
        table.add_row(
            artifact.file,
            f"{artifact.size_bytes / 2**20:.1f}",
            str(artifact.fallback_tensors),
            f"{quality.ppl:.3f}" if quality else "-",
            "-" if increase is None else f"{increase:+.1%}",
            f"{quality.top1_agreement:.3f}" if quality and quality.top1_agreement else "-",
            f"{quality.mean_kl:.4f}" if quality and quality.mean_kl is not None else "-",
            "[green]pass[/green]" if artifact.passed_gate else "[red]FAIL[/red]",
        )
    return table


def tensor_type_lines(manifest: Manifest) -> list[str]:
    """One line per artifact with the storage types llama.cpp really used."""
    return [
        f"{a.file}: " + " ".join(f"{t}×{n}" for t, n in a.tensor_types.items())
        for a in manifest.artifacts
    ]


def tensor_error_table(manifest: Manifest, top: int = 5) -> Table:
    """Per quant, the tensors quantization moved furthest from their f16 values."""
    table = Table(title="largest per-tensor error vs f16 (relative RMSE; gain = systematic scale)")
    for column in ("quant", "tensor", "type", "rel. RMSE", "gain"):
        table.add_column(
            column, justify="left" if column in ("quant", "tensor", "type") else "right"
        )
    for artifact in manifest.artifacts:
        for error in artifact.tensor_errors[:top]:
            table.add_row(
                artifact.quant,
                error.name,
                error.type,
                f"{error.rel_rmse:.4f}",
                f"{error.gain:+.2%}",
            )
    return table


def error_by_type_lines(manifest: Manifest) -> list[str]:
    """One line per quant: mean relative RMSE of its tensors, per storage type."""
    lines = []
    for artifact in manifest.artifacts:
        if not artifact.error_by_type:
            continue
        parts = [
            f"{kind}×{int(s['tensors'])} {s['mean_rel_rmse']:.4f} (gain {s['mean_gain']:+.2%})"
            for kind, s in artifact.error_by_type.items()
        ]
        imatrix = " (imatrix)" if artifact.imatrix else ""
        lines.append(f"{artifact.quant}{imatrix} mean rel. RMSE by type: " + ", ".join(parts))
    return lines


def _show(manifest: Manifest) -> None:
    console.print(quality_table(manifest))
    for line in tensor_type_lines(manifest):
        console.print(f"  {line}", highlight=False)
    if any(a.tensor_errors for a in manifest.artifacts):
        console.print(tensor_error_table(manifest))
        for line in error_by_type_lines(manifest):
            console.print(f"  {line}", highlight=False)


def _print_failed_manifest(out: Path) -> None:
    from artifacts.manifest import ManifestError, read_manifest
    from convert.pipeline import GATE_FAILED_SUFFIX

    try:
        manifest = read_manifest(out.with_name(out.name + GATE_FAILED_SUFFIX))
    except ManifestError:
        return
    _show(manifest)
