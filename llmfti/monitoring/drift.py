"""Two-sample drift statistics on plain numpy arrays (numpy + scipy only).

- :func:`mmd_test`: maximum mean discrepancy with an RBF kernel (median-heuristic bandwidth) and a
  permutation p-value: for sets of embedding vectors (Gretton et al., 2012).
- :func:`ks_test`: Kolmogorov-Smirnov on one numeric variable (scipy).
- :func:`psi`: population stability index of a numeric, categorical or multi-valued variable
  (0.1: minor shift, 0.25: major shift, by the usual convention).

Why not Evidently: it would bring pandas, plotly and its own report model for three statistics
that are a few lines each here, and its embedding drift runs a classifier per call; these functions
work on what the monitor already holds (Arrow columns, numpy vectors) and are seeded.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_EPS = 1e-4  # floor of a bin's share in PSI, so an empty bin does not make the index infinite


@dataclass(frozen=True)
class TestResult:
    statistic: float
    p_value: float
    n_reference: int
    n_current: int


def mmd_test(reference: np.ndarray, current: np.ndarray, *, permutations: int = 300,
             seed: int = 0) -> TestResult:
    """Unbiased MMD² between two sets of vectors and its permutation p-value."""
    x = np.asarray(reference, dtype=np.float64)
    y = np.asarray(current, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"mmd_test needs two 2-D arrays of equal width, got {x.shape} and {y.shape}")
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError(f"mmd_test needs at least 2 vectors per side, got {n} and {m}")
    z = np.vstack([x, y])
    sq = np.einsum("ij,ij->i", z, z)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (z @ z.T), 0.0)
    off_diagonal = d2[np.triu_indices(len(z), k=1)]
    bandwidth = float(np.median(off_diagonal)) or 1.0
    kernel = np.exp(-d2 / bandwidth)
    np.fill_diagonal(kernel, 0.0)
    # a split is an indicator vector x (1: reference); with r = K·1 and t = 1ᵀK1 (diagonal zeroed):
    # Σxx = xᵀKx, Σxy = xᵀr - Σxx, Σyy = t - 2·xᵀr + Σxx — so every permutation is one matrix product
    row_sums = kernel.sum(axis=1)
    total = float(row_sums.sum())
    rng = np.random.default_rng(seed)
    observed = _mmd2(kernel, row_sums, total, np.arange(n + m) < n, n, m)[0]
    exceed = 0
    for start in range(0, permutations, 64):
        batch = min(64, permutations - start)
        masks = np.stack([rng.permutation(n + m) < n for _ in range(batch)])
        exceed += int((_mmd2(kernel, row_sums, total, masks, n, m) >= observed).sum())
    return TestResult(float(observed), (exceed + 1) / (permutations + 1), n, m)


def _mmd2(kernel: np.ndarray, row_sums: np.ndarray, total: float, masks: np.ndarray, n: int, m: int) -> np.ndarray:
    """Unbiased MMD² of each split in ``masks`` (rows of booleans, True: the first sample)."""
    x = np.atleast_2d(masks).astype(np.float64)
    sxx = np.einsum("pi,pi->p", x @ kernel, x)
    xr = x @ row_sums
    sxy = xr - sxx
    syy = total - 2.0 * xr + sxx
    return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2.0 * sxy / (n * m)


def ks_test(reference: Sequence[float], current: Sequence[float]) -> TestResult:
    """Two-sample Kolmogorov-Smirnov test (scipy.stats.ks_2samp)."""
    from scipy.stats import ks_2samp

    x = np.asarray(reference, dtype=np.float64)
    y = np.asarray(current, dtype=np.float64)
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"ks_test needs at least 2 values per side, got {len(x)} and {len(y)}")
    result = ks_2samp(x, y)
    return TestResult(float(result.statistic), float(result.pvalue), len(x), len(y))


def psi(reference: Sequence[Any], current: Sequence[Any], *, kind: str, bins: int = 10) -> float | None:
    """Population stability index. ``kind``: 'numeric' (quantile bins of the reference),
    'categorical', or 'multi' (each value a list; the distribution of its elements). Nulls are a
    category of their own. None when either side has no values."""
    result = psi_test(reference, current, kind=kind, bins=bins)
    return None if result is None else result.statistic


def psi_test(reference: Sequence[Any], current: Sequence[Any], *, kind: str, bins: int = 10) -> TestResult | None:
    """PSI (the statistic) with the p-value of a chi-square test of homogeneity on the same bins.

    PSI alone grows as samples shrink (about (bins - 1) * (1/n + 1/m) with no shift at all: 0.3 for
    60 vs 60 rows and 10 bins), so an alert should need both a large PSI and a small p-value."""
    if kind == "numeric":
        ref_counts, cur_counts = _numeric_counts(reference, current, bins)
    elif kind == "categorical":
        ref_counts, cur_counts = _category_counts(reference, current)
    elif kind == "multi":
        ref_counts, cur_counts = _category_counts(_flatten(reference), _flatten(current))
    else:
        raise ValueError(f"unknown PSI kind {kind!r}; expected numeric, categorical or multi")
    if ref_counts.sum() == 0 or cur_counts.sum() == 0:
        return None
    p = np.maximum(ref_counts / ref_counts.sum(), _EPS)
    q = np.maximum(cur_counts / cur_counts.sum(), _EPS)
    value = float(np.sum((q - p) * np.log(q / p)))
    observed = np.vstack([ref_counts, cur_counts])
    observed = observed[:, observed.sum(axis=0) > 0]
    if observed.shape[1] < 2:
        p_value = 1.0
    else:
        from scipy.stats import chi2_contingency

        p_value = float(chi2_contingency(observed, correction=False).pvalue)
    return TestResult(value, p_value, int(ref_counts.sum()), int(cur_counts.sum()))


def _flatten(values: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for value in values:
        if value is None:
            out.append(None)
        else:
            out.extend(value or ["<empty>"])
    return out


def _category_counts(reference: Sequence[Any], current: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    ref, cur = Counter(map(_category, reference)), Counter(map(_category, current))
    labels = sorted(set(ref) | set(cur))
    return np.array([ref[c] for c in labels], float), np.array([cur[c] for c in labels], float)


def _category(value: Any) -> str:
    return "<null>" if value is None else str(value)


def _numeric_counts(reference: Sequence[Any], current: Sequence[Any], bins: int) -> tuple[np.ndarray, np.ndarray]:
    ref = np.array([math.nan if v is None else float(v) for v in reference], dtype=np.float64)
    cur = np.array([math.nan if v is None else float(v) for v in current], dtype=np.float64)
    finite = ref[~np.isnan(ref)]
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1))) if len(finite) else np.array([0.0])
    inner = edges[1:-1]

    def counts(values: np.ndarray) -> np.ndarray:
        present = values[~np.isnan(values)]
        binned = np.bincount(np.searchsorted(inner, present, side="right"), minlength=len(inner) + 1)
        return np.append(binned, np.isnan(values).sum()).astype(float)

    return counts(ref), counts(cur)
