"""The quality gate: quants against f16, f16 against the HF reference, threshold respected."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from artifacts.manifest import Quality
from convert.inputs import AdapterSpec, BaseSpec
from convert.pipeline import ConvertOptions, _build_manifest
from convert.quality import Reference
from convert.quantize import QuantResult
from convert.toolchain import Converter


def _manifest(tmp_path: Path, f16_ppl: float, q4_ppl: float, reference_ppl: float) -> object:
    tmp_path.mkdir(exist_ok=True)
    base_file = tmp_path / "base.gguf"
    base_file.write_bytes(b"GGUF")
    adapter_dir = tmp_path / "adapter"
    adapter_dir.mkdir()
    (adapter_dir / "adapter_model.safetensors").write_bytes(b"w")
    (adapter_dir / "adapter_config.json").write_text(json.dumps({"r": 8}))
    results = []
    for quant in ("F16", "Q4_K_M"):
        path = tmp_path / f"m-{quant}.gguf"
        path.write_bytes(quant.encode())
        results.append(QuantResult(quant, path, {"F32": 1}, fallback_tensors=0))
    # A uniform reference over e**k tokens has perplexity e**k: pick k for the wanted value.
    vocab = round(reference_ppl)
    uniform = np.full((3, vocab), -np.log(vocab), dtype=np.float32)
    reference = Reference(chunks=[[0, 1, 2, 3]], log_probs=[uniform])
    return _build_manifest(
        "m",
        BaseSpec(base_file, "gguf", None),
        AdapterSpec(adapter_dir, adapter_dir / "adapter_model.safetensors", 8, 16.0, [], None),
        Converter(root=tmp_path, version="0.3.36", commit="c" * 40),
        results,
        {"F16": Quality(ppl=f16_ppl), "Q4_K_M": Quality(ppl=q4_ppl)},
        reference,
        ConvertOptions(base=base_file, adapter=adapter_dir, out=tmp_path / "m"),
    )


def test_quant_within_threshold_passes(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, f16_ppl=20.0, q4_ppl=21.0, reference_ppl=20.0)
    assert manifest.gate["passed"] is True
    q4 = manifest.artifact("m-Q4_K_M.gguf")
    assert q4.quality.ppl_increase_vs_f16 == 0.05


def test_quant_over_threshold_fails_with_numbers_in_the_reason(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, f16_ppl=20.0, q4_ppl=23.0, reference_ppl=20.0)
    assert manifest.gate["passed"] is False
    assert manifest.artifact("m-Q4_K_M.gguf").passed_gate is False
    assert manifest.artifact("m-F16.gguf").passed_gate is True
    assert "Q4_K_M perplexity 23.000 is +15.0% over f16 (20.000)" in manifest.gate["failures"][0]


def test_quant_far_below_f16_fails_too_it_is_no_longer_the_merged_model(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, f16_ppl=38.0, q4_ppl=28.0, reference_ppl=38.0)
    assert manifest.artifact("m-Q4_K_M.gguf").passed_gate is False
    assert "is -26.3% under f16 (38.000), limit ±10.0%" in manifest.gate["failures"][0]
    slightly_better = _manifest(tmp_path / "b", f16_ppl=38.0, q4_ppl=37.0, reference_ppl=38.0)
    assert slightly_better.gate["passed"] is True


def test_broken_f16_conversion_fails_against_the_reference(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, f16_ppl=30.0, q4_ppl=30.0, reference_ppl=20.0)
    assert manifest.artifact("m-F16.gguf").passed_gate is False
    assert "over the HF reference" in manifest.gate["failures"][0]


def test_the_hint_names_the_imatrix_when_a_quant_fell_under_f16(tmp_path: Path) -> None:
    from convert.pipeline import _gate_hint

    under = ["Q5_K_M perplexity 29.967 is -22.3% under f16 (38.571), limit ±10.0%"]
    with_matrix = ConvertOptions(base=tmp_path, adapter=tmp_path, out=tmp_path, imatrix="auto")
    assert "drop --imatrix" in _gate_hint(under, with_matrix)
    over = ["Q5_K_M perplexity 84.725 is +119.7% over f16 (38.571), limit ±10.0%"]
    assert "per-tensor error table" in _gate_hint(over, with_matrix)
