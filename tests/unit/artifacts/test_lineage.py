"""Lineage is read from what the earlier steps wrote: manifest, training.json, eval report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from artifacts.lineage import lineage_for
from artifacts.registry import RegistryError


def _converted(tmp_path: Path, adapter: Path) -> Path:
    folder = tmp_path / "fact"
    folder.mkdir()
    model = folder / "fact-Q4_K_M.gguf"
    model.write_bytes(b"GGUF")
    artifact = {
        "file": model.name,
        "quant": "Q4_K_M",
        "size_bytes": 4,
        "sha256": "c" * 64,
        "quality": {"ppl": 9.5, "top1_agreement": 0.93, "mean_kl": 0.04},
        "passed_gate": True,
    }
    manifest = {
        "name": "fact",
        "created_at": "2026-11-30T00:00:00+00:00",
        "tools": {},
        "base": {"path": "/models/base.gguf", "sha256": "b" * 64},
        "adapter": {"path": str(adapter), "sha256": "a" * 64},
        "artifacts": [artifact],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return model


def test_manifest_training_record_and_eval_report_make_the_lineage(tmp_path: Path) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    data = {"path": "/data/sft/train.jsonl", "sha256": "d" * 64, "rows": 4}
    (adapter / "training.json").write_text(
        json.dumps({"data": data, "hyperparameters": {"steps": 16}, "final_loss": 0.2})
    )
    report = tmp_path / "report.json"
    report.write_text(
        json.dumps(
            {
                "passed": True,
                "suite": "facts, control",
                "candidate": {"summary": {"facts": 1.0}},
                "baseline": {"summary": {"facts": 0.0}},
                "regressions": [],
            }
        )
    )
    lineage = lineage_for(_converted(tmp_path, adapter), eval_report=report)
    assert lineage.base == {"path": "/models/base.gguf", "sha256": "b" * 64}
    assert lineage.adapter == {"path": str(adapter), "sha256": "a" * 64}
    assert lineage.dataset == data
    assert lineage.training is not None and lineage.training["final_loss"] == 0.2
    assert lineage.conversion is not None and lineage.conversion["quant"] == "Q4_K_M"
    assert lineage.eval is not None and lineage.eval["candidate"] == {"facts": 1.0}


def test_a_bare_gguf_has_an_empty_lineage_and_a_bad_report_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "base.gguf"
    model.write_bytes(b"GGUF")
    lineage = lineage_for(model)
    assert lineage.base is lineage.adapter is lineage.dataset is lineage.eval is None
    bad = tmp_path / "report.json"
    bad.write_text("[1, 2]")
    with pytest.raises(RegistryError, match="not a JSON object"):
        lineage_for(model, eval_report=bad)
    with pytest.raises(RegistryError, match="does not exist"):
        lineage_for(model, eval_report=tmp_path / "absent.json")
