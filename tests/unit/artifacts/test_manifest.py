"""The manifest format: round trip, lookup by file, sha256 verification, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from artifacts.manifest import (
    Artifact,
    Manifest,
    ManifestError,
    Quality,
    Source,
    manifest_for_model,
    read_manifest,
    sha256_file,
    verify_model_sha256,
    write_manifest,
)


def _manifest_for(model: Path) -> Manifest:
    return Manifest(
        name="fact",
        created_at="2026-11-23T18:00:00+00:00",
        tools={"llama_cpp_python": "0.3.36"},
        base=Source(path="/models/base.gguf", sha256="ab" * 32, details={"format": "gguf"}),
        adapter=Source(path="/adapters/fact", sha256="cd" * 32, details={"r": 8}),
        artifacts=[
            Artifact(
                file=model.name,
                quant="Q4_K_M",
                size_bytes=model.stat().st_size,
                sha256=sha256_file(model),
                tensor_types={"Q5_0": 166, "F32": 61},
                fallback_tensors=180,
                quality=Quality(
                    ppl=12.5, top1_agreement=0.9, mean_kl=0.05, ppl_increase_vs_f16=0.03
                ),
                passed_gate=True,
            )
        ],
        gate={"passed": True, "failures": []},
    )


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "fact-Q4_K_M.gguf"
    path.write_bytes(b"GGUF" + bytes(range(256)) * 10)
    return path


def test_manifest_round_trips_through_json(model: Path) -> None:
    written = _manifest_for(model)
    write_manifest(written, model.parent)
    assert read_manifest(model.parent) == written
    assert json.loads((model.parent / "manifest.json").read_text())["artifacts"][0]["quant"] == (
        "Q4_K_M"
    )


def test_model_file_finds_its_own_artifact_entry(model: Path) -> None:
    write_manifest(_manifest_for(model), model.parent)
    found = manifest_for_model(model)
    assert found is not None
    manifest, artifact = found
    assert (manifest.name, artifact.quant, artifact.fallback_tensors) == ("fact", "Q4_K_M", 180)


def test_model_without_manifest_has_none(model: Path) -> None:
    assert manifest_for_model(model) is None


def test_file_missing_from_manifest_is_an_error_not_a_silent_mislabel(model: Path) -> None:
    write_manifest(_manifest_for(model), model.parent)
    other = model.with_name("renamed.gguf")
    other.write_bytes(b"GGUF")
    with pytest.raises(ManifestError, match=r"does not list renamed\.gguf"):
        manifest_for_model(other)


def test_sha256_verification_passes_for_the_written_file(model: Path) -> None:
    write_manifest(_manifest_for(model), model.parent)
    assert verify_model_sha256(model).sha256 == sha256_file(model)


def test_sha256_verification_catches_one_changed_byte(model: Path) -> None:
    write_manifest(_manifest_for(model), model.parent)
    data = bytearray(model.read_bytes())
    data[100] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="does not match the manifest"):
        verify_model_sha256(model)


def test_malformed_manifest_names_the_fix(model: Path) -> None:
    (model.parent / "manifest.json").write_text('{"name": "x"}')
    with pytest.raises(ManifestError, match="re-run 'ggserve convert'"):
        read_manifest(model.parent)


def test_manifest_module_imports_nothing_heavy() -> None:
    code = (
        "import sys, artifacts.manifest; "
        "heavy = {'torch', 'transformers', 'numpy', 'llama_cpp', 'peft'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
