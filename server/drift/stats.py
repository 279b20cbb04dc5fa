"""Two-sample tests on plain numpy arrays: MMD (permutation), KS, PSI, two proportions.

numpy only, so the server needs no scipy; each function is small enough to check by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating]

# A PSI bin that one window never hits would make the log blow up; this floor is the usual fix.
_PSI_FLOOR = 1e-4
# Rows of the permutation matrix per matmul: bounds memory at large windows.
_PERMUTATION_CHUNK = 128


@dataclass(frozen=True)
class TestResult:
    """A statistic and its p-value (None where the test gives none)."""

    statistic: float
    p_value: float | None


def _squared_distances(z: FloatArray) -> FloatArray:
    norms = np.einsum("ij,ij->i", z, z)
    sq = norms[:, None] + norms[None, :] - 2.0 * (z @ z.T)
    np.maximum(sq, 0.0, out=sq)
    return sq


def mmd_permutation_test(
    x: FloatArray, y: FloatArray, permutations: int, rng: np.random.Generator
) -> TestResult:
    """Unbiased MMD² between the rows of ``x`` and ``y`` (Gaussian kernel, median-distance
    bandwidth), and the permutation p-value of observing at least that much.

    The kernel matrix of the pooled sample is built once; every permutation is then one row of
    an indicator matrix, so all permutations cost one matrix product.
    """
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError("each sample needs at least two rows")
    z = np.vstack([x, y]).astype(np.float64)
    sq = _squared_distances(z)
    off_diagonal = sq[~np.eye(len(z), dtype=bool)]
    bandwidth = float(np.median(off_diagonal))
    if bandwidth <= 0.0:  # all rows identical: nothing can differ
        return TestResult(0.0, 1.0)
    kernel = np.exp(-sq / bandwidth)
    np.fill_diagonal(kernel, 0.0)
    total = float(kernel.sum())

    def statistic(in_x: FloatArray) -> FloatArray:
        # in_x: (P, n+m) 0/1 rows marking which pooled rows play "x"
        kx = in_x @ kernel
        xx = np.einsum("pi,pi->p", kx, in_x)
        xy = kx.sum(axis=1) - xx
        yy = total - 2.0 * xy - xx
        return xx / (n * (n - 1)) + yy / (m * (m - 1)) - 2.0 * xy / (n * m)

    observed_mask = np.zeros((1, n + m))
    observed_mask[0, :n] = 1.0
    observed = float(statistic(observed_mask)[0])
    at_least = 0
    done = 0
    while done < permutations:
        rows = min(_PERMUTATION_CHUNK, permutations - done)
        order = np.argsort(rng.random((rows, n + m)), axis=1)
        mask = np.zeros((rows, n + m))
        np.put_along_axis(mask, order[:, :n], 1.0, axis=1)
        at_least += int(np.count_nonzero(statistic(mask) >= observed - 1e-12))
        done += rows
    return TestResult(observed, (1 + at_least) / (1 + permutations))


def _kolmogorov_q(lam: float) -> float:
    """Survival function of the Kolmogorov distribution (the asymptotic KS law)."""
    if lam < 0.2:
        return 1.0
    total = 0.0
    for j in range(1, 101):
        term = (-1) ** (j - 1) * math.exp(-2.0 * j * j * lam * lam)
        total += term
        if abs(term) < 1e-12:
            break
    return min(max(2.0 * total, 0.0), 1.0)


def ks_test(x: FloatArray, y: FloatArray) -> TestResult:
    """Two-sample Kolmogorov-Smirnov: largest gap between the empirical CDFs and its
    asymptotic p-value (with the usual small-sample correction; conservative with ties)."""
    if len(x) == 0 or len(y) == 0:
        raise ValueError("both samples must be non-empty")
    xs, ys = np.sort(x), np.sort(y)
    grid = np.concatenate([xs, ys])
    cdf_x = np.searchsorted(xs, grid, side="right") / len(xs)
    cdf_y = np.searchsorted(ys, grid, side="right") / len(ys)
    d = float(np.max(np.abs(cdf_x - cdf_y)))
    en = math.sqrt(len(xs) * len(ys) / (len(xs) + len(ys)))
    return TestResult(d, _kolmogorov_q((en + 0.12 + 0.11 / en) * d))


def psi(reference: FloatArray, current: FloatArray, bins: int = 10) -> float:
    """Population stability index of ``current`` against ``reference``, with bin edges at the
    reference's quantiles (so each bin holds about 1/``bins`` of the reference)."""
    if len(reference) == 0 or len(current) == 0:
        raise ValueError("both samples must be non-empty")
    inner = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    ref_share = np.bincount(
        np.searchsorted(inner, reference, side="right"), minlength=len(inner) + 1
    )
    cur_share = np.bincount(np.searchsorted(inner, current, side="right"), minlength=len(inner) + 1)
    r = np.maximum(ref_share / len(reference), _PSI_FLOOR)
    c = np.maximum(cur_share / len(current), _PSI_FLOOR)
    return float(np.sum((c - r) * np.log(c / r)))


def two_proportion_test(hits_a: int, n_a: int, hits_b: int, n_b: int) -> TestResult:
    """Difference of two rates (b − a) and the two-sided p-value of the pooled z-test."""
    if n_a <= 0 or n_b <= 0:
        raise ValueError("both samples must be non-empty")
    rate_a, rate_b = hits_a / n_a, hits_b / n_b
    pooled = (hits_a + hits_b) / (n_a + n_b)
    variance = pooled * (1.0 - pooled) * (1.0 / n_a + 1.0 / n_b)
    if variance <= 0.0:  # both rates 0 or both 1: identical
        return TestResult(rate_b - rate_a, 1.0)
    z = (rate_b - rate_a) / math.sqrt(variance)
    return TestResult(rate_b - rate_a, math.erfc(abs(z) / math.sqrt(2.0)))
