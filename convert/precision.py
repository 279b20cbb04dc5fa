"""The base's own precision, and which requested quants would be finer than it.

Quantizing a Q4_1 base to Q5_K_M cannot bring back what Q4_1 rounded away: the file grows and
the extra bits only re-encode the old rounding error (plus a new one). The user is told before
the work starts; it is a warning, not a refusal, since the LoRA delta is new float information.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from convert.inputs import BaseSpec

# The storage type each quant recipe uses for most of its tensors.
MAIN_TYPE: dict[str, str] = {
    "F16": "F16",
    "BF16": "BF16",
    "Q8_0": "Q8_0",
    "Q6_K": "Q6_K",
    "Q5_1": "Q5_1",
    "Q5_0": "Q5_0",
    "Q5_K_M": "Q5_K",
    "Q5_K_S": "Q5_K",
    "Q4_1": "Q4_1",
    "Q4_0": "Q4_0",
    "Q4_K_M": "Q4_K",
    "Q4_K_S": "Q4_K",
    "Q3_K_L": "Q3_K",
    "Q3_K_M": "Q3_K",
    "Q3_K_S": "Q3_K",
    "Q2_K": "Q2_K",
}


# 32-weight formats with an offset, and the same width without one. llama.cpp quantizes them
# (without an importance matrix) on a grid from each block's min to its max. A base stored in such
# a format has its block extremes on its own grid already, so the new grid aliases with the old
# one: values in the lower half of each block round down, the upper half up, and every tensor is
# stretched (measured: +1.8 % for Q5_1 over a Q4_1 base, which took Q5_K_M to +120 % perplexity).
# The symmetric format's grid does not line up with the base's, and its rounding stays unbiased.
ALIASING: dict[str, str] = {"Q4_1": "Q4_0", "Q5_1": "Q5_0"}


@dataclass(frozen=True)
class Precision:
    """The storage type most of a base's weight matrices use, and its bits per weight."""

    type: str
    bits_per_weight: float


def bits_per_weight(ggml_type: str) -> float:
    """Bits per weight of a GGML storage type (``Q4_1`` → 5.0: 20 bytes per 32 weights)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    block, size = GGML_QUANT_SIZES[GGMLQuantizationType[ggml_type]]
    return size * 8 / block


def base_precision(base: BaseSpec) -> Precision | None:
    """The precision of a GGUF base's weight matrices; None for a float (HF) base."""
    if base.kind != "gguf":
        return None
    return gguf_precision(base.path)


def gguf_precision(path: Path) -> Precision:
    """The most common storage type among a GGUF's matrices (1-D norms are always F32)."""
    from gguf import GGUFReader

    kinds = Counter(t.tensor_type.name for t in GGUFReader(path).tensors if len(t.shape) >= 2)
    main = kinds.most_common(1)[0][0]
    return Precision(type=main, bits_per_weight=bits_per_weight(main))


def finer_than_base(quants: list[str], precision: Precision | None) -> list[str]:
    """The requested quants whose main type has more bits per weight than the base's."""
    if precision is None:
        return []
    return [q for q in quants if bits_per_weight(MAIN_TYPE[q]) > precision.bits_per_weight]


# Grids fine enough that re-rounding a 4-bit base onto them adds almost nothing: the result is
# the base plus the adapter (measured: a zeroed adapter through Q8_0 kept SmolLM2's answers).
NEAR_LOSSLESS = frozenset({"Q8_0", "F16", "BF16"})


def warning_text(quants: list[str], precision: Precision) -> str:
    """One line telling the user what a finer quant of a coarser base does and does not buy."""
    text = (
        f"the base is stored in {precision.type} ({precision.bits_per_weight:g} bits per "
        f"weight); {', '.join(quants)} {'is' if len(quants) == 1 else 'are'} finer than that: "
        "the extra bits cannot recover what the base already lost"
    )
    if set(quants) <= NEAR_LOSSLESS:
        return text + (
            ", but they keep the base's answers and the adapter's change closest: the format "
            "to gate a candidate made from a quantized base in (docs/flywheel-experiments.md §3)"
        )
    return text + (
        ", and re-rounding its values onto another grid adds error. Convert from a float base "
        "for better quality"
    )


def aliasing_fallbacks(fallbacks: dict[str, str], precision: Precision | None) -> dict[str, str]:
    """Tensors whose fallback type would alias with the base's own grid → the type to use instead.

    ``fallbacks`` maps tensor names to the type llama.cpp fell back to (as its log spells it).
    """
    if precision is None or precision.type not in ALIASING:
        return {}
    return {
        name: ALIASING[used.upper()] for name, used in fallbacks.items() if used.upper() in ALIASING
    }


def swap_note(quant: str, swaps: dict[str, str], precision: Precision) -> str:
    """What was stored differently from llama.cpp's choice, and why, in one line."""
    pairs = sorted({(k, v) for k, v in ALIASING.items() if v in swaps.values()})
    kinds = ", ".join(f"{v} instead of {k}" for k, v in pairs)
    return (
        f"{quant}: {len(swaps)} fallback tensors stored as {kinds}: on a {precision.type} base "
        "the offset format's min/max grid aliases with the base's and stretches every tensor"
    )
