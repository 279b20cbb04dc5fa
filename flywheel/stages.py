"""The model lifecycle, one stage per line: what each reads, what it writes, what runs it.

    capture → feedback → export → train → convert → gate → register → promote → (serve, capture)

Capture and feedback happen in the running server (``server/feedback``); promote ends there too
(``server/registry/activation.py`` swaps the model without a restart). Everything between is
offline and lives in this package, except the conversion, which is ``convert/``. The files
named here are defined once, in ``artifacts/names.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from artifacts.names import (
    DATASET_CARD,
    DATASET_EVAL,
    DATASET_TRAIN,
    LOSS_PLOT,
    MANIFEST,
    REGISTRY,
    TRAINING_RECORD,
)


@dataclass(frozen=True)
class Stage:
    """One step of the loop."""

    name: str
    reads: str  # the artifact it takes
    writes: str  # the artifact it hands on
    command: str  # how a person runs it
    code: str  # where it lives


STAGES: tuple[Stage, ...] = (
    Stage(
        "capture",
        "a served request and its answer",
        "an interaction in the feedback database",
        "ggserve serve  (GGSERVE_CAPTURE=full)",
        "server/feedback/capture.py",
    ),
    Stage(
        "feedback",
        "a captured response id",
        "a rating and correction, then a curator's label",
        "POST /v1/feedback; ggserve feedback label ID --accept",
        "server/feedback/store.py",
    ),
    Stage(
        "export",
        "the feedback database",
        f"a dataset folder: {DATASET_TRAIN}, {DATASET_EVAL}, {DATASET_CARD}",
        "ggserve feedback export --format sft --out DATA",
        "flywheel/export.py",
    ),
    Stage(
        "train",
        f"a base model and DATA/{DATASET_TRAIN}",
        f"an adapter folder with {TRAINING_RECORD} and {LOSS_PLOT}",
        "ggserve train-lora --base BASE --data DATA --out ADAPTER",
        "flywheel/train/",
    ),
    Stage(
        "convert",
        "the base model and the adapter folder",
        f"GGUF files and {MANIFEST} (the quality gate against the merged model)",
        "ggserve convert --base BASE --adapter ADAPTER --out models/NAME",
        "convert/",
    ),
    Stage(
        "gate",
        f"the candidate GGUF, the baseline GGUF and suites (DATA/{DATASET_EVAL})",
        "an eval report (JSON): passed, or which measure regressed",
        "ggserve eval --candidate GGUF --baseline GGUF --suite SUITE --report REPORT",
        "flywheel/gate/",
    ),
    Stage(
        "register",
        f"the GGUF with its {MANIFEST}, {TRAINING_RECORD} and eval report",
        f"the next version in {REGISTRY}, with its lineage",
        "ggserve models register GGUF --eval-report REPORT",
        "flywheel/register.py",
    ),
    Stage(
        "promote",
        "a registered version",
        "the version in service (the registry records who and when)",
        "ggserve models promote N --url URL",
        "flywheel/promote.py → server/registry/activation.py",
    ),
    Stage(
        "rollout",
        "a registered adapter version and a running server",
        "the adapter promoted or rolled back by live feedback, the decision in the registry",
        "ggserve rollout start NAME --version N --url URL",
        "server/rollout/",
    ),
)


def describe() -> str:
    """The loop as plain text, one stage per paragraph."""
    return "\n".join(
        f"{number}. {stage.name}: {stage.reads} → {stage.writes}\n"
        f"   run: {stage.command}\n   code: {stage.code}"
        for number, stage in enumerate(STAGES, start=1)
    )
