"""Input checks that run before any slow step: each names the problem and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from convert.errors import ConvertError
from convert.inputs import (
    check_disk_space,
    check_output,
    parse_quants,
    read_adapter,
    resolve_base,
)


def test_quant_names_are_normalised_deduplicated_and_f16_is_implicit() -> None:
    assert parse_quants("q4_k_m, Q5_K_M,Q4_K_M,f16") == ["Q4_K_M", "Q5_K_M"]


def test_unknown_quant_lists_the_accepted_names() -> None:
    with pytest.raises(ConvertError) as error:
        parse_quants("Q4_K_M,Q9_X")
    assert "unknown quant type Q9_X" in str(error.value)
    assert "Q5_K_M" in error.value.fix


def test_importance_matrix_quants_are_refused() -> None:
    with pytest.raises(ConvertError, match="IQ2_XS"):
        parse_quants("IQ2_XS")


def test_missing_base_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConvertError, match="does not exist"):
        resolve_base(tmp_path / "nope.gguf")


def test_non_gguf_file_is_not_a_base(tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(ConvertError, match="neither a GGUF file nor a folder"):
        resolve_base(fake)


def test_gguf_base_is_recognised_by_magic(tmp_path: Path) -> None:
    real = tmp_path / "model.gguf"
    real.write_bytes(b"GGUF\x03\x00\x00\x00")
    assert resolve_base(real).kind == "gguf"


def test_hf_folder_without_safetensors_says_how_to_save(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(ConvertError) as error:
        resolve_base(tmp_path)
    assert "safe_serialization=True" in error.value.fix


def test_hf_folder_reports_its_architecture(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (tmp_path / "model.safetensors").write_bytes(b"x")
    assert resolve_base(tmp_path).architecture == "LlamaForCausalLM"


def _adapter(folder: Path, config: dict[str, object], weights: bool = True) -> Path:
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps(config))
    if weights:
        (folder / "adapter_model.safetensors").write_bytes(b"x")
    return folder


def test_adapter_without_config_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConvertError, match=r"no adapter_config\.json"):
        read_adapter(tmp_path)


def test_adapter_in_bin_format_is_rejected_with_the_fix(tmp_path: Path) -> None:
    folder = _adapter(tmp_path / "a", {"peft_type": "LORA", "r": 8}, weights=False)
    (folder / "adapter_model.bin").write_bytes(b"x")
    with pytest.raises(ConvertError) as error:
        read_adapter(folder)
    assert "safe_serialization=True" in error.value.fix


def test_non_lora_adapter_is_rejected(tmp_path: Path) -> None:
    folder = _adapter(tmp_path / "a", {"peft_type": "PREFIX_TUNING"})
    with pytest.raises(ConvertError, match="not LoRA"):
        read_adapter(folder)


def test_adapter_config_fields_are_read(tmp_path: Path) -> None:
    config = {
        "peft_type": "LORA",
        "r": 8,
        "lora_alpha": 16,
        "target_modules": ["v_proj", "q_proj"],
        "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct",
    }
    spec = read_adapter(_adapter(tmp_path / "a", config))
    assert (spec.rank, spec.alpha, spec.target_modules) == (8, 16.0, ["q_proj", "v_proj"])


def test_not_enough_disk_space_names_both_sizes(tmp_path: Path) -> None:
    with pytest.raises(ConvertError, match=r"not enough disk space .* needed, .* free"):
        check_disk_space(tmp_path / "not" / "yet" / "created", needed=2**62)


def test_enough_disk_space_passes(tmp_path: Path) -> None:
    check_disk_space(tmp_path, needed=1)


def test_existing_output_needs_force(tmp_path: Path) -> None:
    with pytest.raises(ConvertError, match="--force"):
        check_output(tmp_path, force=False)
    check_output(tmp_path, force=True)
