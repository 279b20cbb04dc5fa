"""Quantize an f16 GGUF with ``llama_cpp.llama_model_quantize`` and report what really happened.

A quant name is a recipe, not a guarantee: a K-quant needs rows divisible by 256, so on narrow
models (SmolLM2 has 576-wide rows) llama.cpp quietly stores most tensors in a fallback type.
The fallback count comes from llama.cpp's own log; the tensor-type counts from the output file.
"""

from __future__ import annotations

import ctypes
import re
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from convert.errors import ConvertError
from convert.imatrix import ImportanceMatrix, as_quantize_param
from convert.inputs import QUANT_FTYPES

_FALLBACK = re.compile(r"warning: (\S+)\s+- ncols .*?-> falling back to\s+(\S+)", re.DOTALL)


@dataclass
class QuantResult:
    """One quantized file and the tensor types llama.cpp actually chose."""

    quant: str
    path: Path
    tensor_types: dict[str, int]
    fallback_tensors: int
    fallbacks: dict[str, str] = field(default_factory=dict)  # tensor name → type used


def quantize(
    f16_path: Path,
    out_path: Path,
    quant: str,
    threads: int = 0,
    imatrix: ImportanceMatrix | None = None,
    overrides: dict[str, str] | None = None,
) -> QuantResult:
    """Quantize ``f16_path`` to ``quant`` at ``out_path``; ConvertError when llama.cpp fails.

    With ``imatrix``, llama.cpp weights each column's rounding error by its importance.
    ``overrides`` maps tensor names to the storage type they must get (``{"blk.0.attn_q.weight":
    "Q5_0"}``) instead of the one the recipe or its fallback would choose.
    """
    import llama_cpp

    if quant not in QUANT_FTYPES:
        raise ConvertError(f"unknown quant type {quant}", f"choose from {', '.join(QUANT_FTYPES)}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANT_FTYPES[quant]
    params.nthread = threads
    keep_alive: list[object] = []
    if imatrix is not None:
        params.imatrix, keep_alive = as_quantize_param(imatrix)
    if overrides:
        params.tt_overrides = _override_array(overrides, keep_alive)
    with _captured_llama_log() as log:
        status = llama_cpp.llama_model_quantize(
            str(f16_path).encode(), str(out_path).encode(), ctypes.byref(params)
        )
    del keep_alive  # the matrix is copied by llama.cpp; it may go once quantization returns
    text = "".join(log)
    if status != 0 or not out_path.is_file():
        reason = next((ln for ln in text.splitlines() if "failed" in ln), "see llama.cpp's log")
        raise ConvertError(
            f"llama.cpp could not quantize to {quant}: {reason.strip()}",
            "check the f16 GGUF loads (free disk space, file not truncated)",
        )
    fallbacks = {name: used for name, used in _FALLBACK.findall(text)}
    return QuantResult(
        quant=quant,
        path=out_path,
        tensor_types=tensor_type_counts(out_path),
        fallback_tensors=len(fallbacks),
        fallbacks=fallbacks,
    )


def _override_array(overrides: dict[str, str], keep_alive: list[object]) -> object:
    """``llama_model_tensor_override`` entries (exact-name patterns), NULL-pattern terminated."""
    import llama_cpp
    from gguf import GGMLQuantizationType

    entry = llama_cpp.llama_model_tensor_override
    array = (entry * (len(overrides) + 1))()
    for slot, (name, kind) in zip(array, sorted(overrides.items()), strict=False):
        slot.pattern = f"^{re.escape(name)}$".encode()
        slot.type = int(GGMLQuantizationType[kind])
    keep_alive.append(array)
    return ctypes.cast(array, ctypes.POINTER(entry))


def tensor_types_by_name(gguf_path: Path) -> dict[str, str]:
    """Each tensor's storage type (``{"blk.0.attn_q.weight": "Q5_0", ...}``)."""
    from gguf import GGUFReader

    return {t.name: t.tensor_type.name for t in GGUFReader(gguf_path).tensors}


def tensor_type_counts(gguf_path: Path) -> dict[str, int]:
    """How many tensors of each storage type (``{"Q5_0": 150, "F32": 61, ...}``) a GGUF holds."""
    from gguf import GGUFReader

    reader = GGUFReader(gguf_path)
    counts = Counter(tensor.tensor_type.name for tensor in reader.tensors)
    return dict(counts.most_common())


_LOG_LOCK = threading.Lock()


@contextmanager
def _captured_llama_log() -> Iterator[list[str]]:
    """Collect llama.cpp's log lines while the block runs, then give logging back to the binding.

    The process has one llama.cpp log callback; the lock keeps two quantizations in one
    process from stealing each other's lines.
    """
    import llama_cpp
    from llama_cpp import _logger

    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def collect(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        lines.append(text.decode("utf-8", errors="replace"))

    with _LOG_LOCK:
        llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
        try:
            yield lines
        finally:
            llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
