"""The training recipe, chosen from the base model's shape: the flags nobody should hand-tune.

``ggserve train-lora`` takes a dozen options. The values that turned the loop on SmolLM2-135M
(docs/flywheel-experiments.md §2-3) are the smallest row of the table below; the other rows
scale them the way LoRA practice does (a lower learning rate as the model widens, the same
"MLPs of the first half of the layers" placement), and say so: only the first row is measured.

=============  ==============  =====  ====  =====  =====  ===========================
parameters     learning rate   steps  rank  alpha  layers  measured
=============  ==============  =====  ====  =====  =====  ===========================
≤ 0.5 B        2e-3            20     16    32     first half  yes: 135M, 7 runs of 7
0.5 – 3 B      1e-3            20     16    32     first half  no (scaled)
3 – 15 B       5e-4            24     16    32     first half  no (scaled)
> 15 B         2e-4            24     16    32     first half  no (scaled)
=============  ==============  =====  ====  =====  =====  ===========================

Every row patches ``gate_proj, up_proj, down_proj`` (the MLPs, where a fact lives: patching
every layer let the new name leak into other answers), anchors 12 replay rows a step with
weight 8, and converts to Q8_0 when the base is already a quantized GGUF (a second 4-bit
rounding costs the gate its room, §3), Q4_K_M from a float base. Shipped as an adapter
(``--ship adapter``, the default), the LoRA is exported in f32: it is a few MiB, and then the
only rounding is the base's own (the merged Q8_0 model rounds W + s·BA once more;
docs/flywheel.md, "adapter vs merged").
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

# llama.cpp architecture names (GGUF ``general.architecture``) and Hugging Face ``model_type``s
# whose decoder MLP is gate_proj / up_proj / down_proj, which the recipe patches.
GATED_MLP_ARCHITECTURES = frozenset(
    {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "granite", "olmo2"}
)
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")
# GGUF file types (``general.file_type``) that hold float weights: 0 F32, 1 F16, 32 BF16.
_FLOAT_FILE_TYPES = frozenset({0, 1, 32})


class RecipeError(Exception):
    """The base cannot be read, or the recipe does not know its architecture."""


@dataclass(frozen=True)
class BaseShape:
    """What the recipe needs to know about a base model."""

    architecture: str
    layers: int
    hidden_size: int
    parameters: int
    quantized: bool  # a GGUF whose weights are already rounded below 16 bits

    @property
    def billions(self) -> float:
        return self.parameters / 1e9


@dataclass(frozen=True)
class Row:
    """One line of the size table."""

    max_billions: float
    learning_rate: float
    steps: int
    measured: str  # what backs it: a run, or "scaled"


SIZE_TABLE: tuple[Row, ...] = (
    Row(0.5, 2e-3, 20, "measured on SmolLM2-135M: 7 runs of 7 promoted (flywheel-experiments §2)"),
    Row(3.0, 1e-3, 20, "scaled from the 135M row (learning rate halved), not measured"),
    Row(15.0, 5e-4, 24, "scaled from the 135M row, not measured"),
    Row(math.inf, 2e-4, 24, "scaled from the 135M row, not measured"),
)


@dataclass(frozen=True)
class Recipe:
    """The train, convert and export settings for one base."""

    shape: BaseShape
    layers: tuple[int, int]  # first and last decoder layer patched (inclusive)
    target_modules: tuple[str, ...]
    steps: int
    rank: int
    alpha: float
    learning_rate: float
    replay_weight: float
    replay_batch_size: int
    seed: int
    quant: str  # what convert writes (a merged model)
    adapter_outtype: str  # what convert-adapter writes (an adapter shipped alone)
    eval_fraction: float  # of the export held out for the gate
    why: str

    def train_args(self) -> list[str]:
        """``ggserve train-lora`` options for this recipe."""
        first, last = self.layers
        return [
            "--layers", f"{first}-{last}",
            "--target-modules", ",".join(self.target_modules),
            "--steps", str(self.steps),
            "--rank", str(self.rank),
            "--alpha", _number(self.alpha),
            "--learning-rate", _number(self.learning_rate),
            "--replay-weight", _number(self.replay_weight),
            "--replay-batch-size", str(self.replay_batch_size),
            "--seed", str(self.seed),
        ]  # fmt: skip


def recipe_for(shape: BaseShape, *, seed: int = 0) -> Recipe:
    """The recipe for ``shape``; RecipeError for an architecture it does not know."""
    if shape.architecture not in GATED_MLP_ARCHITECTURES:
        raise RecipeError(
            f"no recipe for architecture {shape.architecture!r}: the recipe patches "
            f"{', '.join(MLP_MODULES)}, which {', '.join(sorted(GATED_MLP_ARCHITECTURES))} "
            "have; train with 'ggserve train-lora' and your own --target-modules instead"
        )
    if shape.layers < 2:
        raise RecipeError(f"the base has {shape.layers} decoder layer(s); the recipe needs 2+")
    row = next(r for r in SIZE_TABLE if shape.billions <= r.max_billions)
    return Recipe(
        shape=shape,
        layers=(0, shape.layers // 2 - 1),
        target_modules=MLP_MODULES,
        steps=row.steps,
        rank=16,
        alpha=32.0,
        learning_rate=row.learning_rate,
        replay_weight=8.0,
        replay_batch_size=12,
        seed=seed,
        quant="Q8_0" if shape.quantized else "Q4_K_M",
        adapter_outtype="f32",
        eval_fraction=0.25,
        why=f"{shape.architecture}, {shape.layers} layers, hidden {shape.hidden_size}, "
        f"{_size(shape.parameters)} parameters → the ≤ {_billions(row.max_billions)} row: "
        f"{row.measured}",
    )


def read_shape(base: Path) -> BaseShape:
    """The shape of ``base``: a GGUF file or a Hugging Face folder (config.json)."""
    if base.is_dir():
        return _shape_from_config(base / "config.json")
    if base.is_file():
        return _shape_from_gguf(base)
    raise RecipeError(f"base model {base} does not exist")


def _shape_from_gguf(path: Path) -> BaseShape:
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except Exception as exc:  # gguf-py raises ValueError, struct.error, … on a foreign file
        raise RecipeError(f"{path} is not a readable GGUF file: {exc}") from exc
    architecture = _field(reader, "general.architecture")
    if not isinstance(architecture, str):
        raise RecipeError(f"{path} names no architecture (general.architecture)")
    layers = _field(reader, f"{architecture}.block_count")
    hidden = _field(reader, f"{architecture}.embedding_length")
    if not isinstance(layers, int) or not isinstance(hidden, int):
        raise RecipeError(f"{path} has no {architecture}.block_count / embedding_length")
    parameters = sum(int(t.n_elements) for t in reader.tensors)
    file_type = _field(reader, "general.file_type")
    return BaseShape(
        architecture=architecture,
        layers=layers,
        hidden_size=hidden,
        parameters=parameters,
        quantized=file_type not in _FLOAT_FILE_TYPES,
    )


def _field(reader: object, key: str) -> str | int | None:
    field = reader.get_field(key)  # type: ignore[attr-defined]
    if field is None:
        return None
    value = field.contents()
    return value if isinstance(value, str | int) else None


def _shape_from_config(path: Path) -> BaseShape:
    try:
        config = json.loads(path.read_text())
        architecture = str(config["model_type"])
        layers = int(config["num_hidden_layers"])
        hidden = int(config["hidden_size"])
        intermediate = int(config.get("intermediate_size", 4 * hidden))
        vocab = int(config.get("vocab_size", 32_000))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RecipeError(f"cannot read the base's shape from {path}: {exc}") from exc
    # Attention (4 h²) and gated MLP (3 h·i) per layer, plus the embeddings: within a few % of
    # the real count for llama-shaped models, which is all the size table needs.
    parameters = layers * (4 * hidden * hidden + 3 * hidden * intermediate) + vocab * hidden
    return BaseShape(architecture, layers, hidden, parameters, quantized=False)


def _number(value: float) -> str:
    return f"{value:g}"


def _size(parameters: int) -> str:
    return f"{parameters / 1e9:.2f} B" if parameters >= 1e9 else f"{parameters / 1e6:.0f} M"


def _billions(value: float) -> str:
    return "∞" if math.isinf(value) else f"{value:g} B"
