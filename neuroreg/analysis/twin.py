"""Diagnostics of a digital twin on held-out recorded data.

For each recording (dataset) of a twin, on the images of one tier (``test``: images
with repeats, never trained on):

- predicted vs recorded responses (the repeat mean and single trials);
- per neuron: the single-trial correlation of the prediction, the correlation with the
  repeat mean, and the leave-one-out oracle correlation — the ceiling the trial-to-trial
  noise leaves (:mod:`neuroreg.twin.metrics`); the population's fraction of the oracle
  is the slope of a line through the origin of model vs oracle correlation;
- receptive-field positions read from the readout (:func:`readout_positions`), in the
  recording's image pixels, next to the true centres when the recording knows them
  (a simulated population stores ``neurons/rf_x``, ``neurons/rf_y``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from neuroreg.io import CheckpointError, load_checkpoint
from neuroreg.twin.readouts import FactorizedReadout, GaussianReadout

from .results import AnalysisError, Table, TwinRun, working_directory


# ------------------------------------------------------------------ loading
def load_twin(
    twin: TwinRun | str | os.PathLike[str],
    config: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    workdir: str | os.PathLike[str] | None = None,
) -> tuple[Any, Any]:
    """The twin and the data module it was fitted on.

    Args:
        twin: a :class:`~neuroreg.analysis.results.TwinRun` (its checkpoint, config and
            overrides are used) or a TwinModule checkpoint file.
        config: the twin's ``neuroreg fit`` config (with a checkpoint file; ignored with a TwinRun).
        overrides: ``--key=value`` arguments the twin was fitted with (idem).
        workdir: folder that relative paths inside the config (recording files, caches)
            resolve from (default: the current directory).

    Returns:
        ``(TwinModule in eval mode on the CPU, NeuralDataModule with its recordings loaded)``.

    Raises:
        AnalysisError: the twin stage is not done, the checkpoint or config is missing or
            unreadable, or the twin's readouts do not match the recordings.
    """
    from jsonargparse import ArgumentParser
    from pytorch_lightning import LightningDataModule

    from neuroreg.repro.runner import ReproError, resolved_config
    from neuroreg.targets.twin import locate_config
    from neuroreg.twin.module import TwinModule

    if isinstance(twin, TwinRun):
        if twin.status != "done" or twin.checkpoint is None:
            raise AnalysisError(f"{twin.folder}: the twin stage '{twin.name}' is {twin.status}, not done")
        ckpt, config, overrides = twin.checkpoint, twin.config, twin.overrides
    else:
        ckpt = Path(twin)
    workdir = Path(workdir) if workdir is not None else Path.cwd()
    with working_directory(workdir):
        if not Path(ckpt).is_file():
            raise AnalysisError(f"{ckpt}: file not found; expected the twin's checkpoint")
        if config is None:
            raise AnalysisError(f"{ckpt}: no twin config given (the twin was not fitted from a config); its recording is unknown")
        config = locate_config(str(config))
        if not config.is_file():
            raise AnalysisError(f"{config}: file not found; expected the twin's config (relative paths resolve from {workdir})")
        try:
            load_checkpoint(ckpt, mmap=True)
        except CheckpointError as err:
            raise AnalysisError(str(err)) from err
        try:
            model = TwinModule.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
        except Exception as err:  # torch / Lightning raise many types
            raise AnalysisError(f"{ckpt}: cannot load a TwinModule from it ({type(err).__name__}: {err})") from err
        try:
            section = resolved_config(config, list(overrides))["data"]
        except ReproError as err:
            raise AnalysisError(str(err)) from err
        parser = ArgumentParser(exit_on_error=False)
        parser.add_subclass_arguments(LightningDataModule, "data", required=True, fail_untyped=False)
        try:
            data = parser.instantiate_classes(parser.parse_object({"data": section}))["data"]
            recordings = data.recordings
        except Exception as err:  # jsonargparse and the readers raise several types
            raise AnalysisError(f"{config}: field 'data': cannot build the twin's recordings ({type(err).__name__}: {err})") from err
    if not hasattr(data, "recordings"):
        raise AnalysisError(f"{config}: field 'data': expected a NeuralDataModule (with recordings), found {type(data).__name__}")
    if set(recordings) != set(model.datasets):
        raise AnalysisError(f"{ckpt}: the twin has readouts for {sorted(model.datasets)}, its config's data has recordings {sorted(recordings)}")
    for name, rec in recordings.items():
        if rec.n_neurons != model.num_neurons[name]:
            raise AnalysisError(f"{rec.name}: field 'responses': the twin's readout '{name}' predicts {model.num_neurons[name]} neurons, the recording has {rec.n_neurons}")
    return model.eval(), data


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray, dataset: str | None = None, batch_size: int = 256) -> np.ndarray:
    """Twin predictions for images.

    Args:
        model: a TwinModule (eval mode).
        images: ``[M, C, H, W]`` float in [0, 1] or uint8.
        dataset: the readout (``None``: every readout, concatenated).
        batch_size: images per forward pass.

    Returns:
        ``[M, K]`` float64 predicted responses.
    """
    x = np.asarray(images)
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32, copy=False)
    device = next(model.parameters()).device
    out = [model(torch.from_numpy(x[i : i + batch_size]).to(device), dataset).double().cpu().numpy() for i in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 0))


# ------------------------------------------------------------ RF positions
@functools.singledispatch
def readout_positions(readout: nn.Module) -> np.ndarray:
    """Receptive-field position of every neuron of a readout, in feature-map pixels.

    ``[K, 2]`` as ``(x, y)`` = (column, row) of the core's output grid ``[C, H', W']``
    (``readout.in_shape``), sub-pixel. Implemented for
    :class:`~neuroreg.twin.readouts.GaussianReadout` (the learned mean position
    ``μ ∈ [-1, 1]²``: ``x = (μ_x + 1)/2 · (W' − 1)``, as ``grid_sample`` with
    ``align_corners=True`` reads it) and
    :class:`~neuroreg.twin.readouts.FactorizedReadout` (the centre of mass of the
    squared spatial mask, ``x = Σ_hw w · s²_nhw / Σ_hw s²_nhw``). Other readouts register
    an implementation with ``@readout_positions.register``.

    Raises:
        TypeError: a readout without an implementation.
    """
    raise TypeError(f"readout_positions: no receptive-field positions for {type(readout).__name__}; register one with @readout_positions.register")


@readout_positions.register
def _gaussian(readout: GaussianReadout) -> np.ndarray:
    _, h, w = readout.in_shape
    mu = readout.mu.detach().clamp(-1.0, 1.0).double().cpu().numpy()
    return np.stack([(mu[:, 0] + 1) / 2 * (w - 1), (mu[:, 1] + 1) / 2 * (h - 1)], axis=1)


@readout_positions.register
def _factorized(readout: FactorizedReadout) -> np.ndarray:
    s2 = readout.spatial.detach().double().cpu().numpy() ** 2  # [K, H', W']
    rows, cols = np.mgrid[0 : s2.shape[1], 0 : s2.shape[2]]
    mass = s2.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        x = (s2 * cols).sum(axis=(1, 2)) / mass
        y = (s2 * rows).sum(axis=(1, 2)) / mass
    return np.stack([x, y], axis=1)


def feature_to_image(xy: np.ndarray, feature_size: Sequence[int], input_size: Sequence[int], image_size: Sequence[int]) -> np.ndarray:
    """Map feature-map positions to pixels of the recording's images.

    Two steps, each a centre-aligned linear map: feature grid ``(H', W')`` → the twin's
    input ``(H, W)`` (``u = (x + ½) · W / W' − ½``: the identity for ``same``-padded
    cores, the centre of each output cell for strided ones), then the input → the
    recording image ``(h, w)`` by inverting
    :class:`~neuroreg.twin.transforms.StimulusTransform`'s resize-to-cover and centre
    crop (``x_img = (u + left + ½) · w / w_resized − ½``).

    Args:
        xy: ``[K, 2]`` (x, y) in feature-map pixels.
        feature_size, input_size, image_size: ``(rows, columns)`` of each grid.

    Returns:
        ``[K, 2]`` (x, y) = (column, row) in image pixels.

    Example:
        >>> xy = np.array([[0.0, 0.0], [3.0, 1.0]])  # on a 4 × 4 map of a 16 × 16 input
        >>> feature_to_image(xy, (4, 4), (16, 16), (16, 16))  # centre of each 4 × 4 cell
        array([[ 1.5,  1.5],
               [13.5,  5.5]])
    """
    xy = np.asarray(xy, dtype=np.float64)
    (fh, fw), (H, W), (h, w) = (tuple(int(v) for v in s) for s in (feature_size, input_size, image_size))
    u = (xy[:, 0] + 0.5) * W / fw - 0.5
    v = (xy[:, 1] + 0.5) * H / fh - 0.5
    if (h, w) != (H, W):
        scale = max(H / h, W / w)
        nh, nw = max(H, round(h * scale)), max(W, round(w * scale))
        top, left = (nh - H) // 2, (nw - W) // 2
        u = (u + left + 0.5) * w / nw - 0.5
        v = (v + top + 0.5) * h / nh - 0.5
    return np.stack([u, v], axis=1)


# -------------------------------------------------------------- diagnostics
@dataclass(frozen=True)
class TwinDiagnostics:
    """How well a twin predicts one recording on one tier.

    Attributes:
        dataset: the readout / recording name.
        tier: the tier evaluated.
        image_index: ``[M]`` images of the tier (indices into the recording's images).
        predicted: ``[M, K]`` twin predictions.
        repeats: ``[M, R, K]`` recorded trials (NaN-padded).
        correlation: ``[K]`` single-trial correlation of prediction and response.
        average_correlation: ``[K]`` correlation with the repeat mean.
        oracle: ``[K]`` leave-one-out oracle correlation (NaN with < 2 repeats).
        fraction_oracle: slope of ``correlation`` on ``oracle`` through the origin.
        summary: neuron-averaged metrics (:func:`neuroreg.twin.metrics.summary`).
        rf_predicted: ``[K, 2]`` readout RF positions (x, y) in image pixels, or ``None``.
        rf_true: ``[K, 2]`` true RF centres when the recording has ``rf_x`` / ``rf_y``.
        image_size: ``(rows, columns)`` of the recording's images.
        neuron_ids: ``[K]`` the recording's neuron ids.
    """

    dataset: str
    tier: str
    image_index: np.ndarray
    predicted: np.ndarray
    repeats: np.ndarray
    correlation: np.ndarray
    average_correlation: np.ndarray
    oracle: np.ndarray
    fraction_oracle: float
    summary: dict[str, float]
    rf_predicted: np.ndarray | None
    rf_true: np.ndarray | None
    image_size: tuple[int, int]
    neuron_ids: np.ndarray

    @property
    def recorded_mean(self) -> np.ndarray:
        """``[M, K]`` mean over recorded repeats."""
        from neuroreg.twin.metrics import repeat_mean

        return repeat_mean(self.repeats)

    @property
    def rf_error(self) -> np.ndarray | None:
        """``[K]`` distance (image pixels) between readout and true RF positions, or ``None``."""
        if self.rf_predicted is None or self.rf_true is None:
            return None
        return np.linalg.norm(self.rf_predicted - self.rf_true, axis=1)


def diagnose(model: Any, recordings: Mapping[str, Any], tier: str = "test", batch_size: int = 256) -> list[TwinDiagnostics]:
    """Predict every recording's ``tier`` images with its readout and measure the fit.

    Args:
        model: a TwinModule (eval mode).
        recordings: ``{dataset: NeuralRecording}`` (e.g. ``datamodule.recordings`` from :func:`load_twin`).
        tier: the tier to evaluate (use one the twin was not trained on).
        batch_size: images per forward pass.

    Returns:
        one :class:`TwinDiagnostics` per dataset, in the twin's readout order.

    Raises:
        AnalysisError: a recording without that tier.
    """
    from neuroreg.twin import metrics

    out = []
    for name in model.datasets:
        rec = recordings[name]
        if tier not in rec.tiers:
            raise AnalysisError(f"{rec.name}: field 'trial_tier': expected a '{tier}' tier to diagnose the twin on, found {rec.tiers}")
        index, reps = rec.repeats(tier)
        pred = predict(model, rec.images[index], name, batch_size)
        readout = model.readout[name]
        try:
            feat = readout_positions(readout)
        except TypeError:  # a readout without positions: no RF panel
            rf = None
        else:
            rf = feature_to_image(feat, readout.in_shape[1:], model.transform.size, rec.images.shape[2:])
        true = None
        if "rf_x" in rec.neurons and "rf_y" in rec.neurons:
            true = np.stack([rec.neurons["rf_x"], rec.neurons["rf_y"]], axis=1).astype(np.float64)
        out.append(TwinDiagnostics(
            dataset=name, tier=tier, image_index=index, predicted=pred, repeats=reps.astype(np.float64),
            correlation=metrics.single_trial_correlation(pred, reps), average_correlation=metrics.average_correlation(pred, reps),
            oracle=metrics.oracle_correlation(reps), fraction_oracle=metrics.fraction_oracle_slope(pred, reps),
            summary=metrics.summary(pred, reps), rf_predicted=rf, rf_true=true,
            image_size=tuple(int(s) for s in rec.images.shape[2:]), neuron_ids=np.asarray(rec.neurons["ids"]),
        ))
    return out


def summary_table(diagnostics: Sequence[TwinDiagnostics]) -> Table:
    """One row per dataset: images, neurons, repeats and the neuron-averaged metrics."""

    def f(v: float | None) -> str:
        return "–" if v is None or not np.isfinite(v) else f"{v:.3f}"

    rows = []
    for d in diagnostics:
        err = d.rf_error
        n_rep = int(np.max((~np.isnan(d.repeats)).sum(axis=1))) if d.repeats.size else 0
        rows.append([d.dataset, d.tier, str(len(d.image_index)), str(d.predicted.shape[1]), str(n_rep),
                     f(d.summary.get("correlation")), f(d.summary.get("average_correlation")), f(d.summary.get("oracle_correlation")),
                     f(d.fraction_oracle), f(d.summary.get("fev")), "–" if err is None else f"{np.nanmedian(err):.2f}"])
    return Table(["dataset", "tier", "images", "neurons", "max repeats", "correlation", "corr. to average", "oracle",
                  "fraction of oracle", "FEV", "median RF error (px)"], rows, title="Twin on held-out images (neuron averages)")


# ------------------------------------------------------------------- plots
def plot_predicted_vs_recorded(d: TwinDiagnostics, n_examples: int = 3) -> Any:
    """Left: predicted vs repeat-mean response, all neurons and images (identity line).
    Right: ``n_examples`` neurons (best, median, worst single-trial correlation), single
    trials in grey and the repeat mean in black against the prediction.

    Returns:
        a matplotlib ``Figure``.
    """
    from matplotlib.figure import Figure

    mean = d.recorded_mean
    order = [k for k in np.argsort(-np.nan_to_num(d.correlation, nan=-2.0)) if np.isfinite(d.correlation[k])]
    picks = [order[round(i * (len(order) - 1) / max(1, n_examples - 1))] for i in range(n_examples)] if order else []
    picks = list(dict.fromkeys(picks))
    fig = Figure(figsize=(3.4 * (1 + len(picks)), 3.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, 1 + len(picks), squeeze=False)[0])
    ax = axes[0]
    ok = np.isfinite(mean)
    ax.scatter(d.predicted[ok], mean[ok], s=5, alpha=0.4, color="tab:blue", edgecolors="none")
    hi = float(max(np.nanmax(d.predicted), np.nanmax(mean), 1e-6))
    ax.plot([0, hi], [0, hi], color="k", lw=0.8, ls="--")
    ax.set(xlabel="predicted", ylabel="recorded (mean over repeats)", title=f"{d.dataset}: all neurons, {d.tier} images")
    for ax, k in zip(axes[1:], picks):
        for r in range(d.repeats.shape[1]):
            ax.scatter(d.predicted[:, k], d.repeats[:, r, k], s=6, color="0.7", edgecolors="none")
        ax.scatter(d.predicted[:, k], mean[:, k], s=10, color="k", edgecolors="none")
        ax.set(xlabel="predicted", title=f"neuron {d.neuron_ids[k]}: r = {d.correlation[k]:.2f} (oracle {d.oracle[k]:.2f})")
    if len(axes) > 1:
        axes[1].set_ylabel("trials (grey), mean (black)")
    return fig


def plot_oracle(d: TwinDiagnostics) -> Any:
    """Per neuron: the twin's single-trial correlation against the oracle correlation,
    with the identity (the noise ceiling) and the fraction-of-oracle line through the origin.

    Returns:
        a matplotlib ``Figure``.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2, 4.0), layout="constrained")
    ax = fig.subplots()
    ok = np.isfinite(d.oracle) & np.isfinite(d.correlation)
    ax.scatter(d.oracle[ok], d.correlation[ok], s=12, alpha=0.7, edgecolors="none")
    hi = float(max(np.nanmax(np.abs(d.oracle[ok])) if ok.any() else 1.0, 0.05)) * 1.05
    ax.plot([0, hi], [0, hi], color="k", lw=0.8, ls="--", label="ceiling (y = x)")
    if np.isfinite(d.fraction_oracle):
        ax.plot([0, hi], [0, hi * d.fraction_oracle], color="tab:red", lw=1.2, label=f"fraction of oracle = {d.fraction_oracle:.2f}")
    ax.set(xlabel="oracle correlation (leave one repeat out)", ylabel="twin: single-trial correlation",
           title=f"{d.dataset}: {int(ok.sum())} neurons, {d.tier} images")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def plot_rf_positions(d: TwinDiagnostics) -> Any:
    """Left: readout RF positions on the image frame (true centres and a line to each
    readout position, when known). Right: position error against the neuron's
    single-trial correlation (well-predicted neurons should have accurate positions).

    Raises:
        AnalysisError: the readout has no RF positions.

    Returns:
        a matplotlib ``Figure``.
    """
    from matplotlib.figure import Figure

    if d.rf_predicted is None:
        raise AnalysisError(f"plot_rf_positions: the readout of dataset '{d.dataset}' has no receptive-field positions")
    err = d.rf_error
    fig = Figure(figsize=(8.0 if err is not None else 4.2, 4.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, 2 if err is not None else 1, squeeze=False)[0])
    ax = axes[0]
    h, w = d.image_size
    if d.rf_true is not None:
        for (x0, y0), (x1, y1) in zip(d.rf_true, d.rf_predicted):
            ax.plot([x0, x1], [y0, y1], color="0.6", lw=0.6)
        ax.scatter(d.rf_true[:, 0], d.rf_true[:, 1], s=14, color="k", marker="x", label="true centre")
    ax.scatter(d.rf_predicted[:, 0], d.rf_predicted[:, 1], s=14, color="tab:orange", label="readout position")
    ax.set(xlim=(-0.5, w - 0.5), ylim=(h - 0.5, -0.5), aspect="equal", xlabel="x (pixels)", ylabel="y (pixels)",
           title=f"{d.dataset}: receptive-field positions")
    ax.legend(fontsize=8, loc="lower right")
    if err is not None:
        ax = axes[1]
        ax.scatter(d.correlation, err, s=12, alpha=0.7, edgecolors="none")
        ax.set(xlabel="twin: single-trial correlation", ylabel="position error (pixels)", title=f"median error {np.nanmedian(err):.2f} px")
        ax.grid(alpha=0.3)
    return fig
