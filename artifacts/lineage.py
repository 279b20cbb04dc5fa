"""Assemble a version's lineage from the files the earlier steps left behind.

``ggserve convert`` writes ``manifest.json`` next to the GGUF (base and adapter sha256, the
conversion gate); ``ggserve train-lora`` writes ``training.json`` into the adapter folder
(dataset sha256, hyper-parameters, losses); ``ggserve eval --report`` writes the eval gate's
JSON. Each is optional: a base model downloaded as a GGUF has none of them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from artifacts.manifest import ManifestError, manifest_for_model
from artifacts.names import TRAINING_RECORD
from artifacts.registry import Lineage, RegistryError


def lineage_for(
    model_path: Path, *, adapter: Path | None = None, eval_report: Path | None = None
) -> Lineage:
    """What is known about how ``model_path`` was made; RegistryError on an unreadable file."""
    lineage = Lineage()
    try:
        found = manifest_for_model(model_path)
    except ManifestError as exc:
        raise RegistryError(str(exc)) from exc
    if found is not None:
        manifest, artifact = found
        lineage.base = {"path": manifest.base.path, "sha256": manifest.base.sha256}
        if manifest.adapter is not None:
            lineage.adapter = {"path": manifest.adapter.path, "sha256": manifest.adapter.sha256}
            adapter = adapter or Path(manifest.adapter.path)
        quality = artifact.quality
        lineage.conversion = {
            "quant": artifact.quant,
            "passed_gate": artifact.passed_gate,
            "ppl": quality.ppl if quality else None,
            "top1_agreement": quality.top1_agreement if quality else None,
            "mean_kl": quality.mean_kl if quality else None,
            "ppl_increase_vs_f16": quality.ppl_increase_vs_f16 if quality else None,
        }
    if adapter is not None:
        record = _read_json(adapter / TRAINING_RECORD, required=False)
        if record is not None:
            lineage.dataset = record.get("data")
            lineage.training = {
                "hyperparameters": record.get("hyperparameters"),
                "replay": record.get("replay"),
                "device": record.get("device"),
                "first_loss": record.get("first_loss"),
                "final_loss": record.get("final_loss"),
                "created_at": record.get("created_at"),
            }
            if lineage.base is None:
                lineage.base = record.get("base")
    if eval_report is not None:
        report = _read_json(eval_report, required=True)
        assert report is not None
        lineage.eval = {
            "passed": report.get("passed"),
            "suite": report.get("suite"),
            "candidate": report.get("candidate", {}).get("summary"),
            "baseline": report.get("baseline", {}).get("summary"),
            "regressions": report.get("regressions"),
            "at": report.get("created_at"),
        }
    return lineage


def _read_json(path: Path, *, required: bool) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        if not required:
            return None
        raise RegistryError(f"{path} does not exist") from exc
    except (OSError, ValueError) as exc:
        raise RegistryError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise RegistryError(f"{path} is not a JSON object")
    return data
