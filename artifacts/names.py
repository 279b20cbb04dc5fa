"""The file names one stage writes and the next one reads: each defined here, once.

ggserve feedback export  → DATASET_TRAIN, DATASET_EVAL, DATASET_CARD, DATASET_README
ggserve train-lora       → TRAINING_RECORD, LOSS_PLOT (beside the adapter's own files)
ggserve convert          → MANIFEST (beside the GGUF files)
ggserve models register  → REGISTRY (the default path, relative to the working folder)
"""

from __future__ import annotations

from pathlib import Path

DATASET_TRAIN = "train.jsonl"  # the training split; what train-lora reads from an export folder
DATASET_EVAL = "eval.jsonl"  # the held-out split; an eval gate suite as it is
DATASET_CARD = "card.json"  # counts, dates, model versions and sha256s of the export
DATASET_README = "README.md"  # the same card for the `datasets` library (YAML header)
TRAINING_RECORD = "training.json"  # base and dataset sha256, hyper-parameters, losses
LOSS_PLOT = "loss.png"
MANIFEST = "manifest.json"
REGISTRY = Path("models/registry.json")
