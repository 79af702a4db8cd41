"""neuroreg.stats: the t-interval and the per-column Pearson correlation."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from neuroreg.stats import pearson_columns, t_interval


def test_t_interval_is_the_student_interval() -> None:
    values = [0.81, 0.86, 0.79, 0.9]
    mean, half = t_interval(values)
    lo, hi = scipy_stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=scipy_stats.sem(values))
    assert mean == pytest.approx(np.mean(values)) and half == pytest.approx((hi - lo) / 2)
    assert t_interval([0.3]) == (0.3, 0.0)


def naive(a: np.ndarray, b: np.ndarray, min_rows: int) -> np.ndarray:
    out = []
    for j in range(a.shape[1]):
        ok = np.isfinite(a[:, j]) & np.isfinite(b[:, j])
        if ok.sum() < min_rows or np.std(a[ok, j]) == 0 or np.std(b[ok, j]) == 0:
            out.append(math.nan)
        else:
            out.append(np.corrcoef(a[ok, j], b[ok, j])[0, 1])
    return np.asarray(out)


@pytest.mark.parametrize("min_rows", [2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pearson_columns_matches_corrcoef_and_its_nan_convention(min_rows: int, dtype) -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20, 6)).astype(dtype)
    b = (a + rng.normal(size=(20, 6))).astype(dtype)
    b[rng.random(b.shape) < 0.2] = np.nan
    a[:, 1] = 1.0  # constant column
    b[2:, 2] = np.nan  # exactly 2 valid rows: a correlation for min_rows=2, NaN for 3
    r = pearson_columns(a, b, min_rows=min_rows)
    assert r.dtype == np.float64
    np.testing.assert_allclose(r, naive(a.astype(np.float64), b.astype(np.float64), min_rows),
                               rtol=1e-5 if dtype == np.float32 else 1e-12)
    assert np.isnan(r[1]) and (np.isnan(r[2]) == (min_rows == 3))
    with pytest.raises(ValueError, match="equal shape"):
        pearson_columns(a, b[:, :2])
