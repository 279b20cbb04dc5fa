"""Importance matrices for quantization, computed from calibration text in PyTorch.

llama.cpp's imatrix is, for every matrix multiplication in the transformer blocks, the mean
square of each input column over the calibration tokens (``llama-imatrix`` stores the sums and
the token counts; quantization divides them). Columns that carry large activations get more
precision. The same statistics are collected here with forward hooks on the merged model's
``nn.Linear`` layers, which are exactly those matmuls' weights, and handed to
``llama_model_quantize`` through its ``imatrix`` parameter: no C++ tool to build, and the
activations are the float32 model the user trained rather than its f16 copy.

The matrix is saved next to the quants in llama-imatrix's GGUF format (``imatrix.gguf``), so
``llama-quantize --imatrix`` can reuse it; an imatrix file written by ``llama-imatrix`` can be
given instead of calibration text.
"""

from __future__ import annotations

import ctypes
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from convert.errors import ConvertError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

_SUM_SUFFIX = ".in_sum2"
_COUNT_SUFFIX = ".counts"


@dataclass
class ImportanceMatrix:
    """Per GGUF weight name, the mean square of each input column over the calibration tokens."""

    entries: dict[str, np.ndarray]
    source: str
    sha256: str
    tokens: int
    unmatched: list[str] = field(default_factory=list)  # collected layers with no GGUF tensor

    def describe(self) -> dict[str, Any]:
        """What the manifest records about it."""
        return {
            "source": self.source,
            "sha256": self.sha256,
            "tokens": self.tokens,
            "tensors": len(self.entries),
            "unmatched_layers": self.unmatched,
        }


class _Collector:
    """Sums of squared inputs of every linear layer, accumulated by forward hooks."""

    def __init__(self) -> None:
        self.sums: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def hook(self, name: str) -> Any:
        def record(module: Any, inputs: tuple[Any, ...], output: Any) -> None:
            x = inputs[0].detach().float()
            flat = x.reshape(-1, x.shape[-1])
            squares = (flat * flat).sum(dim=0).double()
            if name in self.sums:
                self.sums[name] += squares
            else:
                self.sums[name] = squares
            self.counts[name] = self.counts.get(name, 0) + flat.shape[0]

        return record

    def means(self) -> dict[str, np.ndarray]:
        return {
            name: (total / self.counts[name]).float().numpy() for name, total in self.sums.items()
        }


@contextmanager
def collecting(model: PreTrainedModel) -> Iterator[_Collector]:
    """While the block runs, record the squared inputs of every linear layer but the LM head.

    llama-imatrix skips the output projection by default, and so does this.
    """
    import torch

    collector = _Collector()
    handles = []
    output = model.get_output_embeddings()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not output:
            handles.append(module.register_forward_hook(collector.hook(name)))
    try:
        yield collector
    finally:
        for handle in handles:
            handle.remove()


def compute(model: PreTrainedModel, chunks: list[list[int]]) -> dict[str, np.ndarray]:
    """Run ``model`` over ``chunks`` and return each linear layer's mean squared input."""
    import torch

    with collecting(model) as collector, torch.inference_mode():
        for chunk in chunks:
            model(input_ids=torch.tensor([chunk]))
    return collector.means()


def for_gguf(
    means: dict[str, np.ndarray], gguf_path: Path, source: str, text: str, tokens: int
) -> ImportanceMatrix:
    """Key the per-layer statistics by the GGUF's tensor names (llama.cpp's own name map)."""
    import gguf

    reader = gguf.GGUFReader(gguf_path)
    arch_name = _field_text(reader, "general.architecture")
    arch = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}.get(arch_name)
    blocks = reader.get_field(f"{arch_name}.block_count")
    if arch is None or blocks is None:
        raise ConvertError(
            f"{gguf_path.name}: architecture {arch_name!r} is unknown to gguf-py's name map",
            "quantize without --imatrix",
        )
    names = gguf.get_tensor_name_map(arch, int(blocks.contents()))
    widths = {t.name: int(t.shape[0]) for t in reader.tensors}  # GGUF shape[0] = row length
    entries: dict[str, np.ndarray] = {}
    unmatched: list[str] = []
    for layer, values in means.items():
        mapped = names.get_name(layer + ".weight", try_suffixes=(".weight",))
        if mapped is None or widths.get(mapped) != values.shape[0]:
            unmatched.append(layer)
            continue
        entries[mapped] = values
    if not entries:
        raise ConvertError(
            "no layer of the model matched a tensor of the GGUF for the importance matrix",
            "quantize without --imatrix",
        )
    return ImportanceMatrix(
        entries=entries,
        source=source,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        tokens=tokens,
        unmatched=sorted(unmatched),
    )


def write_imatrix_file(matrix: ImportanceMatrix, path: Path, chunk_size: int) -> Path:
    """Save ``matrix`` as llama-imatrix does: per tensor the sums of squares and the token count."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "imatrix")
    writer.add_type("imatrix")
    writer.add_array("imatrix.datasets", [matrix.source])
    writer.add_uint32("imatrix.chunk_count", max(1, matrix.tokens // chunk_size))
    writer.add_uint32("imatrix.chunk_size", chunk_size)
    for name in sorted(matrix.entries):
        sums = matrix.entries[name].astype(np.float32) * np.float32(matrix.tokens)
        writer.add_tensor(f"{name}{_SUM_SUFFIX}", sums.reshape(1, -1))
        writer.add_tensor(f"{name}{_COUNT_SUFFIX}", np.array([[matrix.tokens]], np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def read_imatrix_file(path: Path) -> ImportanceMatrix:
    """Read an imatrix written by ``llama-imatrix`` (GGUF format: sums and token counts)."""
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except (OSError, ValueError) as exc:
        raise ConvertError(
            f"cannot read imatrix {path}: {exc}", "pass a GGUF imatrix from llama-imatrix"
        ) from exc
    tensors = {t.name: np.asarray(t.data, dtype=np.float32) for t in reader.tensors}
    entries: dict[str, np.ndarray] = {}
    tokens = 0
    for key, sums in tensors.items():
        if not key.endswith(_SUM_SUFFIX):
            continue
        name = key[: -len(_SUM_SUFFIX)]
        counts = tensors.get(name + _COUNT_SUFFIX)
        if counts is None or counts.size != 1:
            continue  # several counts: a mixture-of-experts layer, not produced by ggserve's models
        count = float(counts.ravel()[0])
        tokens = max(tokens, int(count))
        entries[name] = sums.ravel() / count if count > 0 else np.ones(sums.size, np.float32)
    if not entries:
        raise ConvertError(
            f"{path} holds no importance-matrix data (no *.in_sum2 tensors)",
            "pass a GGUF imatrix written by llama-imatrix, or --imatrix auto",
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return ImportanceMatrix(entries=entries, source=str(path), sha256=digest, tokens=tokens)


def as_quantize_param(matrix: ImportanceMatrix) -> tuple[Any, list[Any]]:
    """The ``llama_model_imatrix_data`` array (name=NULL terminated) and what keeps it alive."""
    import llama_cpp

    entry_type = llama_cpp.llama_model_imatrix_data
    array = (entry_type * (len(matrix.entries) + 1))()
    keep: list[Any] = [array]
    for slot, (name, values) in zip(array, matrix.entries.items(), strict=False):
        data = np.ascontiguousarray(values, dtype=np.float32)
        encoded = ctypes.c_char_p(name.encode())
        keep += [data, encoded]
        slot.name = encoded.value
        slot.data = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        slot.size = data.size
    return ctypes.cast(array, ctypes.POINTER(entry_type)), keep


def _field_text(reader: Any, key: str) -> str:
    found = reader.get_field(key)
    return str(found.contents()) if found is not None else ""
