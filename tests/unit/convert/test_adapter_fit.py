"""An adapter trained on another base is caught by shape before any weights are loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from convert.errors import ConvertError
from convert.inputs import read_adapter

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

from convert.merge import check_adapter_fits, skeleton_model  # noqa: E402

PREFIX = "base_model.model.model.layers.0.self_attn.q_proj"


def _tiny_llama() -> object:
    config = transformers.LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=100,
        architectures=["LlamaForCausalLM"],
    )
    return skeleton_model(config)


def _adapter(tmp_path: Path, tensors: dict[str, object]) -> Path:
    folder = tmp_path / "adapter"
    folder.mkdir()
    config = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]}
    config["base_model_name_or_path"] = "some/other-model"
    (folder / "adapter_config.json").write_text(json.dumps(config))
    safetensors_torch.save_file(tensors, str(folder / "adapter_model.safetensors"))
    return folder


def test_matching_adapter_passes(tmp_path: Path) -> None:
    adapter = _adapter(
        tmp_path,
        {
            f"{PREFIX}.lora_A.weight": torch.zeros(4, 64),
            f"{PREFIX}.lora_B.weight": torch.zeros(64, 4),
        },
    )
    check_adapter_fits(_tiny_llama(), read_adapter(adapter))


def test_adapter_from_a_wider_model_names_module_sizes_and_trained_base(tmp_path: Path) -> None:
    adapter = _adapter(
        tmp_path,
        {
            f"{PREFIX}.lora_A.weight": torch.zeros(4, 96),
            f"{PREFIX}.lora_B.weight": torch.zeros(96, 4),
        },
    )
    with pytest.raises(ConvertError) as error:
        check_adapter_fits(_tiny_llama(), read_adapter(adapter))
    assert "input size 64 in the base but 96 in the adapter" in str(error.value)
    assert "some/other-model" in error.value.fix


def test_adapter_for_a_deeper_model_names_the_missing_layer(tmp_path: Path) -> None:
    deep = "base_model.model.model.layers.7.self_attn.q_proj"
    adapter = _adapter(tmp_path, {f"{deep}.lora_A.weight": torch.zeros(4, 64)})
    with pytest.raises(ConvertError, match=r"patches model\.layers\.7\.self_attn\.q_proj"):
        check_adapter_fits(_tiny_llama(), read_adapter(adapter))
