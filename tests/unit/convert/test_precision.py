"""The base-precision warning: which quants are finer than a quantized base."""

from __future__ import annotations

import pytest

from convert.inputs import QUANT_FTYPES
from convert.precision import (
    MAIN_TYPE,
    Precision,
    aliasing_fallbacks,
    bits_per_weight,
    finer_than_base,
    swap_note,
    warning_text,
)


def test_bits_per_weight_come_from_the_block_layout() -> None:
    assert bits_per_weight("Q4_1") == 5.0  # 2 f16 + 16 bytes per 32 weights
    assert bits_per_weight("Q5_K") == 5.5
    assert bits_per_weight("Q8_0") == 8.5
    assert bits_per_weight("F16") == 16


def test_every_accepted_quant_has_a_main_type() -> None:
    assert set(QUANT_FTYPES) <= set(MAIN_TYPE)


@pytest.mark.parametrize(
    ("quants", "finer"),
    [
        (["Q4_K_M", "Q5_K_M"], ["Q5_K_M"]),
        (["Q4_1", "Q4_0", "Q3_K_M"], []),
        (["Q8_0", "Q6_K", "Q5_0"], ["Q8_0", "Q6_K", "Q5_0"]),
    ],
)
def test_quants_finer_than_a_q4_1_base_are_named(quants: list[str], finer: list[str]) -> None:
    assert finer_than_base(quants, Precision("Q4_1", 5.0)) == finer


def test_a_float_base_warns_about_nothing() -> None:
    assert finer_than_base(["Q8_0", "Q6_K"], None) == []
    assert finer_than_base(["Q8_0"], Precision("F16", 16.0)) == []


def test_the_warning_names_the_base_type_and_the_quants() -> None:
    text = warning_text(["Q5_K_M"], Precision("Q4_1", 5.0))
    assert "Q4_1 (5 bits per weight)" in text and "Q5_K_M is finer" in text
    assert "adds error" in text


def test_a_near_lossless_quant_of_a_quantized_base_is_explained_not_discouraged() -> None:
    text = warning_text(["Q8_0"], Precision("Q4_1", 5.0))
    assert "Q8_0 is finer" in text and "closest" in text and "adds error" not in text
    assert "adds error" in warning_text(["Q8_0", "Q5_K_M"], Precision("Q4_1", 5.0))


def test_offset_fallbacks_on_an_offset_base_are_swapped_for_the_symmetric_format() -> None:
    fallbacks = {"blk.0.attn_q.weight": "q5_1", "blk.0.attn_v.weight": "q8_0", "x.weight": "q4_1"}
    swaps = aliasing_fallbacks(fallbacks, Precision("Q4_1", 5.0))
    assert swaps == {"blk.0.attn_q.weight": "Q5_0", "x.weight": "Q4_0"}
    note = swap_note("Q5_K_M", swaps, Precision("Q4_1", 5.0))
    assert note.startswith("Q5_K_M: 2 fallback tensors stored as Q4_0 instead of Q4_1, Q5_0 ")


def test_no_swap_on_a_float_or_symmetric_base() -> None:
    fallbacks = {"blk.0.attn_q.weight": "q5_1"}
    assert aliasing_fallbacks(fallbacks, None) == {}
    assert aliasing_fallbacks(fallbacks, Precision("Q8_0", 8.5)) == {}
