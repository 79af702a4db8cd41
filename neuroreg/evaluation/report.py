"""Robustness report: a JSON file and a PNG figure, both written atomically.

A report is a plain dict (see :class:`neuroreg.evaluation.callbacks.RobustnessEvaluation`)::

    {"clean_accuracy": 0.95,
     "gaussian_noise": {"sigma": [0.0, 0.1], "accuracy": [0.95, 0.9]},
     "robust_linf": {"epsilon": [0.0, 0.0314], "accuracy": [0.95, 0.1], "n_images": 1000,
                     "members": {"pgd": [0.95, 0.2], "apgd_ce": [0.95, 0.12], "apgd_t": [0.95, 0.1]},
                     "per_image": {"pgd": [[1, 0, …], …], …}},
     "pgd_linf": {"epsilon": [0.0, 0.0314], "accuracy": [0.95, 0.2], "steps": 10, "restarts": 1},
     "n_images": 1000, "checkpoint": "…/best.ckpt", "seed": 0}

Files are written to a temporary file in the target directory and moved into place with
``os.replace``, so a reader sees either the previous file or the complete new one, never
a partial one.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neuroreg.evaluation.measurements import (
    Brain,
    Corruptions,
    Decision,
    Measurement,
    MinimalPerturbation,
    flatten,
)
from neuroreg.io import atomic_write, umask_mode

REPORT_NAME = "report.json"
PLOT_NAME = "robustness.png"


def _to_json(value: Any) -> Any:
    """``json.dump`` fallback: numpy / torch scalars and arrays, paths."""
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return value.tolist()
    if isinstance(value, numbers.Number):
        return float(value)
    raise TypeError(f"write_report: cannot store a value of type {type(value).__name__} in JSON: {value!r}")


def write_report(report: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> Path:
    """Write ``report`` as ``<out_dir>/report.json`` atomically (temp file + ``os.replace``).

    Args:
        report: JSON-serialisable mapping (numpy / torch scalars and ``Path`` values are
            converted). NaN or infinite numbers are rejected (strict JSON).
        out_dir: directory, created if missing.

    Returns:
        Path of the written ``report.json``.

    Raises:
        ValueError: if ``report`` is not a mapping or holds NaN / infinity.
        TypeError: if it holds a value JSON cannot store.

    On any failure no partial ``report.json`` is left behind and a previous one survives.

    Example:
        >>> import tempfile
        >>> write_report({"clean_accuracy": 0.9}, tempfile.mkdtemp()).name
        'report.json'
    """
    if not isinstance(report, Mapping):
        raise ValueError(f"write_report: report must be a mapping (dict), found {type(report).__name__}")
    path = Path(out_dir) / REPORT_NAME

    def write(f: Any) -> None:
        json.dump(dict(report), f, indent=2, allow_nan=False, default=_to_json)
        f.write("\n")

    atomic_write(path, write)
    return path


def _curve(report: Mapping[str, Any], m: Measurement) -> tuple[list[float], list[float]]:
    """The curve of measurement ``m`` in ``report``, sorted by x, as equal-length lists."""
    section = m.name
    if section not in report or not isinstance(report[section], Mapping):
        raise ValueError(
            f"plot_robustness: report needs a mapping under {section!r}, found keys {sorted(report)}"
        )
    part = report[section]
    for key in (m.axis, "accuracy"):
        if key not in part:
            raise ValueError(
                f"plot_robustness: report[{section!r}] needs key {key!r}, found keys {sorted(part)}"
            )
    xs, accs = m.curve(part)
    if len(xs) != len(accs):
        raise ValueError(
            f"plot_robustness: report[{section!r}][{m.axis!r}] and ['accuracy'] must have equal "
            f"lengths, found {len(xs)} and {len(accs)}"
        )
    order = sorted(range(len(xs)), key=xs.__getitem__)
    return [xs[i] for i in order], [accs[i] for i in order]


def plot_robustness(
    report: Mapping[str, Any], path: str | os.PathLike[str], measurements: Sequence[Measurement] | None = None
) -> Path:
    """Plot accuracy against perturbation size, one panel per curve measurement, into one PNG, atomically.

    The panels are the measurements with ``panel`` set (Gaussian noise σ, the robust L∞
    accuracy of the attack ensemble with its axis in units of 1/255, the robust L2
    accuracy); ``panel = 2`` ones must be in the report, the others are drawn when
    measured. A measurement with ``overlay`` (the PGD diagnostics, FGSM) is drawn into
    that panel. Clean accuracy is a dashed line in every panel. Uses matplotlib's Agg
    canvas directly (no pyplot, no global backend change), so it works headless.

    Args:
        report: report dict with those sections (``clean_accuracy`` optional).
        path: output file, e.g. ``<run>/robustness.png``; its directory is created.
        measurements: the list to read panels from (default:
            :func:`~neuroreg.evaluation.suite.default_measurements`).

    Returns:
        ``Path(path)``.

    Raises:
        ValueError: if a required section or a key is missing or the lists differ in length.

    Example:
        >>> import tempfile, os
        >>> r = {"gaussian_noise": {"sigma": [0, 0.1], "accuracy": [0.9, 0.8]},
        ...      "robust_linf": {"epsilon": [0, 0.03], "accuracy": [0.9, 0.05],
        ...                      "members": {"pgd": [0.9, 0.1], "apgd_ce": [0.9, 0.05]}}}
        >>> plot_robustness(r, os.path.join(tempfile.mkdtemp(), "robustness.png")).name
        'robustness.png'
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from neuroreg.evaluation.suite import default_measurements

    if not isinstance(report, Mapping):
        raise ValueError(f"plot_robustness: report must be a mapping (dict), found {type(report).__name__}")
    ms = default_measurements() if measurements is None else list(measurements)
    panels = [m for m in ms if m.panel and (m.panel == 2 or m.name in report)]
    curves = {m.name: _curve(report, m) for m in panels}
    clean = report.get("clean_accuracy")
    path = Path(path)

    fig = Figure(figsize=(4.3 * len(panels) + 0.4, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True))
    for ax, m in zip(axes, panels):
        xs, accs = curves[m.name]
        ax.plot([x * m.axis_scale for x in xs], accs, marker="o", label=m.label)
        section = report[m.name]
        members = section.get("members") if isinstance(section, Mapping) else None
        for member, member_accs in (members or {}).items():  # an ensemble's members, each alone
            ax.plot([x * m.axis_scale for x in xs], member_accs, linestyle=":", linewidth=1, label=member)
        scale = "" if m.axis_scale == 1 else f" × {m.axis_scale:g}"
        ax.set(xlabel=m.axis_label + scale, title=m.title(report[m.name]))
        for other in ms:
            if other.overlay == m.name and other.name in report:
                ox, oa = _curve(report, other)
                ax.plot([x * other.axis_scale for x in ox], oa, marker="s", label=other.label)
    axes[0].set_ylabel("accuracy")
    for ax in axes:
        if clean is not None and math.isfinite(float(clean)):
            ax.axhline(float(clean), linestyle="--", color="gray", label="clean")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    if clean is not None:
        axes[0].legend(loc="lower left")

    fmt = path.suffix.lstrip(".") or "png"
    atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=120), mode="wb")
    return path


def _save(fig: Any, path: Path) -> Path:
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110), mode="wb")
    return path


def plot_corruptions(report: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Heat map of accuracy per corruption (rows) and severity (columns) into a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    per = report[Corruptions.name]["per_corruption"]
    names = list(per)
    sev = per[names[0]]["severity"]
    grid = [[float(a) for a in per[n]["accuracy"]] for n in names]
    fig = Figure(figsize=(1.2 * len(sev) + 3, 0.35 * len(names) + 1.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(sev)), [str(s) for s in sev])
    ax.set_yticks(range(len(names)), names)
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="w" if v < 0.6 else "k", fontsize=7)
    ax.set(xlabel="severity", title=f"corruption accuracy (mean {report[Corruptions.name]['mean_accuracy']:.3f})")
    fig.colorbar(im, ax=ax)
    return _save(fig, Path(path))


def plot_minimal_perturbation(report: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Histograms of the per-image minimal perturbation sizes (one panel per norm)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    mp = report[MinimalPerturbation.name]
    fig = Figure(figsize=(4.5 * len(mp), 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(mp), squeeze=False)[0]
    for ax, (norm, part) in zip(axes, mp.items()):
        vals = [v for v in part["values"] if v is not None and v > 0]
        ax.hist(vals, bins=20, color="tab:blue")
        if part["median"] is not None:
            ax.axvline(part["median"], color="k", linestyle="--", label=f"median {part['median']:.3g}")
            ax.legend()
        ax.set(xlabel=f"minimal {norm} ε", ylabel="images",
               title=f"{norm}: {part['not_flipped']} of {part['n_images']} not flipped at {part['eps_max']:.3g}")
    return _save(fig, Path(path))


def plot_decision(report: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Decision-based L2 distances: histogram, and per image against the white-box minimal L2.

    Left: histogram of ``report["decision"]["values"]`` (images misclassified without
    perturbation and those without an adversarial found left out) with its median, and of
    the white-box minimal L2 perturbation of the same images when the report has it.
    Right (with a white-box section): decision-based distance against white-box minimal
    L2 per image, with the diagonal — points far below it mean PGD misses close
    adversarials that a label-only attack finds (gradient masking).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dec = report[Decision.name]
    white = report.get(MinimalPerturbation.name, {}).get("l2")
    fig = Figure(figsize=(9 if white else 4.5, 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if white else 1, squeeze=False)[0]
    vals = [v for v in dec["values"] if v is not None and v > 0]
    bins = 20
    axes[0].hist(vals, bins=bins, color="tab:green", alpha=0.7, label="decision-based")
    if white:
        m = min(len(white["values"]), len(dec["values"]))
        wb = [v for v in white["values"][:m] if v is not None and v > 0]
        axes[0].hist(wb, bins=bins, histtype="step", color="tab:blue", label="white-box minimal")
    if dec["median"] is not None:
        axes[0].axvline(dec["median"], color="k", linestyle="--", label=f"median {dec['median']:.3g}")
    axes[0].legend(fontsize=8)
    axes[0].set(xlabel="L2 distance", ylabel="images",
                title=f"{dec['attack']}, {dec['queries']} queries: {dec['not_found']} of {dec['n_images']} not found")
    if white:
        pairs = [(w, d) for w, d in zip(white["values"], dec["values"]) if w and d]
        ax = axes[1]
        ax.scatter([w for w, _ in pairs], [d for _, d in pairs], s=10, color="tab:green")
        top = max([1e-3] + [max(w, d) for w, d in pairs])
        ax.plot([0, top], [0, top], color="gray", linestyle="--", label="equal")
        ax.set(xlabel="white-box minimal L2 (PGD search)", ylabel="decision-based L2", title="per image")
        ax.legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    return _save(fig, Path(path))


def plot_brain(report: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Brain-similarity profile across depth: predictivity (ridge, PLS), RSA and CKA per layer."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    brain = report[Brain.name]
    layers = brain["layers"]
    fig = Figure(figsize=(max(5, 1.2 * len(layers) + 2), 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    xs = list(range(len(layers)))
    nan = float("nan")
    for key, label in (("ridge", "predictivity (ridge)"), ("pls", "predictivity (PLS-25)")):
        ax.plot(xs, [nan if v is None else v for v in brain[key]["score"]], marker="o", label=label)
    ax.plot(xs, brain["rsa"], marker="s", label="RSA (Spearman)")
    ax.plot(xs, brain["cka"], marker="^", label="linear CKA")
    ax.set_xticks(xs, layers)
    ax.set(xlabel="layer (depth)", ylabel="score", title=f"brain similarity ({brain['n_images']} images, tier {brain['tier']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, Path(path))


def _json_safe(value: Any) -> Any:
    """Replace NaN / inf floats by ``None`` recursively (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_outputs(
    report: Mapping[str, Any], out_dir: str | os.PathLike[str], measurements: Sequence[Measurement] | None = None
) -> Path:
    """Write every plot the report has data for, then ``report.json`` (last, atomically).

    ``robustness.png`` (:func:`plot_robustness`, when the report has its required
    panels) and each measured section's own figure (``corruptions.png``,
    ``minimal_perturbation.png``, ``decision.png``, ``brain.png``: the ``figure`` of each
    measurement). NaN values of a section whose measurement says ``nan_to_null`` (brain:
    a neuron set without a usable ceiling) become ``null``. Returns the report path.
    """
    from neuroreg.evaluation.suite import default_measurements

    ms = list(flatten(default_measurements() if measurements is None else measurements))
    out = Path(out_dir)
    report = dict(report)
    for m in ms:
        if m.nan_to_null and m.name in report:
            report[m.name] = _json_safe(report[m.name])
    if all(m.name in report for m in ms if m.panel == 2):
        plot_robustness(report, out / PLOT_NAME, ms)
    for m in ms:
        if m.figure and m.name in report:
            m.plot(report, out / m.figure)
    return write_report(report, out)


def write_eval_dir(
    report: Mapping[str, Any], run_dir: str | os.PathLike[str], name: str = "eval", extra: Mapping[str, str] | None = None
) -> Path:
    """Write plots + report into ``<run_dir>/<name>/`` atomically as a directory.

    Everything is written into a fresh temporary directory next to the target, which then
    replaces ``<name>/`` (the previous one is moved aside and deleted): a reader sees the
    old complete directory or the new complete one; a crash leaves at most a hidden
    ``.<name>.*.tmp`` directory, never a partial ``eval/report.json``. The report carries
    ``"complete": true``. ``extra`` maps further file names to text content (e.g.
    ``metrics.csv``), written into the same directory before the report.

    Returns:
        Path of ``<run_dir>/<name>/report.json``.
    """
    import shutil

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / name
    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=f".{name}.", suffix=".tmp"))
    try:
        os.chmod(tmp, umask_mode(0o777))
        for fname, text in (extra or {}).items():
            (tmp / fname).write_text(text)
        write_outputs({**report, "complete": True}, tmp)
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(dir=run_dir, prefix=f".{name}.old.", suffix=".tmp"))
            os.replace(final, old / name)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final / REPORT_NAME
