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
    with the sums and means over the rows ``i`` where ``x_ik`` and ``y_ik`` are finite.

    Args:
        x, y: ``[N, K]`` (computed in float64).
        min_rows: columns with fewer valid rows than this get NaN.

    Returns:
        ``[K]``; NaN where fewer than ``min_rows`` valid rows or a constant column.

    Raises:
        ValueError: ``x`` and ``y`` are not two ``[N, K]`` arrays of equal shape.

    Example:
        >>> a = np.array([[1.0, 1.0], [2.0, 1.0], [3.0, np.nan]])
        >>> pearson_columns(a, np.array([[2.0, 0.0], [4.0, 1.0], [6.0, 2.0]]))
        array([ 1., nan])
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"pearson_columns: expected two [N, K] arrays of equal shape, found {x.shape} and {y.shape}")
    valid = np.isfinite(x) & np.isfinite(y)
    n = valid.sum(axis=0)
    xs = np.where(valid, x, 0.0)
    ys = np.where(valid, y, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = xs.sum(0) / n
        my = ys.sum(0) / n
        dx = np.where(valid, x - mx, 0.0)
        dy = np.where(valid, y - my, 0.0)
        den = np.sqrt((dx**2).sum(0) * (dy**2).sum(0))
        r = (dx * dy).sum(0) / den
    r[(n < min_rows) | ~(den > 0)] = np.nan
    return r
