"""Brain similarity of a model's layers to a held-out NeuralRecording, or to a neural RDM.

Three measures per layer ``l`` with activations ``X_l [images, units]`` and the neural
responses ``R [images, repeats, neurons]`` to the same images:

- **neural predictivity** (Yamins et al. 2014; Schrimpf et al. 2018, Brain-Score): a
  linear map from ``X_l`` to each neuron's mean response, fitted by ridge regression
  (regularisation chosen by inner leave-one-out CV) or PLS (25 components), evaluated by
  K-fold cross-validation over images; per-neuron Pearson ``r`` between held-out
  predictions and the mean responses, divided by the neuron's reliability ceiling, the
  split-half correlation ``r_sh`` of its responses with the Spearman–Brown correction
  ``2 r_sh / (1 + r_sh)``; the score is the median over neurons with a positive ceiling.
- **RSA** (Kriegeskorte et al. 2008): Spearman correlation of the upper triangles of the
  correlation-distance RDMs of ``X_l`` and of the mean responses.
- **linear CKA** (Kornblith et al. 2019) between ``X_l`` and the mean responses.

Against neural data that is only an RDM over a set of images
(:class:`~neuroreg.targets.rdm.RDMTargets`), :func:`rdm_similarity` scores each layer's
RDM (same metric) by Spearman ρ (or Kendall τ_a) with a bootstrap-over-images interval;
a single averaged RDM allows no noise ceiling, and the result says so.

``rdm`` and ``linear_cka`` come from :mod:`neuroreg.regularizers.functional` (the same
math the regularizers train with).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from neuroreg.stats import pearson_columns


def split_half_ceiling(repeats: np.ndarray, n_splits: int = 10, seed: int = 0) -> np.ndarray:
    """Spearman–Brown corrected split-half reliability per neuron.

    For each of ``n_splits`` random splits of every image's valid repeats into two halves,
    the Pearson ``r`` across images between the two half means; averaged over splits and
    corrected to the full number of repeats: ``ρ = 2 r / (1 + r)``.

    Args:
        repeats: ``[images, repeats, neurons]`` responses, NaN-padded.

    Returns:
        ``[neurons]`` reliability (NaN where a neuron has < 2 repeats on < 3 images).
    """
    rng = np.random.default_rng(seed)
    m, r, k = repeats.shape
    rs = []
    for _ in range(n_splits):
        a = np.full((m, k), np.nan)
        b = np.full((m, k), np.nan)
        for i in range(m):
            order = rng.permutation(r)
            block = repeats[i, order]  # [R, K]
            valid = ~np.isnan(block)
            rank = np.cumsum(valid, axis=0)  # 1-based rank of each valid trial
            count = valid.sum(axis=0)
            first = valid & (rank <= count // 2)
            second = valid & (rank > count // 2) & (rank <= 2 * (count // 2))
            with np.errstate(invalid="ignore", divide="ignore"):
                a[i] = np.where(first, block, 0).sum(0) / first.sum(0)
                b[i] = np.where(second, block, 0).sum(0) / second.sum(0)
        rs.append(pearson_columns(a, b, min_rows=3))
    r_mean = np.nanmean(np.stack(rs), axis=0) if rs else np.full(k, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 2 * r_mean / (1 + r_mean)


def neural_predictivity(
    features: np.ndarray,
    repeats: np.ndarray,
    method: str = "ridge",
    n_folds: int = 5,
    n_components: int = 25,
    alphas: Sequence[float] = tuple(10.0 ** np.arange(-2, 6)),
    seed: int = 0,
) -> dict[str, Any]:
    """Cross-validated, ceiling-normalised neural predictivity of ``features``.

    Args:
        features: ``[images, units]`` model activations.
        repeats: ``[images, repeats, neurons]`` responses (NaN-padded) to the same images.
        method: ``"ridge"`` (sklearn ``RidgeCV`` over ``alphas``, features standardised) or
            ``"pls"`` (``PLSRegression`` with ``min(n_components, …)`` components).
        n_folds: K of the K-fold split over images.
        n_components: PLS components (25 as in Brain-Score).
        seed: fold assignment and split-half seed.

    Returns:
        ``{"score": median normalised r, "raw_median_r", "ceiling_median", "r": [K],
        "ceiling": [K], "normalized": [K]}`` (lists; NaN → None happens at report writing).

    Raises:
        ValueError: mismatched image counts, unknown method, fewer images than folds.
    """
    from sklearn.cross_decomposition import PLSRegression
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold
    from sklearn.preprocessing import StandardScaler

    features = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    if repeats.ndim != 3 or repeats.shape[0] != features.shape[0]:
        raise ValueError(
            f"neural_predictivity: repeats must be [images, repeats, neurons] with images = "
            f"{features.shape[0]} (features), found shape {repeats.shape}"
        )
    if method not in ("ridge", "pls"):
        raise ValueError(f"neural_predictivity: method must be 'ridge' or 'pls', found {method!r}")
    if features.shape[0] < max(n_folds, 4):
        raise ValueError(f"neural_predictivity: need >= {max(n_folds, 4)} images, found {features.shape[0]}")
    with np.errstate(invalid="ignore"):
        target = np.nanmean(repeats, axis=1)  # [M, K]
    target = np.where(np.isfinite(target), target, np.nanmean(target, axis=0, keepdims=True))
    target = np.nan_to_num(target)
    pred = np.zeros_like(target)
    for train, test in KFold(n_folds, shuffle=True, random_state=seed).split(features):
        scaler = StandardScaler().fit(features[train])
        f_train, f_test = scaler.transform(features[train]), scaler.transform(features[test])
        if method == "ridge":
            reg = RidgeCV(alphas=list(alphas)).fit(f_train, target[train])
        else:
            k = max(1, min(n_components, len(train) - 1, f_train.shape[1]))
            reg = PLSRegression(n_components=k, scale=False).fit(f_train, target[train])
        pred[test] = reg.predict(f_test)
    with np.errstate(invalid="ignore"):
        raw_target = np.nanmean(repeats, axis=1)
    r = pearson_columns(pred, raw_target, min_rows=3)
    ceiling = split_half_ceiling(repeats, seed=seed)
    usable = np.isfinite(r) & np.isfinite(ceiling) & (ceiling > 0)
    normalized = np.full_like(r, np.nan)
    normalized[usable] = r[usable] / ceiling[usable]
    return {
        "score": float(np.median(normalized[usable])) if usable.any() else float("nan"),
        "raw_median_r": float(np.nanmedian(r)) if np.isfinite(r).any() else float("nan"),
        "ceiling_median": float(np.nanmedian(ceiling)) if np.isfinite(ceiling).any() else float("nan"),
        "n_neurons": int(usable.sum()),
        "r": r.tolist(),
        "ceiling": ceiling.tolist(),
        "normalized": normalized.tolist(),
    }


def rsa_score(features: np.ndarray, responses: np.ndarray) -> float:
    """Spearman correlation between the upper triangles of the correlation-distance RDMs.

    Args:
        features: ``[images, units]``; responses: ``[images, neurons]`` (mean over repeats).
    """
    from scipy.stats import spearmanr

    from neuroreg.regularizers.functional import rdm

    f = torch.as_tensor(np.asarray(features, dtype=np.float64).reshape(len(features), -1))
    r = torch.as_tensor(np.nan_to_num(np.asarray(responses, dtype=np.float64)))
    iu = torch.triu_indices(len(f), len(f), offset=1)
    a = rdm(f)[iu[0], iu[1]].numpy()
    b = rdm(r)[iu[0], iu[1]].numpy()
    return float(spearmanr(a, b).statistic)


def cka_score(features: np.ndarray, responses: np.ndarray) -> float:
    """Linear CKA (biased) between ``features [images, units]`` and ``responses [images, neurons]``."""
    from neuroreg.regularizers.functional import linear_cka

    f = torch.as_tensor(np.asarray(features, dtype=np.float64).reshape(len(features), -1))
    r = torch.as_tensor(np.nan_to_num(np.asarray(responses, dtype=np.float64)))
    return float(linear_cka(f, r))


def match_images(images: np.ndarray, channels: int, size: int) -> Tensor:
    """Recording stimuli ``[N, C, H, W]`` in [0, 1] → ``channels`` (grey ↔ RGB) and ``size`` (bilinear)."""
    from neuroreg.imageops import resize, to_channels

    x = to_channels(torch.as_tensor(np.asarray(images, dtype=np.float32)), channels)
    x = resize(x, (size, size))
    return x.clamp(0, 1).contiguous()


@torch.no_grad()
def layer_activations(
    model: Callable[[Tensor], Tensor], images: Tensor, layers: Sequence[str], module: nn.Module | None = None,
    batch_size: int = 128,
) -> dict[str, np.ndarray]:
    """Flattened activations ``{layer: [images, units]}`` of ``module``'s submodules during ``model(images)``.

    ``module`` defaults to ``model.backbone`` when present (layer names are backbone
    module paths, as for the regularizers), else ``model``.
    """
    from neuroreg.models.taps import FeatureTaps

    module = module if module is not None else getattr(model, "backbone", model)
    taps = FeatureTaps(module, list(layers))
    out: dict[str, list[np.ndarray]] = {name: [] for name in layers}
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    try:
        for start in range(0, len(images), batch_size):
            with taps.capture() as feats:
                model(images[start : start + batch_size].to(device))
            for name in layers:
                out[name].append(feats[name].flatten(1).double().cpu().numpy())
    finally:
        taps.remove()
    return {name: np.concatenate(v) for name, v in out.items()}


def brain_similarity(
    model: Callable[[Tensor], Tensor],
    recording: Any,
    layers: Sequence[str],
    tier: str | None = "test",
    channels: int | None = None,
    image_size: int | None = None,
    n_folds: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Per-layer predictivity (ridge, PLS), RSA and CKA of ``model`` against ``recording``.

    Args:
        model: classifier (eval mode); its ``backbone`` (if any) holds ``layers``.
        recording: a :class:`~neuroreg.data.recording.NeuralRecording` or a path to one.
        layers: module paths, in depth order (the profile's x axis).
        tier: trials of this tier only (``None``: all); use a tier never trained on.
        channels, image_size: model input format (default: from ``model.in_channels`` and
            the recording's image size).
        n_folds, seed: cross-validation.

    Returns:
        ``{"layers": [...], "tier", "n_images", "n_neurons", "ridge": {"score": [L], ...},
        "pls": {...}, "rsa": [L], "cka": [L]}``.

    Raises:
        ValueError: an empty tier, no layers.
    """
    from neuroreg.data.recording import NeuralRecording

    if isinstance(recording, (str, os.PathLike)):
        recording = NeuralRecording.load(Path(recording))
    if not layers:
        raise ValueError("brain_similarity: layers must name at least one module path, found []")
    if tier is not None and tier not in recording.tiers:
        raise ValueError(
            f"brain_similarity: recording {recording.name!r} has no trials of tier {tier!r} (0 images); "
            f"tiers present: {recording.tiers}"
        )
    image_index, reps = recording.repeats(tier)
    if len(image_index) < max(n_folds, 4):
        raise ValueError(
            f"brain_similarity: recording {recording.name!r} tier {tier!r} has {len(image_index)} images, "
            f"need >= {max(n_folds, 4)}"
        )
    imgs = recording.images_float()[image_index]
    channels = channels or int(getattr(model, "in_channels", imgs.shape[1]))
    size = image_size or imgs.shape[-1]
    x = match_images(imgs, channels, size)
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(reps, axis=1)
    acts = layer_activations(model, x, layers)
    out: dict[str, Any] = {"layers": list(layers), "tier": tier, "n_images": len(image_index),
                           "n_neurons": int(reps.shape[2])}
    for method in ("ridge", "pls"):
        res = [neural_predictivity(acts[name], reps, method=method, n_folds=n_folds, seed=seed) for name in layers]
        out[method] = {
            "score": [r["score"] for r in res],
            "raw_median_r": [r["raw_median_r"] for r in res],
            "ceiling_median": res[0]["ceiling_median"],
        }
    out["rsa"] = [rsa_score(acts[name], mean) for name in layers]
    out["cka"] = [cka_score(acts[name], mean) for name in layers]
    return out


# ------------------------------------------------------------- RSA against an RDM
#: why no noise ceiling comes with an RDM alone
NO_CEILING_REASON = (
    "only the averaged RDM is available (no per-subject, per-session or per-repeat RDMs), so the noise ceiling "
    "cannot be estimated"
)


def kendall_tau_a(a: np.ndarray, b: np.ndarray, block: int = 512) -> float:
    """Kendall's τ_a between two vectors: ``(concordant − discordant) / (n(n−1)/2)``.

    Unlike τ_b, ties are not corrected for, so a model RDM with tied dissimilarities is not
    favoured (Nili et al. 2014 recommend τ_a for comparing RDMs with categorical models).
    Computed blockwise in O(n²) time and O(block · n) memory.
    """
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    n = len(a)
    if n != len(b) or n < 2:
        raise ValueError(f"kendall_tau_a: expected two vectors of one length >= 2, found {len(a)} and {len(b)}")
    total = 0.0
    for start in range(0, n, block):
        sa = np.sign(a[start : start + block, None] - a[None, :])
        sb = np.sign(b[start : start + block, None] - b[None, :])
        total += float((sa * sb).sum())
    return total / (n * (n - 1))  # every pair counted twice


def _rank_corr(a: np.ndarray, b: np.ndarray, method: str) -> float:
    from scipy.stats import spearmanr

    if method == "spearman":
        return float(spearmanr(a, b).statistic)
    return kendall_tau_a(a, b)


def compare_rdms(
    model_rdm: np.ndarray,
    neural_rdm: np.ndarray,
    method: str = "spearman",
    n_bootstrap: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Rank correlation of two condensed RDMs over the same images, with a bootstrap-over-images CI.

    Bootstrap (Nili et al. 2014): each of ``n_bootstrap`` resamples draws the N images with
    replacement, takes both RDMs' dissimilarities between the drawn images, leaves out the
    pairs of an image with a copy of itself, and correlates the rest; the interval is the
    percentile interval of those correlations.

    Args:
        model_rdm, neural_rdm: ``[N(N−1)/2]`` condensed RDMs (scipy ``squareform`` order).
        method: ``"spearman"`` or ``"kendall_tau_a"``.
        n_bootstrap: resamples (0: no interval).
        ci: interval coverage.
        seed: resampling seed.

    Returns:
        ``{"score", "ci_low", "ci_high", "method", "n_bootstrap", "ci"}`` (interval bounds
        ``None`` without resamples).

    Raises:
        ValueError: different lengths, a length that is not n(n−1)/2, an unknown method.

    Example:
        >>> d = np.random.default_rng(0).random(45)
        >>> compare_rdms(d, d, n_bootstrap=10)["score"]
        1.0
    """
    from scipy.spatial.distance import squareform

    a, b = np.asarray(model_rdm, dtype=np.float64).ravel(), np.asarray(neural_rdm, dtype=np.float64).ravel()
    if method not in ("spearman", "kendall_tau_a"):
        raise ValueError(f"compare_rdms: method: expected 'spearman' or 'kendall_tau_a', found {method!r}")
    if a.shape != b.shape:
        raise ValueError(f"compare_rdms: expected RDMs of one length, found {len(a)} (model) and {len(b)} (neural)")
    n = int(round((1 + np.sqrt(1 + 8 * len(a))) / 2))
    if n * (n - 1) // 2 != len(a) or n < 3:
        raise ValueError(f"compare_rdms: expected a condensed RDM of n(n-1)/2 values for n >= 3 images, found length {len(a)}")
    if not 0 < ci < 1:
        raise ValueError(f"compare_rdms: ci: expected a number in (0, 1), found {ci}")
    out: dict[str, Any] = {"score": _rank_corr(a, b, method), "method": method, "n_bootstrap": int(n_bootstrap), "ci": ci,
                           "ci_low": None, "ci_high": None}
    if n_bootstrap > 0:
        sa, sb = squareform(a, checks=False), squareform(b, checks=False)
        rng = np.random.default_rng(seed)
        iu = np.triu_indices(n, k=1)
        boots = []
        for _ in range(int(n_bootstrap)):
            idx = rng.integers(0, n, n)
            keep = idx[iu[0]] != idx[iu[1]]
            x = sa[idx[iu[0]][keep], idx[iu[1]][keep]]
            y = sb[idx[iu[0]][keep], idx[iu[1]][keep]]
            r = _rank_corr(x, y, method)
            if np.isfinite(r):
                boots.append(r)
        if boots:
            lo, hi = np.quantile(boots, [(1 - ci) / 2, (1 + ci) / 2])
            out["ci_low"], out["ci_high"] = float(lo), float(hi)
    return out


def rdm_similarity(
    model: Callable[[Tensor], Tensor],
    targets: Any,
    layers: Sequence[str],
    channels: int | None = None,
    image_size: int | None = None,
    method: str = "spearman",
    n_bootstrap: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """RSA of ``model``'s layers against a neural RDM over its images (RDMTargets).

    Each layer's RDM is computed on the RDM's images (converted to the model's channels and
    ``image_size``) with the neural RDM's metric (:func:`neuroreg.regularizers.functional.rdm`)
    and compared by :func:`compare_rdms`. The noise-free upper bound is reported where the
    data allow: an RDMTargets holds one averaged RDM, from which no noise ceiling can be
    estimated, so ``ceiling`` is ``None`` and ``ceiling_reason`` says why.

    Args:
        model: classifier (eval mode); its ``backbone`` (if any) holds ``layers``.
        targets: :class:`~neuroreg.targets.rdm.RDMTargets`, an RDM source, an RDMTargets
            ``.h5`` path or a manifest name (:func:`neuroreg.targets.rdm.rdm_targets`).
        layers: module paths, in depth order.
        channels, image_size: model input format (default: ``model.in_channels`` and the
            RDM's image size).
        method, n_bootstrap, ci, seed: see :func:`compare_rdms`.

    Returns:
        ``{"layers", "rdm" (its name), "source", "species", "area", "metric", "label"
        ("RSA vs IT RDM"), "n_images", "method", "score": [L], "ci_low": [L],
        "ci_high": [L], "ceiling": None, "ceiling_reason"}``.

    Raises:
        ValueError: no layers; a metric neuroreg cannot compute for the model.
    """
    from neuroreg.regularizers.functional import rdm
    from neuroreg.targets.rdm import COMPUTABLE_METRICS, condensed, rdm_targets

    targets = rdm_targets(targets)
    if not layers:
        raise ValueError("rdm_similarity: layers must name at least one module path, found []")
    if targets.metric not in COMPUTABLE_METRICS:
        raise ValueError(f"rdm_similarity: {targets.name}: metric {targets.metric!r}: expected one of "
                         f"{list(COMPUTABLE_METRICS)} (the model's RDM is computed with the same metric)")
    imgs = targets.images_float()
    channels = channels or int(getattr(model, "in_channels", imgs.shape[1]))
    x = match_images(imgs, channels, image_size or imgs.shape[-1])
    acts = layer_activations(model, x, layers)
    results = [compare_rdms(condensed(rdm(torch.as_tensor(acts[name]), targets.metric)), targets.rdm, method=method,
                            n_bootstrap=n_bootstrap, ci=ci, seed=seed) for name in layers]
    return {
        "layers": list(layers), "rdm": targets.name, "source": targets.source, "species": targets.species,
        "area": targets.area, "metric": targets.metric, "label": f"RSA vs {targets.area or 'neural'} RDM",
        "n_images": targets.n_images, "method": method, "n_bootstrap": int(n_bootstrap), "ci": ci,
        "score": [r["score"] for r in results], "ci_low": [r["ci_low"] for r in results],
        "ci_high": [r["ci_high"] for r in results], "ceiling": None, "ceiling_reason": NO_CEILING_REASON,
    }
