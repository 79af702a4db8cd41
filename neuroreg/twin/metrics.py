"""Prediction quality of a twin, per neuron, NaN-aware (NaN = not recorded).

Conventions: ``pred`` ``[M, K]`` predicted responses to M images; ``repeats``
``[M, R, K]`` recorded trials per image, NaN-padded (as returned by
:meth:`neuroreg.data.recording.NeuralRecording.repeats`). Every function returns a
``[K]`` float64 array (NaN where a neuron has too little data); average across
neurons with :func:`average` (``nanmean``: the neurons with a finite value).

The oracle metrics (:func:`oracle_correlation`, :func:`fev`, :func:`fraction_oracle`)
need images shown at least twice: without such repeats :func:`summary` leaves them out
and says so with a :class:`NoRepeatsWarning`.
"""

from __future__ import annotations

import warnings

import numpy as np

from neuroreg.stats import pearson_columns


class NoRepeatsWarning(UserWarning):
    """No image has >= 2 recorded repeats: the oracle metrics cannot be computed."""


def _check(pred: np.ndarray, repeats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    repeats = np.asarray(repeats, dtype=np.float64)
    if repeats.ndim != 3 or pred.ndim != 2 or pred.shape != (repeats.shape[0], repeats.shape[2]):
        raise ValueError(f"metrics: expected pred [M, K] and repeats [M, R, K], found {pred.shape} and {repeats.shape}")
    return pred, repeats


def single_trial_correlation(pred: np.ndarray, repeats: np.ndarray) -> np.ndarray:
    """Correlation of the prediction with every single trial.

    ``ρ_k = corr_{(m, r) recorded}(ŷ_mk, y_mrk)``: the prediction for image ``m`` is
    paired with each of its recorded trials.
    """
    pred, repeats = _check(pred, repeats)
    m, r, k = repeats.shape
    return pearson_columns(np.broadcast_to(pred[:, None], repeats.shape).reshape(m * r, k), repeats.reshape(m * r, k))


def repeat_mean(repeats: np.ndarray) -> np.ndarray:
    """``[M, K]`` mean over recorded repeats (NaN where none)."""
    repeats = np.asarray(repeats, dtype=np.float64)
    valid = ~np.isnan(repeats)
    count = valid.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.where(valid, repeats, 0.0).sum(1) / count, np.nan)


def average_correlation(pred: np.ndarray, repeats: np.ndarray) -> np.ndarray:
    """Correlation with the repeat-averaged response: ``ρ_k = corr_m(ŷ_mk, ȳ_mk)``, ``ȳ_mk = mean_r y_mrk``."""
    pred, repeats = _check(pred, repeats)
    return pearson_columns(pred, repeat_mean(repeats))


def oracle_correlation(repeats: np.ndarray) -> np.ndarray:
    """Leave-one-out oracle: how well the other repeats predict a trial.

    ``ρ_k = corr_{(m, r)}(y_mrk, ō_mrk)``, ``ō_mrk = mean_{r' ≠ r} y_mr'k``, over the
    recorded trials of images with at least 2 recorded repeats (for that neuron).
    An upper bound (up to noise) for a model's single-trial correlation.
    """
    repeats = np.asarray(repeats, dtype=np.float64)
    if repeats.ndim != 3:
        raise ValueError(f"oracle_correlation: expected repeats [M, R, K], found {repeats.shape}")
    valid = ~np.isnan(repeats)
    count = valid.sum(axis=1, keepdims=True)
    total = np.where(valid, repeats, 0.0).sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        loo = np.where(valid & (count >= 2), (total - np.where(valid, repeats, 0.0)) / (count - 1), np.nan)
    m, r, k = repeats.shape
    return pearson_columns(loo.reshape(m * r, k), repeats.reshape(m * r, k))


def fev(pred: np.ndarray, repeats: np.ndarray) -> np.ndarray:
    """Fraction of explainable variance explained (Cadena et al. 2019).

    ``FEV_k = 1 − (MSE_k − σ²_noise,k) / (Var_k − σ²_noise,k)`` with
    ``MSE_k = mean_{(m,r)} (ŷ_mk − y_mrk)²`` over recorded trials,
    ``σ²_noise,k = mean_m Var_r(y_mrk)`` (unbiased variance over the repeats of each
    image with >= 2 repeats, averaged over those images only) and ``Var_k`` the
    (unbiased) variance of all recorded trials, images with a single trial included.
    NaN when the explainable variance ``Var_k − σ²_noise,k`` is not positive (a neuron
    whose repeats vary as much as its responses across images) or when no image has 2
    repeats for the neuron; values are not clipped, so an unreliable neuron can give a
    large negative FEV. The population FEV of :func:`summary` is the plain mean of the
    finite ``FEV_k``, i.e. over the neurons with positive explainable variance only.
    """
    pred, repeats = _check(pred, repeats)
    valid = ~np.isnan(repeats)
    n = valid.sum(axis=(0, 1))
    err = np.where(valid, (pred[:, None] - np.where(valid, repeats, 0.0)) ** 2, 0.0).sum(axis=(0, 1))
    count = valid.sum(axis=1)  # [M, K]
    with np.errstate(invalid="ignore", divide="ignore"):
        mse = err / n
        mean_img = np.where(valid, repeats, 0.0).sum(1) / count
        var_img = np.where(valid, (repeats - mean_img[:, None]) ** 2, 0.0).sum(1) / (count - 1)
        use = count >= 2
        noise = np.where(use, var_img, 0.0).sum(0) / use.sum(0)
        mean_all = np.where(valid, repeats, 0.0).sum((0, 1)) / n
        total_var = np.where(valid, (repeats - mean_all) ** 2, 0.0).sum((0, 1)) / (n - 1)
        explainable = total_var - noise
        out = 1.0 - (mse - noise) / explainable
    out[~(explainable > 0)] = np.nan
    return out


def fraction_oracle(pred: np.ndarray, repeats: np.ndarray) -> np.ndarray:
    """Per-neuron single-trial correlation relative to the oracle: ``ρ_k / ρ^oracle_k``.

    ``ρ_k`` is :func:`single_trial_correlation` (the model's prediction vs each trial) and
    ``ρ^oracle_k`` the leave-one-out :func:`oracle_correlation`. This per-neuron ratio is
    not what :func:`summary` reports: its ``fraction_oracle`` is
    :func:`fraction_oracle_slope`, a slope across neurons, which is robust to neurons
    with a tiny oracle.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        return single_trial_correlation(pred, repeats) / oracle_correlation(repeats)


def fraction_oracle_slope(pred: np.ndarray, repeats: np.ndarray) -> float:
    """The population's fraction of oracle: a slope across neurons, not a mean of ratios.

    ``Σ_k ρ_k ρ^oracle_k / Σ_k (ρ^oracle_k)²``: the least-squares slope of the line
    through the origin that fits the model's single-trial correlation ``ρ_k``
    (:func:`single_trial_correlation`, the y axis) against the leave-one-out oracle
    correlation ``ρ^oracle_k`` (:func:`oracle_correlation`, the x axis), one point per
    neuron, over the neurons where both are finite (as Sensorium 2022 reports it).
    Neurons with a large oracle weigh most; 1 means the model's correlation is on
    average as high as the other repeats' mean achieves. NaN when no neuron has an
    oracle.
    """
    rho = single_trial_correlation(pred, repeats)
    oracle = oracle_correlation(repeats)
    ok = np.isfinite(rho) & np.isfinite(oracle)
    den = float((oracle[ok] ** 2).sum())
    return float((rho[ok] * oracle[ok]).sum() / den) if den > 0 else float("nan")


def average(values: np.ndarray) -> float:
    """Mean over neurons, ignoring NaN (NaN when all are NaN)."""
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def repeated_images(repeats: np.ndarray) -> int:
    """Number of images with >= 2 recorded repeats for some neuron (what the oracle metrics need)."""
    return int((np.sum(~np.isnan(np.asarray(repeats)), axis=1) >= 2).any(axis=1).sum())


def summary(pred: np.ndarray, repeats: np.ndarray, where: str = "") -> dict[str, float]:
    """Metrics over neurons.

    ``correlation`` (mean over neurons of :func:`single_trial_correlation`),
    ``average_correlation`` (mean of :func:`average_correlation`) and, when some image has
    >= 2 recorded repeats, ``oracle_correlation`` (mean of :func:`oracle_correlation`),
    ``fev`` (mean of :func:`fev` over the neurons where it is finite: positive
    explainable variance) and ``fraction_oracle`` (:func:`fraction_oracle_slope`, the
    slope of single-trial correlation on oracle correlation across neurons). Every
    mean skips the neurons whose value is NaN.

    Without such repeats the three oracle metrics are left out, with a
    :class:`NoRepeatsWarning` naming ``where`` (e.g. the stage and the recording).
    """
    out = {
        "correlation": average(single_trial_correlation(pred, repeats)),
        "average_correlation": average(average_correlation(pred, repeats)),
    }
    if repeated_images(repeats):
        out["oracle_correlation"] = average(oracle_correlation(repeats))
        out["fev"] = average(fev(pred, repeats))
        out["fraction_oracle"] = fraction_oracle_slope(pred, repeats)
    else:
        warnings.warn(
            f"{where + ': ' if where else ''}no image of the {np.asarray(repeats).shape[0]} evaluated has >= 2 recorded "
            "repeats: oracle_correlation, fev and fraction_oracle are not computed (they need images shown at least "
            "twice; give repeated trials of the held-out images)",
            NoRepeatsWarning,
            stacklevel=2,
        )
    return out
