"""Small statistics shared by every package: the t-interval over seeds, Pearson r per column.

>>> mean, half = t_interval([0.8, 0.9, 1.0])
>>> round(mean, 3), round(half, 3)
(0.9, 0.248)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def t_interval(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of the two-sided 95 % t-interval ``mean ± t_{0.975, n-1} · s / √n``.

    ``s`` is the sample standard deviation (``ddof=1``); ``t`` the Student quantile (scipy).

    Args:
        values: ``n`` independent measurements (e.g. one per seed).

    Returns:
        ``(mean, half-width)``; the half-width is 0 for a single value.

    Example:
        >>> t_interval([0.5])
        (0.5, 0.0)
    """
    from scipy.stats import t

    arr = np.asarray(values, dtype=float)
    if len(arr) < 2:
        return float(arr.mean()), 0.0
    return float(arr.mean()), float(t.ppf(0.975, len(arr) - 1) * arr.std(ddof=1) / math.sqrt(len(arr)))


def pearson_columns(x: np.ndarray, y: np.ndarray, min_rows: int = 2) -> np.ndarray:
    """Pearson correlation per column over the rows where both are finite.

    ``ρ_k = Σ_i (x_ik − x̄_k)(y_ik − ȳ_k) / sqrt(Σ_i (x_ik − x̄_k)² · Σ_i (y_ik − ȳ_k)²)``
    with the sums and means over the rows ``i`` where ``x_ik`` and ``y_ik`` are finite,
    computed column by column in the inputs' own floating type.

    Args:
        x, y: ``[N, K]``.
        min_rows: columns with fewer valid rows than this get NaN (the twin metrics use
            2, the brain scores 3).

    Returns:
        ``[K]`` float64; NaN where fewer than ``min_rows`` valid rows or a constant column.

    Raises:
        ValueError: ``x`` and ``y`` are not two ``[N, K]`` arrays of equal shape.

    Example:
        >>> a = np.array([[1.0, 1.0], [2.0, 1.0], [3.0, np.nan]])
        >>> pearson_columns(a, np.array([[2.0, 0.0], [4.0, 1.0], [6.0, 2.0]]))
        array([ 1., nan])
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"pearson_columns: expected two [N, K] arrays of equal shape, found {x.shape} and {y.shape}")
    xt, yt = np.ascontiguousarray(x.T), np.ascontiguousarray(y.T)  # [K, N]: one column per row
    valid = np.isfinite(xt) & np.isfinite(yt)
    out = np.full(x.shape[1], np.nan)
    for k in np.flatnonzero(valid.sum(axis=1) >= max(min_rows, 1)):
        xk, yk = xt[k, valid[k]], yt[k, valid[k]]
        a, b = xk - xk.mean(), yk - yk.mean()
        den = np.sqrt((a * a).sum() * (b * b).sum())
        if den > 0:
            out[k] = (a * b).sum() / den
    return out
