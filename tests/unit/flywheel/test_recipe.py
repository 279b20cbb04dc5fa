"""The recipe: the base's shape read from its GGUF or config, and the flags it leads to."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flywheel.recipe import BaseShape, RecipeError, read_shape, recipe_for

# What tests/integration/test_flywheel_loop.py passed to train-lora by hand for SmolLM2-135M
# (docs/flywheel-experiments.md §2-3): the recipe must give exactly these.
HAND_TUNED_135M = [
    "--layers", "0-14", "--target-modules", "gate_proj,up_proj,down_proj", "--steps", "20",
    "--rank", "16", "--alpha", "32", "--learning-rate", "0.002", "--replay-weight", "8",
    "--replay-batch-size", "12", "--seed", "0",
]  # fmt: skip


def _gguf(
    path: Path, arch: str = "llama", *, layers: int = 30, hidden: int = 576, file_type: int = 3
) -> Path:
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(layers)
    writer.add_embedding_length(hidden)
    writer.add_file_type(file_type)
    writer.add_tensor("token_embd.weight", np.zeros((10, 100), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _shape(billions: float, layers: int = 32, arch: str = "llama") -> BaseShape:
    return BaseShape(arch, layers, 4096, int(billions * 1e9), quantized=False)


def test_a_gguf_gives_its_architecture_depth_width_and_parameter_count(tmp_path: Path) -> None:
    shape = read_shape(_gguf(tmp_path / "m.gguf", layers=30, hidden=576, file_type=3))
    assert shape == BaseShape("llama", 30, 576, 1000, quantized=True)  # 3 = Q4_1


def test_a_float_gguf_is_not_quantized_and_converts_to_q4_k_m(tmp_path: Path) -> None:
    shape = read_shape(_gguf(tmp_path / "m.gguf", file_type=1))  # F16
    assert shape.quantized is False
    assert recipe_for(shape).quant == "Q4_K_M"


def test_smollm2_135m_gets_exactly_the_flags_the_loop_test_was_tuned_with() -> None:
    shape = BaseShape("llama", 30, 576, 134_515_008, quantized=True)  # the Q4_1 GGUF's
    recipe = recipe_for(shape)
    assert recipe.train_args() == HAND_TUNED_135M
    assert recipe.quant == "Q8_0" and recipe.eval_fraction == 0.25
    assert "measured" in recipe.why and "135 M" in recipe.why


def test_the_real_base_reads_as_the_135m_shape() -> None:
    model = Path("models/SmolLM2-135M-Instruct.Q4_1.gguf")
    if not model.is_file():
        pytest.skip("the SmolLM2 GGUF is not fetched")
    assert recipe_for(read_shape(model)).train_args() == HAND_TUNED_135M


@pytest.mark.parametrize(
    ("billions", "learning_rate", "steps"),
    [(0.36, 2e-3, 20), (1.7, 1e-3, 20), (7.0, 5e-4, 24), (70.0, 2e-4, 24)],
)
def test_larger_models_learn_more_gently(billions: float, learning_rate: float, steps: int) -> None:
    recipe = recipe_for(_shape(billions))
    assert (recipe.learning_rate, recipe.steps) == (learning_rate, steps)
    assert ("not measured" in recipe.why) == (billions > 0.5)


@pytest.mark.parametrize(("layers", "last"), [(2, 0), (24, 11), (32, 15), (81, 39)])
def test_the_first_half_of_the_layers_is_patched(layers: int, last: int) -> None:
    assert recipe_for(_shape(1.0, layers=layers)).layers == (0, last)


def test_an_architecture_without_gated_mlps_is_refused_with_a_way_out() -> None:
    with pytest.raises(RecipeError, match=r"'gpt2'.*--target-modules"):
        recipe_for(_shape(0.1, arch="gpt2"))


def test_a_one_layer_model_is_refused() -> None:
    with pytest.raises(RecipeError, match="1 decoder layer"):
        recipe_for(_shape(0.001, layers=1))


def test_a_hugging_face_folder_is_read_from_its_config(tmp_path: Path) -> None:
    config = {
        "model_type": "qwen2",
        "num_hidden_layers": 28,
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "vocab_size": 151936,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    shape = read_shape(tmp_path)
    assert (shape.architecture, shape.layers, shape.hidden_size, shape.quantized) == (
        "qwen2",
        28,
        1536,
        False,
    )
    assert 1.3e9 < shape.parameters < 1.8e9  # Qwen2-1.5B has 1.54 B
    assert recipe_for(shape).quant == "Q4_K_M"


@pytest.mark.parametrize(
    "make",
    [
        lambda p: p / "absent.gguf",
        lambda p: (p / "junk.gguf").write_bytes(b"not a gguf at all") and p / "junk.gguf",
        lambda p: (p / "config.json").write_text("{}") and p,
    ],
    ids=["missing", "not-gguf", "config-without-shape"],
)
def test_an_unreadable_base_is_a_recipe_error_not_a_traceback(tmp_path: Path, make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RecipeError):
        read_shape(make(tmp_path))
