"""``ggserve train-lora`` end to end: check inputs → load base → train → adapter + record + plot.

The output folder is what ``ggserve convert --adapter`` takes as it is (``adapter_config.json``
and ``adapter_model.safetensors``), plus ``training.json`` (base and dataset sha256,
hyper-parameters, the loss of every step: the lineage the model registry records) and
``loss.png``. It is written under a hidden name and renamed at the end, so a crash never leaves
a folder that looks like a finished adapter.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from artifacts.names import LOSS_PLOT, TRAINING_RECORD
from convert import merge
from convert.inputs import check_output, resolve_base
from convert.progress import Reporter, SilentReporter, quiet_transformers
from flywheel.train.data import Dataset, Message, load_dataset
from flywheel.train.lora import Hyperparameters, StepCallback, pick_device, train
from flywheel.train.plot import save_loss_curve


@dataclass
class TrainOptions:
    """What ``ggserve train-lora`` was asked to do."""

    base: Path
    data: Path
    out: Path
    hyperparameters: Hyperparameters
    replay: Path | None = None  # answers to keep: the adapted model is held to the base on them
    device: str = "auto"
    force: bool = False


@dataclass
class TrainResult:
    """Where the adapter is and what the run recorded about itself."""

    folder: Path
    record: dict[str, Any]

    @property
    def losses(self) -> list[float]:
        """Loss of every optimizer step."""
        return list(self.record["losses"])


def train_lora(
    options: TrainOptions,
    reporter: Reporter | None = None,
    on_step: StepCallback | None = None,
) -> TrainResult:
    """Train the adapter described by ``options``; ConvertError on anything that stops it."""
    reporter = reporter or SilentReporter()
    quiet_transformers()
    started = time.perf_counter()
    # Everything cheap that can be wrong is checked before the base model is loaded.
    options.hyperparameters.check()
    base = resolve_base(options.base)
    dataset = load_dataset(options.data)
    replay = load_dataset(options.replay) if options.replay is not None else None
    check_output(options.out, options.force)
    device = pick_device(options.device)

    with reporter.step("load base model"):
        model, tokenizer = merge.load_base(base)
    reporter.done("load base model", time.perf_counter() - started)
    anchors = replay_rows(dataset, replay)
    run = train(
        model,
        tokenizer,
        dataset.conversations,
        options.hyperparameters,
        replay=anchors,
        device=device,
        on_step=on_step,
    )

    staging = options.out.parent / f".{options.out.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    seconds = round(time.perf_counter() - started, 1)
    saving = time.perf_counter()
    with reporter.step("save adapter"):
        run.model.save_pretrained(staging, safe_serialization=True)
        record = _record(options, base.sha256(), base.kind, dataset, replay, run.losses, device)
        if replay is not None:
            record["replay"]["anchored_rows"] = len(anchors)
        record["drift"] = [round(x, 5) for x in run.drift]
        record["seconds"] = seconds
        (staging / TRAINING_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        save_loss_curve(
            run.losses,
            staging / LOSS_PLOT,
            f"{options.out.name}: {len(dataset)} rows + {len(anchors)} replay, "
            f"seed {options.hyperparameters.seed}",
            drift=run.drift,
        )
    reporter.done("save adapter", time.perf_counter() - saving)
    if options.out.exists():
        shutil.rmtree(options.out)
    staging.rename(options.out)
    return TrainResult(folder=options.out, record=record)


def replay_rows(dataset: Dataset, replay: Dataset | None) -> list[list[Message]]:
    """The replay's conversations that are not also in ``dataset``.

    A row in both files (an export with ``--include-positive`` repeats the accepted corrections)
    is learned, not held to the base's answer that it corrects.
    """
    if replay is None:
        return []
    learned = {json.dumps(c, sort_keys=True) for c in dataset.conversations}
    return [c for c in replay.conversations if json.dumps(c, sort_keys=True) not in learned]


def _record(
    options: TrainOptions,
    base_sha256: str,
    base_kind: str,
    dataset: Dataset,
    replay: Dataset | None,
    losses: list[float],
    device: str,
) -> dict[str, Any]:
    hp = asdict(options.hyperparameters)
    hp["target_modules"] = list(hp["target_modules"])
    return {
        "schema": 1,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "base": {"path": str(options.base.resolve()), "sha256": base_sha256, "format": base_kind},
        "data": _dataset_entry(dataset),
        "replay": _dataset_entry(replay) if replay else None,
        "hyperparameters": hp,
        "device": device,
        "losses": [round(x, 5) for x in losses],
        "first_loss": round(losses[0], 5),
        "final_loss": round(losses[-1], 5),
        "tools": _versions(),
    }


def _dataset_entry(dataset: Dataset) -> dict[str, Any]:
    return {"path": str(dataset.path.resolve()), "sha256": dataset.sha256, "rows": len(dataset)}


def _versions() -> dict[str, str]:
    found = {}
    for package in ("ggserve", "torch", "transformers", "peft"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found
