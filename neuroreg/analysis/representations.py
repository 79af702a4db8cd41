"""Representations of trained classifiers, layer by layer.

For a set of probe images (e.g. a few test images per class, ordered by class):

- **RDMs** (Kriegeskorte et al. 2008): ``1 − Pearson r`` between the layer's
  population vectors for every pair of images
  (:func:`neuroreg.regularizers.functional.rdm`, the same function the RSA regularizer
  trains with); with images ordered by class, class structure shows as dark blocks on
  the diagonal.
- **Eigenspectra** of the layer's covariance over images
  (:func:`~neuroreg.regularizers.functional.eigenspectrum`) with the exponent α of a
  power law ``λ_n ∝ n^{-α}`` fitted in log–log
  (:func:`~neuroreg.regularizers.functional.power_law_fit`; Stringer et al. 2019 measure
  α ≈ 1 in mouse V1, the target of the spectral regularizers). Only ``images − 1``
  eigenvalues can be non-zero: fit well below that.
- **Brain-similarity profiles** against a recording: cross-validated ridge / PLS
  predictivity (÷ split-half ceiling), RSA and linear CKA per layer
  (:func:`neuroreg.evaluation.brain.brain_similarity`), mean ± 95 % CI over seeds.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .results import AnalysisError, FitRun, ReproResults, Table

#: brain-similarity measures of a profile: ``key -> axis label``
MEASURES: dict[str, str] = {
    "ridge": "ridge predictivity (÷ ceiling)",
    "pls": "PLS predictivity (÷ ceiling)",
    "rsa": "RSA (Spearman)",
    "cka": "linear CKA",
}


def load_classifier(run: FitRun) -> Any:
    """The trained classifier of a finished fit (eval mode, CPU).

    Raises:
        AnalysisError: the fit is not done; or the checkpoint / config cannot be read
            (the message of :func:`neuroreg.evaluation.commands.load_model`).
    """
    from neuroreg.evaluation.commands import EvalError, load_model

    if run.status != "done" or run.checkpoint is None or run.config is None:
        raise AnalysisError(f"{run.folder}: the fit of arm '{run.arm}' seed {run.seed} is {run.status}, not done")
    try:
        return load_model(run.checkpoint, run.config)
    except EvalError as err:
        raise AnalysisError(str(err)) from err


def probe_images(run: FitRun, per_class: int = 10, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """The first ``per_class`` images of each class of the run's image set, ordered by class.

    Args:
        run: a finished fit (its ``config.yaml`` names the image set).
        per_class: images per class (fewer when a class has fewer).
        split: ``train``, ``validation`` or ``test``.

    Returns:
        ``(images [N, C, H, W] float32 in [0, 1], labels [N] int64)``.

    Raises:
        AnalysisError: the run has no config, or its data has no image set.
    """
    from neuroreg.evaluation.commands import EvalError, load_data

    if run.config is None:
        raise AnalysisError(f"{run.folder}: the fit of arm '{run.arm}' seed {run.seed} is {run.status}; its config is not written yet")
    if per_class < 1:
        raise ValueError(f"probe_images: 'per_class': expected >= 1, found {per_class}")
    try:
        data = load_data(run.config)
    except EvalError as err:
        raise AnalysisError(str(err)) from err
    images = getattr(data, "images", None)
    if images is None or not hasattr(images, "split"):
        raise AnalysisError(f"{run.config}: field 'data.init_args.images': expected an image set, found {type(images).__name__}")
    part = images.split(split)
    labels = np.asarray(part.labels)
    index = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)])
    return part.images_float()[index].astype(np.float32), labels[index].astype(np.int64)


def default_layers(model: Any) -> list[str]:
    """The backbone's stages: its direct children named ``layer…`` (ResNets), else all
    its direct children with parameters."""
    backbone = getattr(model, "backbone", model)
    names = [n for n, _ in backbone.named_children() if n.startswith("layer")]
    return names or [n for n, m in backbone.named_children() if any(True for _ in m.parameters())]


def layer_features(model: Any, images: np.ndarray, layers: Sequence[str], batch_size: int = 128) -> dict[str, np.ndarray]:
    """Flattened activations ``{layer: [N, units]}`` (float64) of ``model.backbone``'s
    submodules on ``images`` ``[N, C, H, W]`` in [0, 1]
    (:func:`neuroreg.evaluation.brain.layer_activations`)."""
    from neuroreg.evaluation.brain import layer_activations

    model.eval()
    return layer_activations(model, torch.as_tensor(np.asarray(images, dtype=np.float32)), list(layers), batch_size=batch_size)


def rdms(features: Mapping[str, np.ndarray], metric: str = "correlation") -> dict[str, np.ndarray]:
    """``{layer: [N, N]}`` representational dissimilarity matrices
    (:func:`neuroreg.regularizers.functional.rdm`)."""
    from neuroreg.regularizers.functional import rdm

    return {layer: rdm(torch.as_tensor(f, dtype=torch.float64), metric=metric).numpy() for layer, f in features.items()}


@dataclass(frozen=True)
class Spectrum:
    """Eigenspectrum of one layer and its fitted power-law exponent.

    Attributes:
        eigenvalues: ``[m]`` descending, ``m = min(images, units)``.
        alpha: fitted α of ``λ_n ∝ n^{-α}`` over ``n_min … n_max``.
        n_min, n_max: the fitted index range (1-based, inclusive).
    """

    eigenvalues: np.ndarray
    alpha: float
    n_min: int
    n_max: int


def spectrum(features: np.ndarray, n_min: int = 1, n_max: int | None = None) -> Spectrum:
    """Eigenspectrum of ``features`` ``[N, units]`` and its power-law fit.

    Args:
        features: ``[N, units]`` (N >= 3 images).
        n_min: first fitted index (1-based).
        n_max: last fitted index (default: ``(min(N, units) − 1) // 2``, at least
            ``n_min + 1``: the upper part of a finite-sample spectrum falls off faster
            than the population's).

    Raises:
        ValueError: a fit range outside the spectrum (from
            :func:`~neuroreg.regularizers.functional.power_law_fit`).

    Example:
        >>> features = np.random.default_rng(0).normal(size=(500, 50)) * np.arange(1, 51) ** -0.5
        >>> s = spectrum(features)  # variances 1/n: a power law with exponent 1
        >>> s.eigenvalues.shape, s.n_max, round(s.alpha, 1)
        ((50,), 24, 1.0)
    """
    from neuroreg.regularizers.functional import eigenspectrum, power_law_fit

    lam = eigenspectrum(torch.as_tensor(np.asarray(features), dtype=torch.float64))
    m = int(lam.shape[0])
    n_max = n_max if n_max is not None else min(m, max(n_min + 1, (m - 1) // 2))
    alpha = float(power_law_fit(lam, n_min, n_max))
    return Spectrum(lam.numpy(), alpha, n_min, n_max)


@dataclass(frozen=True)
class Profile:
    """Brain similarity per layer of one arm, over seeds.

    Attributes:
        layers: the layers, in depth order.
        values: ``{measure: [seeds, layers]}`` for the keys of :data:`MEASURES`.
        seeds: the seeds measured.
    """

    layers: list[str]
    values: dict[str, np.ndarray]
    seeds: list[int]

    def mean_ci(self, measure: str) -> tuple[np.ndarray, np.ndarray]:
        """``(mean [layers], 95 % t-interval half-width [layers])`` of ``measure`` over seeds (NaN ignored)."""
        from neuroreg.stats import t_interval

        v = self.values[measure]
        stats = [t_interval([x for x in v[:, j] if np.isfinite(x)]) if np.isfinite(v[:, j]).any() else (np.nan, np.nan)
                 for j in range(v.shape[1])]
        return np.asarray([m for m, _ in stats]), np.asarray([h for _, h in stats])


def profile_recording(results: ReproResults, recording: str | os.PathLike[str] | None = None, twin: int = 0) -> Any:
    """The recording to compute brain-similarity profiles against.

    Args:
        results: from :func:`~neuroreg.analysis.results.load_repro`.
        recording: a NeuralRecording ``.h5`` file; default: the recording the
            reproduction's twin number ``twin`` was fitted on (its first dataset).
        twin: which of ``results.twins``.

    Raises:
        AnalysisError: no recording given and the reproduction fitted no twin.
    """
    from neuroreg.data.recording import NeuralRecording

    from .twin import load_twin

    if recording is not None:
        return NeuralRecording.load(Path(recording))
    if len(results.twins) <= twin:
        raise AnalysisError(f"{results.out}: the reproduction fitted {len(results.twins)} twin(s), so it has no recording "
                            f"to compare with; pass a NeuralRecording file as `recording`")
    _, data = load_twin(results.twins[twin], workdir=results.workdir)
    return next(iter(data.recordings.values()))


def brain_profiles(
    models: Mapping[str, Sequence[tuple[int, Any]]],
    recording: Any,
    layers: Sequence[str],
    tier: str | None = "test",
    image_size: int | None = None,
    n_folds: int = 5,
) -> dict[str, Profile]:
    """Brain similarity per layer of every model (:func:`neuroreg.evaluation.brain.brain_similarity`).

    Args:
        models: ``{arm: [(seed, classifier), ...]}``.
        recording: a NeuralRecording or the path of one.
        layers: backbone module paths, in depth order.
        tier: the recording's tier (use images no model was trained on).
        image_size: the models' input size (default: each model's built size, else the recording's).
        n_folds: cross-validation folds of the predictivity.

    Returns:
        ``{arm: Profile}``.
    """
    from neuroreg.evaluation.brain import brain_similarity

    out: dict[str, Profile] = OrderedDict()
    for arm, seeded in models.items():
        rows: dict[str, list[list[float]]] = {k: [] for k in MEASURES}
        for _, model in seeded:
            size = image_size or getattr(model, "_built_size", None)
            res = brain_similarity(model, recording, list(layers), tier=tier, image_size=size, n_folds=n_folds)
            for k in MEASURES:
                vals = res[k]["score"] if k in ("ridge", "pls") else res[k]
                rows[k].append([np.nan if v is None else float(v) for v in vals])
        out[arm] = Profile(list(layers), {k: np.asarray(v, dtype=float).reshape(len(seeded), len(layers)) for k, v in rows.items()},
                           [s for s, _ in seeded])
    return out


# ------------------------------------------------------------------- tables
def alpha_table(spectra: Mapping[str, Sequence[Mapping[str, Spectrum]]]) -> Table:
    """Fitted α per arm (rows) and layer (columns), mean ± 95 % CI over seeds.

    Args:
        spectra: ``{arm: [{layer: Spectrum} per seed]}``.
    """
    from neuroreg.stats import t_interval

    layers = list(next(iter(spectra.values()))[0])
    rows = []
    for arm, per_seed in spectra.items():
        cells = []
        for layer in layers:
            m, h = t_interval([s[layer].alpha for s in per_seed])
            cells.append(f"{m:.2f}" if len(per_seed) < 2 else f"{m:.2f} ± {h:.2f}")
        rows.append([arm, *cells])
    first = next(iter(spectra.values()))[0][layers[0]]
    return Table(["arm", *layers], rows, title=f"power-law α (fitted over n = {first.n_min}…{first.n_max}), mean ± 95 % CI over seeds")


def profile_table(profiles: Mapping[str, Profile], measure: str = "ridge") -> Table:
    """``measure`` per arm (rows) and layer (columns), mean ± 95 % CI over seeds."""
    if measure not in MEASURES:
        raise KeyError(f"profile_table: unknown measure {measure!r}; expected one of {list(MEASURES)}")
    layers = next(iter(profiles.values())).layers
    rows = []
    for arm, p in profiles.items():
        mean, half = p.mean_ci(measure)
        rows.append([arm, *("–" if not np.isfinite(m) else (f"{m:.3f}" if len(p.seeds) < 2 else f"{m:.3f} ± {h:.3f}") for m, h in zip(mean, half))])
    return Table(["arm", *layers], rows, title=f"{MEASURES[measure]}, mean ± 95 % CI over seeds")


# -------------------------------------------------------------------- plots
def plot_rdms(matrices: Mapping[str, Mapping[str, np.ndarray]], labels: np.ndarray | None = None) -> Any:
    """A grid of RDMs: one row per arm, one column per layer (shared colour scale 0…2
    clipped to the data's range); class boundaries drawn when ``labels`` are given.

    Args:
        matrices: ``{arm: {layer: [N, N]}}``.
        labels: ``[N]`` class of each image (images ordered by class).

    Returns:
        a matplotlib ``Figure``.
    """
    from matplotlib.figure import Figure

    arms = list(matrices)
    layers = list(matrices[arms[0]])
    vmax = max(float(np.max(d)) for a in arms for d in matrices[a].values())
    fig = Figure(figsize=(2.6 * len(layers) + 0.8, 2.5 * len(arms)), layout="constrained")
    axes = fig.subplots(len(arms), len(layers), squeeze=False)
    bounds = np.flatnonzero(np.diff(labels)) + 0.5 if labels is not None else []
    im = None
    for i, arm in enumerate(arms):
        for j, layer in enumerate(layers):
            ax = axes[i, j]
            im = ax.imshow(matrices[arm][layer], vmin=0.0, vmax=vmax, cmap="viridis", interpolation="nearest")
            for b in bounds:
                ax.axhline(b, color="w", lw=0.4)
                ax.axvline(b, color="w", lw=0.4)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(layer)
            if j == 0:
                ax.set_ylabel(arm)
    fig.colorbar(im, ax=axes, shrink=0.8, label="1 − Pearson r")
    return fig


def plot_spectra(spectra: Mapping[str, Mapping[str, Spectrum]]) -> Any:
    """Eigenspectra on log–log axes, one panel per layer, one line per arm, with the
    fitted power law over its range (dashed) and α in the legend.

    Args:
        spectra: ``{arm: {layer: Spectrum}}`` (e.g. one seed per arm).

    Returns:
        a matplotlib ``Figure``.
    """
    from matplotlib.figure import Figure

    arms = list(spectra)
    layers = list(spectra[arms[0]])
    fig = Figure(figsize=(3.4 * len(layers) + 0.4, 3.3), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(layers), squeeze=False)[0])
    for ax, layer in zip(axes, layers):
        for arm in arms:
            s = spectra[arm][layer]
            lam = s.eigenvalues / max(float(s.eigenvalues[0]), 1e-30)
            n = np.arange(1, len(lam) + 1)
            pos = lam > 1e-12  # the rank is at most images − 1: the rest is round-off
            line = ax.loglog(n[pos], lam[pos], label=f"{arm}: α = {s.alpha:.2f}")[0]
            fit_n = np.arange(s.n_min, s.n_max + 1)
            ref = lam[s.n_min - 1 : s.n_max]
            c = np.exp(np.mean(np.log(np.clip(ref, 1e-30, None)) + s.alpha * np.log(fit_n)))
            ax.loglog(fit_n, c * fit_n ** (-s.alpha), ls="--", color=line.get_color(), lw=0.9)
        ax.set(xlabel="component n", title=layer)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("eigenvalue λ_n / λ_1")
    return fig


def plot_profiles(profiles: Mapping[str, Profile], measures: Sequence[str] = tuple(MEASURES)) -> Any:
    """One panel per measure: value per layer (x, depth order) per arm, mean ± 95 % CI over seeds.

    Returns:
        a matplotlib ``Figure``.
    """
    from matplotlib.figure import Figure

    measures = [m for m in measures if m in MEASURES]
    fig = Figure(figsize=(3.3 * len(measures) + 0.4, 3.3), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(measures), squeeze=False)[0])
    for ax, measure in zip(axes, measures):
        for arm, p in profiles.items():
            mean, half = p.mean_ci(measure)
            x = np.arange(len(p.layers))
            ax.errorbar(x, mean, yerr=np.where(np.isfinite(half), half, 0.0), marker="o", capsize=3, label=f"{arm} (n={len(p.seeds)})")
            ax.set_xticks(x, p.layers, rotation=30)
        ax.set(title=MEASURES[measure], xlabel="layer")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return fig
