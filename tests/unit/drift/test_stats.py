"""The two-sample tests, against hand-computed values and their defining properties."""

from __future__ import annotations

import math

import numpy as np
import pytest

from server.drift import stats


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_mmd_flags_two_clusters_and_not_one() -> None:
    rng = np.random.default_rng(1)
    a = _unit(rng.standard_normal((80, 16)) + 2.0 * np.eye(16)[0])
    b = _unit(rng.standard_normal((80, 16)) + 2.0 * np.eye(16)[1])
    shifted = stats.mmd_permutation_test(a[:40], b[:40], 200, rng)
    same = stats.mmd_permutation_test(a[:40], a[40:], 200, rng)
    assert shifted.p_value == pytest.approx(1 / 201)
    assert shifted.statistic > 0.05
    assert same.p_value is not None and same.p_value > 0.05
    assert abs(same.statistic) < shifted.statistic / 5


def test_mmd_p_values_are_calibrated_under_the_null() -> None:
    rng = np.random.default_rng(7)
    pool = _unit(rng.standard_normal((60, 8)))
    p_values = []
    for _ in range(60):
        order = rng.permutation(60)
        result = stats.mmd_permutation_test(pool[order[:30]], pool[order[30:]], 99, rng)
        assert result.p_value is not None
        p_values.append(result.p_value)
    # Uniform p-values: about 10% below 0.1, mean near 0.5.
    assert sum(p < 0.1 for p in p_values) <= 12
    assert 0.35 < float(np.mean(p_values)) < 0.65


def test_mmd_of_identical_rows_is_zero_with_p_one() -> None:
    rows = np.ones((5, 3))
    assert stats.mmd_permutation_test(rows, rows, 10, np.random.default_rng(0)) == (
        stats.TestResult(0.0, 1.0)
    )


def test_mmd_refuses_a_single_row() -> None:
    with pytest.raises(ValueError, match="two rows"):
        stats.mmd_permutation_test(np.ones((1, 3)), np.ones((4, 3)), 10, np.random.default_rng())


def test_ks_statistic_and_p_value() -> None:
    same = stats.ks_test(np.arange(100.0), np.arange(100.0))
    assert same.statistic == 0.0 and same.p_value == 1.0
    apart = stats.ks_test(np.arange(50.0), np.arange(50.0) + 100)
    assert apart.statistic == 1.0 and apart.p_value is not None and apart.p_value < 1e-10
    # Half the second sample overlaps: D = 0.5.
    half = stats.ks_test(np.arange(100.0), np.arange(100.0) + 50)
    assert half.statistic == pytest.approx(0.5)
    assert half.p_value is not None and half.p_value < 1e-8


def test_psi_is_zero_for_the_same_sample_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(3)
    ref = rng.normal(0.6, 0.1, 500)
    assert stats.psi(ref, ref) == pytest.approx(0.0)
    assert stats.psi(ref, rng.normal(0.6, 0.1, 500)) < 0.1
    assert stats.psi(ref, rng.normal(0.4, 0.1, 500)) > 0.5


def test_psi_survives_a_constant_reference() -> None:
    assert math.isfinite(stats.psi(np.zeros(50), np.ones(50)))


def test_two_proportion_test_matches_the_hand_computed_z() -> None:
    result = stats.two_proportion_test(10, 100, 30, 100)
    z = 0.2 / math.sqrt(0.2 * 0.8 * (2 / 100))
    assert result.statistic == pytest.approx(0.2)
    assert result.p_value == pytest.approx(math.erfc(z / math.sqrt(2)))
    assert stats.two_proportion_test(0, 50, 0, 80) == stats.TestResult(0.0, 1.0)


@pytest.mark.parametrize("fn", [stats.ks_test, stats.psi])
def test_empty_samples_are_refused(fn: object) -> None:
    with pytest.raises(ValueError):
        fn(np.array([]), np.array([1.0]))  # type: ignore[operator]
