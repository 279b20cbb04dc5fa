"""``ggserve convert`` end to end: base + LoRA → merged → GGUF f16 → quants → gate → manifest.

Everything is written into a hidden staging folder next to ``--out`` and renamed into place at
the end, so a crash or a failed step never leaves something that looks finished. A run whose
quality gate fails is kept, but under ``NAME.gate-failed``, for inspection.
"""

from __future__ import annotations

import gc
import hashlib
import importlib.metadata
import re
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from artifacts.digest import sha256_file
from artifacts.manifest import Artifact, Manifest, Quality, Source, write_manifest
from convert import imatrix, merge, quality, to_gguf
from convert.errors import ConvertError, QualityGateError
from convert.inputs import (
    AdapterSpec,
    BaseSpec,
    check_disk_space,
    check_output,
    estimate_bytes_needed,
    read_adapter,
    resolve_base,
)
from convert.precision import (
    Precision,
    aliasing_fallbacks,
    base_precision,
    finer_than_base,
    swap_note,
    warning_text,
)
from convert.progress import Reporter, SilentReporter, StepHandle, quiet_transformers
from convert.quantize import QuantResult, quantize, tensor_type_counts, tensor_types_by_name
from convert.tensor_error import TOP_TENSORS, summarize_by_type, tensor_errors
from convert.toolchain import Converter, ensure_converter

GATE_FAILED_SUFFIX = ".gate-failed"
IMATRIX_FILE = "imatrix.gguf"
_FLOAT_TYPES = frozenset({"F32", "F16", "BF16"})
_PERCENT = re.compile(r"(\d{1,3})%\|")


@dataclass
class ConvertOptions:
    """What ``ggserve convert`` was asked to do."""

    base: Path
    adapter: Path
    out: Path
    quants: list[str] = field(default_factory=lambda: ["Q4_K_M", "Q5_K_M"])
    eval_file: Path | None = None
    max_ppl_increase: float = 0.10
    keep_intermediate: bool = False
    force: bool = False
    cache_dir: Path | None = None
    sdist: Path | None = None
    eval_max_tokens: int = 2048
    eval_chunk_tokens: int = 512
    # "auto": computed from the calibration text (default: the eval text); else an imatrix file
    imatrix: str | None = None
    calibration: Path | None = None
    calibration_max_tokens: int = 8192


@dataclass
class ConvertResult:
    """Where the outputs are and what the manifest says about them."""

    folder: Path
    manifest: Manifest

    @property
    def passed(self) -> bool:
        """True when every artifact passed the quality gate."""
        return bool(self.manifest.gate.get("passed"))


class _Steps:
    """Runs named steps through the reporter and records how long each took."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.timings: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str, total: float | None = None) -> Iterator[StepHandle]:
        started = time.perf_counter()
        with self.reporter.step(name, total) as handle:
            yield handle
        self.timings[name] = round(time.perf_counter() - started, 2)
        self.reporter.done(name, self.timings[name])


def run_conversion(options: ConvertOptions, reporter: Reporter | None = None) -> ConvertResult:
    """Run the whole pipeline; raise ConvertError (QualityGateError if only the gate failed)."""
    reporter = reporter or SilentReporter()
    steps = _Steps(reporter)
    quiet_transformers()

    # Everything cheap that can be wrong is checked before anything slow starts.
    base = resolve_base(options.base)
    adapter = read_adapter(options.adapter)
    check_output(options.out, options.force)
    eval_text = quality.read_eval_text(options.eval_file)
    calibration_text, given_matrix = _read_imatrix_inputs(options)
    precision = base_precision(base)
    notes: list[str] = []
    warnings_shown = _precision_warnings(precision, options.quants)
    for line in warnings_shown:
        reporter.message(line)
    with steps("check base, adapter and converter"):
        converter = ensure_converter(options.cache_dir, options.sdist)
        config = merge.load_config(base)
        converter.require_supported(config.architectures[0])
        merge.check_adapter_fits(merge.skeleton_model(config), adapter)

    name = options.out.name
    staging = options.out.parent / f".{name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    logs = staging / "logs"
    logs.mkdir()

    with steps("load base model"):
        model, tokenizer = merge.load_base(base)
        n_params = merge.count_parameters(model)
    needed = estimate_bytes_needed(n_params, options.quants)
    check_disk_space(staging, needed)
    with steps("apply adapter"):
        patched = merge.apply_adapter(model, adapter)
    with steps("merge_and_unload"):
        model = merge.merge_and_unload(patched)
        del patched
    merged_dir = staging / "merged-hf"
    with steps("save merged HF model"):
        merge.save_merged(model, tokenizer, merged_dir)
    # The reference runs now, while the merged model is in memory; it is then freed so the
    # llama.cpp steps do not hold a float32 copy of the model as well.
    with steps("evaluate reference (HF, float32)"):
        chunks = quality.token_chunks(
            tokenizer, eval_text, options.eval_chunk_tokens, options.eval_max_tokens
        )
        # Calibrating on the eval text: the reference pass sees every activation it needs.
        on_eval = options.imatrix == "auto" and calibration_text is None
        with imatrix.collecting(model) if on_eval else nullcontext() as eval_activations:
            reference = quality.reference_log_probs(model, chunks)
    activations: dict[str, Any] | None = None
    calibration_tokens = 0
    if eval_activations is not None:
        activations, calibration_tokens = eval_activations.means(), sum(len(c) for c in chunks)
    elif options.imatrix == "auto" and calibration_text is not None:
        with steps("importance matrix (calibration text)"):
            calibration_chunks = quality.token_chunks(
                tokenizer,
                calibration_text,
                options.eval_chunk_tokens,
                options.calibration_max_tokens,
            )
            activations = imatrix.compute(model, calibration_chunks)
            calibration_tokens = sum(len(c) for c in calibration_chunks)
    del eval_activations
    del model
    gc.collect()

    f16_path = staging / f"{name}-f16.gguf"
    with steps("convert to GGUF f16 (llama.cpp)", total=100) as handle:
        to_gguf.export_f16(
            converter, merged_dir, f16_path, logs / "convert_hf_to_gguf.log", _bar(handle)
        )
    matrix = given_matrix
    if activations is not None:
        source = str(options.calibration) if options.calibration else _eval_source(options)
        text = calibration_text if calibration_text is not None else eval_text
        matrix = imatrix.for_gguf(activations, f16_path, source, text, calibration_tokens)
        imatrix.write_imatrix_file(matrix, staging / IMATRIX_FILE, options.eval_chunk_tokens)
    results: list[QuantResult] = [
        QuantResult("F16", f16_path, tensor_type_counts(f16_path), fallback_tensors=0)
    ]
    for quant in options.quants:
        with steps(f"quantize {quant}" + (" (imatrix)" if matrix else "")):
            target = staging / f"{name}-{quant}.gguf"
            result = quantize(f16_path, target, quant, imatrix=matrix)
            # An importance matrix already selects llama.cpp's error-minimizing search, which
            # does not alias; only the plain min/max path needs the swap.
            swaps = aliasing_fallbacks(result.fallbacks, precision) if matrix is None else {}
            if swaps:
                # Every tensor is pinned to the type the first pass chose (swapped ones aside):
                # an override skips llama.cpp's recipe for that tensor, and with it the layer
                # counters the recipe uses to give some attn_v/ffn_down layers more bits.
                chosen = tensor_types_by_name(target)
                pinned = {n: swaps.get(n, t) for n, t in chosen.items() if t not in _FLOAT_TYPES}
                fallbacks = {**result.fallbacks, **swaps}
                result = quantize(f16_path, target, quant, imatrix=matrix, overrides=pinned)
                result.fallbacks = fallbacks
                result.fallback_tensors = len(fallbacks)
        if swaps and precision is not None:
            notes.append(swap_note(quant, swaps, precision))
            reporter.message(notes[-1])
        results.append(result)
        if result.fallback_tensors:
            reporter.message(_fallback_note(result))
    errors: dict[str, list[Any]] = {}
    with steps("per-tensor error vs f16", total=len(results) - 1) as handle:
        for done, result in enumerate(results[1:], start=1):
            errors[result.quant] = tensor_errors(f16_path, result.path)
            handle.update(completed=done)

    qualities: dict[str, Quality] = {}
    with steps("evaluate GGUFs (llama.cpp)", total=len(results)) as handle:
        for done, result in enumerate(results, start=1):
            qualities[result.quant] = quality.evaluate_gguf(result.path, reference)
            handle.update(completed=done)

    if not options.keep_intermediate:
        shutil.rmtree(merged_dir)
    with steps("write manifest"):
        manifest = _build_manifest(
            name, base, adapter, converter, results, qualities, reference, options
        )
        for artifact in manifest.artifacts:
            found = errors.get(artifact.quant, [])
            artifact.tensor_errors = found[:TOP_TENSORS]
            artifact.error_by_type = summarize_by_type(found)
            artifact.imatrix = matrix is not None and artifact.quant != "F16"
        manifest.imatrix = matrix.describe() if matrix else None
        if manifest.imatrix is not None and activations is not None:
            manifest.imatrix["file"] = IMATRIX_FILE
        manifest.warnings = warnings_shown + notes
        manifest.timings_s = dict(steps.timings)
        write_manifest(manifest, staging)

    passed = bool(manifest.gate["passed"])
    final = options.out if passed else options.out.with_name(name + GATE_FAILED_SUFFIX)
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
    if not passed:
        raise QualityGateError(
            f"quality gate failed: {'; '.join(manifest.gate['failures'])}; outputs kept in {final}",
            _gate_hint(manifest.gate["failures"], options),
        )
    return ConvertResult(folder=final, manifest=manifest)


def _gate_hint(failures: list[str], options: ConvertOptions) -> str:
    """What to try, depending on which way the failing quants moved."""
    if any(" under " in failure for failure in failures) and options.imatrix is not None:
        return (
            "a quant far under f16 no longer behaves like the merged model: on a quantized base "
            "an importance matrix rounds small LoRA deltas back onto the base's grid; drop "
            "--imatrix or convert from a float base"
        )
    return (
        "see the per-tensor error table for where it was lost (a large gain is a biased "
        "rounding); try another quant or raise --max-ppl-increase"
    )


def _read_imatrix_inputs(
    options: ConvertOptions,
) -> tuple[str | None, imatrix.ImportanceMatrix | None]:
    """The calibration text (None: use the eval text) and a given imatrix file, checked early."""
    if options.imatrix is None:
        if options.calibration is not None:
            raise ConvertError(
                "--calibration is only used to compute an importance matrix",
                "add --imatrix auto, or drop --calibration",
            )
        return None, None
    if options.imatrix != "auto":
        if options.calibration is not None:
            raise ConvertError(
                "--calibration and an imatrix file exclude each other",
                "use --imatrix auto --calibration FILE, or --imatrix FILE alone",
            )
        path = Path(options.imatrix)
        if not path.is_file():
            raise ConvertError(
                f"imatrix file {path} does not exist",
                "pass --imatrix auto, or a GGUF imatrix written by llama-imatrix",
            )
        return None, imatrix.read_imatrix_file(path)
    if options.calibration is None:
        return None, None
    text = quality.read_eval_text(options.calibration, what="calibration file")
    return text, None


def _precision_warnings(precision: Precision | None, quants: list[str]) -> list[str]:
    finer = finer_than_base(quants, precision)
    return [warning_text(finer, precision)] if finer and precision else []


def _eval_source(options: ConvertOptions) -> str:
    return str(options.eval_file) if options.eval_file else "builtin:eval_default.txt"


def _bar(handle: StepHandle) -> Callable[[str], None]:
    """Turn the converter's tqdm lines (``Writing:  47%|...``) into progress updates."""

    def on_line(line: str) -> None:
        match = _PERCENT.search(line)
        if match:
            handle.update(completed=float(match.group(1)))

    return on_line


def _fallback_note(result: QuantResult) -> str:
    used = sorted({kind.upper() for kind in result.fallbacks.values()})
    quantized = sum(n for t, n in result.tensor_types.items() if t not in ("F32", "F16"))
    return (
        f"{result.quant}: {result.fallback_tensors} of {quantized} quantized tensors used a "
        f"fallback type ({', '.join(used).upper()}): their rows are not a multiple of the "
        f"{result.quant} block size; actual types {result.tensor_types}"
    )


def _build_manifest(
    name: str,
    base: BaseSpec,
    adapter: AdapterSpec,
    converter: Converter,
    results: list[QuantResult],
    qualities: dict[str, Quality],
    reference: quality.Reference,
    options: ConvertOptions,
) -> Manifest:
    f16_ppl = qualities["F16"].ppl
    reference_ppl = reference.quality().ppl
    artifacts: list[Artifact] = []
    failures: list[str] = []
    for result in results:
        measured = qualities[result.quant]
        # F16 is gated against the HF reference (the conversion itself), quants against F16.
        baseline = reference_ppl if result.quant == "F16" else f16_ppl
        increase = measured.ppl / baseline - 1.0
        measured.ppl_increase_vs_f16 = None if result.quant == "F16" else round(increase, 5)
        # Two-sided: a quant far *below* f16 is not the merged model either. On a quantized base
        # an error-minimizing rounding can snap small LoRA deltas back onto the base's grid, and
        # the result scores like the base (measured: -26.5 %) while forgetting the fine-tune.
        passed = abs(increase) <= options.max_ppl_increase
        if not passed:
            against = "the HF reference" if result.quant == "F16" else "f16"
            side = "over" if increase > 0 else "under"
            failures.append(
                f"{result.quant} perplexity {measured.ppl:.3f} is {increase:+.1%} {side} "
                f"{against} ({baseline:.3f}), limit ±{options.max_ppl_increase:.1%}"
            )
        artifacts.append(
            Artifact(
                file=result.path.name,
                quant=result.quant,
                size_bytes=result.path.stat().st_size,
                sha256=sha256_file(result.path),
                tensor_types=result.tensor_types,
                fallback_tensors=result.fallback_tensors,
                quality=measured,
                passed_gate=passed,
            )
        )
    eval_source = _eval_source(options)
    eval_text = quality.read_eval_text(options.eval_file)
    return Manifest(
        name=name,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        tools=_tool_versions(converter),
        base=Source(
            path=str(base.path.resolve()),
            sha256=base.sha256(),
            details={"format": base.kind},
        ),
        adapter=Source(
            path=str(adapter.path.resolve()),
            sha256=adapter.sha256(),
            details={
                "r": adapter.rank,
                "alpha": adapter.alpha,
                "target_modules": adapter.target_modules,
                "base_model_name_or_path": adapter.base_model_name_or_path,
            },
        ),
        artifacts=artifacts,
        eval={
            "source": eval_source,
            "sha256": hashlib.sha256(eval_text.encode()).hexdigest(),
            "tokens_scored": reference.n_tokens,
            "chunk_tokens": options.eval_chunk_tokens,
            "reference": "merged HF model, float32, PyTorch",
            "reference_ppl": round(reference_ppl, 5),
        },
        gate={
            "metric": "perplexity increase: quant vs f16, f16 vs HF reference",
            "max_ppl_increase": options.max_ppl_increase,
            "passed": not failures,
            "failures": failures,
        },
    )


def _tool_versions(converter: Converter) -> dict[str, str]:
    versions = {"llama_cpp_commit": converter.commit}
    for key, package in (
        ("ggserve", "ggserve"),
        ("llama_cpp_python", "llama-cpp-python"),
        ("transformers", "transformers"),
        ("peft", "peft"),
        ("torch", "torch"),
    ):
        try:
            versions[key] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[key] = "not installed"
    return versions

    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    warnings.filterwarnings("ignore", category=UserWarning, module="peft")
