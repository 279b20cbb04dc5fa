"""Percentiles, the one definition the benchmarks and the soak share."""

from __future__ import annotations

import pytest

from bench.harness.stats import percentile


def test_percentile_interpolates_between_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]  # unsorted on purpose
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(values, 95) == pytest.approx(3.85)


def test_percentile_of_one_value_is_that_value_and_of_none_is_none() -> None:
    assert percentile([7.5], 95) == 7.5
    assert percentile([], 50) is None
