"""How far each quantized tensor is from the f16 it was made from: the per-tensor error table.

A perplexity figure says *that* a quant lost quality; this says *where*. Every quantized tensor
of a GGUF is dequantized (gguf-py's numpy port of llama.cpp's dequantizers) and compared with the
same tensor of the f16 file:

    relative RMSE = ‖q − f‖ / ‖f‖          gain = ⟨q − f, f⟩ / ⟨f, f⟩

The relative RMSE is how much noise quantization added. The gain is the part of that error that
points along the tensor itself: rounding noise has a gain near 0, while a rounding that
systematically stretches the values (as re-quantizing a Q4_1 base with Q5_1's min/max grid does,
+1.8 % on every such tensor) shows up here even when its RMSE looks like any other quant's. A
gain compounds through the layers; noise mostly averages out.

The tensors with the largest error go to the convert output and the manifest, and a summary per
storage type.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from artifacts.manifest import TensorError

_UNQUANTIZED = frozenset({"F32", "F16", "BF16", "F64"})
TOP_TENSORS = 8


def tensor_errors(reference: Path, quantized: Path) -> list[TensorError]:
    """Relative RMSE of every quantized tensor in ``quantized`` against ``reference``, worst first.

    Tensors stored unquantized (norms, F32 biases) are left out: their error is nil by design.
    """
    from gguf import GGUFReader

    ref = {t.name: t for t in GGUFReader(reference).tensors}
    errors: list[TensorError] = []
    for name, kind, values in _dequantized(GGUFReader(quantized)):
        source = ref.get(name)
        if source is None:
            continue
        expected = _as_float(source)
        if expected.shape != values.shape:
            continue
        errors.append(
            TensorError(
                name=name,
                type=kind,
                rel_rmse=relative_rmse(values, expected),
                gain=gain(values, expected),
            )
        )
    errors.sort(key=lambda e: e.rel_rmse, reverse=True)
    return errors


def relative_rmse(values: np.ndarray, expected: np.ndarray) -> float:
    """‖values − expected‖ / ‖expected‖ (0 when ``expected`` is all zeros and they are equal)."""
    diff = float(np.linalg.norm((values - expected).ravel().astype(np.float64)))
    scale = float(np.linalg.norm(expected.ravel().astype(np.float64)))
    if scale == 0.0:
        return 0.0 if diff == 0.0 else float("inf")
    return round(diff / scale, 6)


def gain(values: np.ndarray, expected: np.ndarray) -> float:
    """⟨values − expected, expected⟩ / ⟨expected, expected⟩: the error along the tensor."""
    flat = expected.ravel().astype(np.float64)
    scale = float(flat @ flat)
    if scale == 0.0:
        return 0.0
    return round(float((values.ravel().astype(np.float64) - flat) @ flat) / scale, 6)


def summarize_by_type(errors: list[TensorError]) -> dict[str, dict[str, float]]:
    """Per storage type: how many tensors, their mean and their worst relative RMSE."""
    summary: dict[str, dict[str, float]] = {}
    for kind in sorted({e.type for e in errors}):
        values = [e.rel_rmse for e in errors if e.type == kind]
        gains = [e.gain for e in errors if e.type == kind]
        summary[kind] = {
            "tensors": len(values),
            "mean_rel_rmse": round(sum(values) / len(values), 6),
            "max_rel_rmse": max(values),
            "mean_gain": round(sum(gains) / len(gains), 6),
        }
    return summary


def _dequantized(reader: object) -> Iterator[tuple[str, str, np.ndarray]]:
    for tensor in reader.tensors:  # type: ignore[attr-defined]
        kind = tensor.tensor_type.name
        if kind in _UNQUANTIZED:
            continue
        yield tensor.name, kind, _as_float(tensor)


def _as_float(tensor: object) -> np.ndarray:
    """A GGUF tensor's values as float32 in numpy order (rows × columns)."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    kind = tensor.tensor_type  # type: ignore[attr-defined]
    data = tensor.data  # type: ignore[attr-defined]
    if kind in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
        return np.asarray(data, dtype=np.float32)
    return np.asarray(dequantize(data, kind), dtype=np.float32)
