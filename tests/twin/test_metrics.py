"""Twin metrics against naive loop references, with NaN (not recorded) entries."""

import numpy as np
import pytest

from neuroreg.stats import pearson_columns
from neuroreg.twin import metrics


def naive_corr(a, b):
    ok = [i for i in range(len(a)) if np.isfinite(a[i]) and np.isfinite(b[i])]
    if len(ok) < 2:
        return np.nan
    x, y = np.array([a[i] for i in ok]), np.array([b[i] for i in ok])
    if x.std() == 0 or y.std() == 0:
        return np.nan
    return float(np.sum((x - x.mean()) * (y - y.mean())) / np.sqrt(np.sum((x - x.mean()) ** 2) * np.sum((y - y.mean()) ** 2)))


def data(seed=0, m=12, r=4, k=5, nan_fraction=0.15):
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=(m, k))
    repeats = signal[:, None] + rng.normal(scale=0.7, size=(m, r, k))
    repeats[rng.random(repeats.shape) < nan_fraction] = np.nan
    pred = signal + rng.normal(scale=0.3, size=(m, k))
    return pred, repeats


def test_correlation_matches_loop():
    pred, reps = data()
    y = reps[:, 0]
    ref = [naive_corr(pred[:, j], y[:, j]) for j in range(pred.shape[1])]
    np.testing.assert_allclose(pearson_columns(pred, y), ref, rtol=1e-10)


def test_single_trial_and_average_correlation_match_loops():
    pred, reps = data(1)
    m, r, k = reps.shape
    for j in range(k):
        a, b = [], []
        for i in range(m):
            for t in range(r):
                a.append(pred[i, j])
                b.append(reps[i, t, j])
        assert metrics.single_trial_correlation(pred, reps)[j] == pytest.approx(naive_corr(a, b))
        means = [np.mean([v for v in reps[i, :, j] if not np.isnan(v)]) if (~np.isnan(reps[i, :, j])).any() else np.nan for i in range(m)]
        assert metrics.average_correlation(pred, reps)[j] == pytest.approx(naive_corr(pred[:, j], means))


def test_oracle_matches_leave_one_out_loop():
    _, reps = data(2)
    m, r, k = reps.shape
    for j in range(k):
        trial, loo = [], []
        for i in range(m):
            rec = [t for t in range(r) if not np.isnan(reps[i, t, j])]
            if len(rec) < 2:
                continue
            for t in rec:
                trial.append(reps[i, t, j])
                loo.append(np.mean([reps[i, u, j] for u in rec if u != t]))
        assert metrics.oracle_correlation(reps)[j] == pytest.approx(naive_corr(trial, loo))


def test_fev_matches_loop_and_is_one_for_the_truth():
    pred, reps = data(3, nan_fraction=0.1)
    m, r, k = reps.shape
    for j in range(k):
        trials = [(i, reps[i, t, j]) for i in range(m) for t in range(r) if not np.isnan(reps[i, t, j])]
        mse = np.mean([(pred[i, j] - v) ** 2 for i, v in trials])
        noise = np.mean([np.var([v for v in reps[i, :, j] if not np.isnan(v)], ddof=1) for i in range(m) if (~np.isnan(reps[i, :, j])).sum() >= 2])
        total = np.var([v for _, v in trials], ddof=1)
        assert metrics.fev(pred, reps)[j] == pytest.approx(1 - (mse - noise) / (total - noise))
    # with many repeats, the true signal explains ~all explainable variance
    rng = np.random.default_rng(0)
    signal = rng.normal(size=(200, 3))
    reps = signal[:, None] + rng.normal(scale=0.5, size=(200, 50, 3))
    np.testing.assert_allclose(metrics.fev(signal, reps), 1.0, atol=0.05)


def test_fraction_oracle_and_summary():
    pred, reps = data(4)
    ratio = metrics.fraction_oracle(pred, reps)
    np.testing.assert_allclose(ratio, metrics.single_trial_correlation(pred, reps) / metrics.oracle_correlation(reps))
    s = metrics.summary(pred, reps)
    assert set(s) == {"correlation", "average_correlation", "oracle_correlation", "fev", "fraction_oracle"}
    assert all(np.isfinite(v) for v in s.values())
    with pytest.warns(metrics.NoRepeatsWarning, match=r"val: no image of the \d+ evaluated has >= 2 recorded repeats"):
        single = metrics.summary(pred, reps[:, :1], "val")
    assert set(single) == {"correlation", "average_correlation"}
    assert metrics.repeated_images(reps[:, :1]) == 0 and metrics.repeated_images(reps) == len(reps)


def test_all_nan_neuron_gives_nan_and_is_ignored_by_average():
    pred, reps = data(5)
    reps[:, :, 0] = np.nan
    assert np.isnan(metrics.single_trial_correlation(pred, reps)[0])
    assert np.isfinite(metrics.average(metrics.single_trial_correlation(pred, reps)))
    assert np.isnan(metrics.average(np.full(3, np.nan)))


def test_correlation_invariant_to_affine_maps_and_shape_errors():
    pred, reps = data(6)
    np.testing.assert_allclose(metrics.average_correlation(3 * pred + 1, reps), metrics.average_correlation(pred, reps))
    with pytest.raises(ValueError, match=r"pred \[M, K\] and repeats \[M, R, K\]"):
        metrics.fev(pred[:3], reps)
