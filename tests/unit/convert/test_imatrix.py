"""Importance matrices: activation statistics, GGUF names, llama-imatrix files, the C array."""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest

from convert.errors import ConvertError
from convert.imatrix import (
    ImportanceMatrix,
    as_quantize_param,
    collecting,
    compute,
    for_gguf,
    read_imatrix_file,
)
from convert.pipeline import ConvertOptions, _read_imatrix_inputs


def _tiny_llama() -> object:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=32,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    return LlamaForCausalLM(config).eval()


def test_collected_value_is_the_mean_square_of_each_input_column() -> None:
    import torch

    model = _tiny_llama()
    seen: list[torch.Tensor] = []
    down = model.model.layers[0].mlp.down_proj  # type: ignore[attr-defined]
    handle = down.register_forward_hook(lambda m, i, o: seen.append(i[0].detach()))
    means = compute(model, [[1, 2, 3, 4], [5, 6]])  # type: ignore[arg-type]
    handle.remove()
    inputs = torch.cat([x.reshape(-1, x.shape[-1]) for x in seen])
    expected = (inputs.double() ** 2).mean(dim=0).float().numpy()
    np.testing.assert_allclose(means["model.layers.0.mlp.down_proj"], expected, rtol=1e-5)
    assert means["model.layers.0.mlp.down_proj"].shape == (128,)
    assert "lm_head" not in means  # llama-imatrix leaves the output projection out too
    assert len(means) == 7  # q k v o gate up down


def test_hooks_are_removed_when_the_block_ends() -> None:
    import torch

    model = _tiny_llama()
    with collecting(model) as collector:  # type: ignore[arg-type]
        pass
    with torch.inference_mode():
        model(input_ids=torch.tensor([[1, 2]]))  # type: ignore[operator]
    assert collector.sums == {}


def _write_gguf(path: Path, tensors: dict[str, np.ndarray], block_count: int | None = 1) -> Path:
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    if block_count is not None:
        writer.add_block_count(block_count)
    for name, values in tensors.items():
        writer.add_tensor(name, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_layers_are_keyed_by_the_gguf_tensor_names(tmp_path: Path) -> None:
    model_file = _write_gguf(
        tmp_path / "m.gguf",
        {
            "blk.0.attn_q.weight": np.zeros((64, 64), np.float32),
            "blk.0.ffn_down.weight": np.zeros((64, 128), np.float32),
        },
    )
    means = {
        "model.layers.0.self_attn.q_proj": np.ones(64, np.float32),
        "model.layers.0.mlp.down_proj": np.full(128, 2.0, np.float32),
        "model.layers.0.mlp.up_proj": np.ones(64, np.float32),  # no such tensor in the file
    }
    matrix = for_gguf(means, model_file, "calib.txt", "some text", tokens=10)
    assert sorted(matrix.entries) == ["blk.0.attn_q.weight", "blk.0.ffn_down.weight"]
    assert matrix.entries["blk.0.ffn_down.weight"][0] == 2.0
    assert matrix.unmatched == ["model.layers.0.mlp.up_proj"]
    assert matrix.describe()["tensors"] == 2 and matrix.describe()["tokens"] == 10


def test_a_model_with_no_matching_layer_is_refused(tmp_path: Path) -> None:
    model_file = _write_gguf(tmp_path / "m.gguf", {"blk.0.attn_q.weight": np.zeros((8, 64))})
    with pytest.raises(ConvertError, match="no layer of the model matched"):
        for_gguf({"encoder.dense": np.ones(64, np.float32)}, model_file, "x", "x", 1)


def test_a_llama_imatrix_file_is_read_as_sums_over_counts(tmp_path: Path) -> None:
    path = _write_gguf(
        tmp_path / "imatrix.gguf",
        {
            "blk.0.attn_q.weight.in_sum2": np.full(64, 30.0, np.float32),
            "blk.0.attn_q.weight.counts": np.array([10.0], np.float32),
        },
        block_count=None,
    )
    matrix = read_imatrix_file(path)
    np.testing.assert_allclose(matrix.entries["blk.0.attn_q.weight"], np.full(64, 3.0))
    assert matrix.tokens == 10


def test_a_file_without_imatrix_data_is_refused(tmp_path: Path) -> None:
    path = _write_gguf(tmp_path / "m.gguf", {"blk.0.attn_q.weight": np.zeros((8, 64))})
    with pytest.raises(ConvertError, match="holds no importance-matrix data"):
        read_imatrix_file(path)
    text = tmp_path / "notes.txt"
    text.write_text("not a gguf")
    with pytest.raises(ConvertError, match="cannot read imatrix"):
        read_imatrix_file(text)


def test_the_c_array_lists_every_entry_and_ends_with_a_null_name() -> None:
    matrix = ImportanceMatrix(
        entries={"a.weight": np.array([1.0, 2.0], np.float32), "b.weight": np.ones(3, np.float32)},
        source="x",
        sha256="0",
        tokens=1,
    )
    pointer, keep = as_quantize_param(matrix)
    assert keep
    assert pointer[0].name == b"a.weight" and pointer[0].size == 2
    assert [pointer[0].data[i] for i in range(2)] == [1.0, 2.0]
    assert pointer[1].name == b"b.weight" and pointer[1].size == 3
    assert pointer[2].name is None
    assert ctypes.sizeof(pointer._type_) > 0


def _options(tmp_path: Path, **kwargs: object) -> ConvertOptions:
    return ConvertOptions(base=tmp_path, adapter=tmp_path, out=tmp_path / "o", **kwargs)  # type: ignore[arg-type]


def test_calibration_without_imatrix_auto_is_refused(tmp_path: Path) -> None:
    calibration = tmp_path / "c.txt"
    calibration.write_text("text " * 100)
    with pytest.raises(ConvertError, match="--calibration is only used"):
        _read_imatrix_inputs(_options(tmp_path, calibration=calibration))
    with pytest.raises(ConvertError, match="exclude each other"):
        _read_imatrix_inputs(_options(tmp_path, imatrix=str(calibration), calibration=calibration))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe bad bytes", "is not UTF-8 text"),
        (b"   \n\t ", "is empty"),
        (None, "does not exist"),
        ("dir", "is a folder"),
    ],
)
def test_a_bad_calibration_file_is_named_before_any_work(
    tmp_path: Path, content: bytes | str | None, message: str
) -> None:
    calibration = tmp_path / "calibration.txt"
    if content == "dir":
        calibration.mkdir()
    elif isinstance(content, bytes):
        calibration.write_bytes(content)
    with pytest.raises(ConvertError, match=f"calibration file .*calibration.txt {message}"):
        _read_imatrix_inputs(_options(tmp_path, imatrix="auto", calibration=calibration))


def test_a_missing_imatrix_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConvertError, match=r"imatrix file .* does not exist"):
        _read_imatrix_inputs(_options(tmp_path, imatrix=str(tmp_path / "none.gguf")))


def test_auto_without_calibration_calibrates_on_the_eval_text(tmp_path: Path) -> None:
    assert _read_imatrix_inputs(_options(tmp_path, imatrix="auto")) == (None, None)
