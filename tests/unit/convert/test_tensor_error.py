"""The per-tensor error table: relative RMSE against f16, worst first, summarized per type."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from artifacts.manifest import TensorError
from convert.tensor_error import gain, relative_rmse, summarize_by_type, tensor_errors


def test_relative_rmse_is_the_error_norm_over_the_reference_norm() -> None:
    expected = np.array([3.0, 4.0], dtype=np.float32)  # norm 5
    assert relative_rmse(expected + np.array([0.3, 0.4], dtype=np.float32), expected) == 0.1
    assert relative_rmse(expected, expected) == 0.0
    assert relative_rmse(np.zeros(2), np.zeros(2)) == 0.0
    assert relative_rmse(np.ones(2), np.zeros(2)) == float("inf")


def test_summary_counts_and_averages_each_storage_type() -> None:
    errors = [
        TensorError("blk.0.attn_q.weight", "Q5_1", 0.04, gain=0.02),
        TensorError("blk.1.attn_q.weight", "Q5_1", 0.02, gain=0.01),
        TensorError("blk.0.ffn_down.weight", "Q6_K", 0.01),
    ]
    summary = summarize_by_type(errors)
    assert summary == {
        "Q5_1": {"tensors": 2, "mean_rel_rmse": 0.03, "max_rel_rmse": 0.04, "mean_gain": 0.015},
        "Q6_K": {"tensors": 1, "mean_rel_rmse": 0.01, "max_rel_rmse": 0.01, "mean_gain": 0.0},
    }


def test_gain_separates_a_stretched_tensor_from_noise_of_the_same_size() -> None:
    rng = np.random.default_rng(1)
    weights = rng.normal(size=4096)
    noise = rng.normal(size=4096) * 0.02
    stretched = weights * 1.02
    assert relative_rmse(weights + noise, weights) == pytest.approx(0.02, rel=0.05)
    assert relative_rmse(stretched, weights) == pytest.approx(0.02, rel=1e-3)
    assert abs(gain(weights + noise, weights)) < 0.002
    assert gain(stretched, weights) == pytest.approx(0.02, rel=1e-3)


def _gguf(path: Path, tensors: dict[str, tuple[np.ndarray, str]]) -> Path:
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    for name, (values, kind) in tensors.items():
        qtype = gguf.GGMLQuantizationType[kind]
        data = gguf.quants.quantize(values, qtype) if kind != "F32" else values
        writer.add_tensor(name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_quantized_tensors_are_ranked_worst_first_and_float_ones_left_out(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    smooth = rng.normal(size=(4, 64)).astype(np.float32)
    spiky = smooth.copy()
    spiky[:, ::32] *= 40  # one outlier per block stretches every Q8_0 scale in that block
    norm = np.ones(64, dtype=np.float32)
    reference = _gguf(
        tmp_path / "f16.gguf",
        {"a.weight": (smooth, "F32"), "b.weight": (spiky, "F32"), "n.weight": (norm, "F32")},
    )
    quantized = _gguf(
        tmp_path / "q.gguf",
        {"a.weight": (smooth, "Q8_0"), "b.weight": (spiky, "Q8_0"), "n.weight": (norm, "F32")},
    )
    errors = tensor_errors(reference, quantized)
    assert [e.name for e in errors] == ["b.weight", "a.weight"]
    assert all(e.type == "Q8_0" for e in errors)
    assert errors[0].rel_rmse > errors[1].rel_rmse > 0
    assert errors[1].rel_rmse == pytest.approx(0.004, abs=0.003)  # Q8_0 on Gaussian data
