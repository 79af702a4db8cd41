"""Robustness report: a JSON file and a PNG figure, both written atomically.

A report is a plain dict (see :class:`neuroreg.evaluation.callbacks.RobustnessEvaluation`)::

    {"clean_accuracy": 0.95,
     "gaussian_noise": {"sigma": [0.0, 0.1], "accuracy": [0.95, 0.9]},
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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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


def _atomic_write(path: Path, write: Any, mode: str = "w") -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, fsync, then ``os.replace``.

    On any exception the temporary file is removed and the exception re-raised; ``path``
    is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


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

    _atomic_write(path, write)
    return path


def _curve(report: Mapping[str, Any], section: str, x_key: str) -> tuple[list[float], list[float]]:
    """Read ``report[section][x_key]`` and ``report[section]["accuracy"]`` as equal-length lists."""
    if section not in report or not isinstance(report[section], Mapping):
        raise ValueError(
            f"plot_robustness: report needs a mapping under {section!r}, found keys {sorted(report)}"
        )
    part = report[section]
    for key in (x_key, "accuracy"):
        if key not in part:
            raise ValueError(
                f"plot_robustness: report[{section!r}] needs key {key!r}, found keys {sorted(part)}"
            )
    xs, accs = [float(v) for v in part[x_key]], [float(v) for v in part["accuracy"]]
    if len(xs) != len(accs):
        raise ValueError(
            f"plot_robustness: report[{section!r}][{x_key!r}] and ['accuracy'] must have equal "
            f"lengths, found {len(xs)} and {len(accs)}"
        )
    order = sorted(range(len(xs)), key=xs.__getitem__)
    return [xs[i] for i in order], [accs[i] for i in order]


def plot_robustness(report: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Plot accuracy vs Gaussian-noise σ and vs PGD-L∞ ε into one PNG, atomically.

    Left panel: ``report["gaussian_noise"]["accuracy"]`` against ``["sigma"]``; right
    panel: ``report["pgd_linf"]["accuracy"]`` against ``["epsilon"]`` (axis in units of
    1/255). Clean accuracy is drawn as a dashed line in both. Uses matplotlib's Agg
    canvas directly (no pyplot, no global backend change), so it works headless.

    Args:
        report: report dict with the sections above (``clean_accuracy`` optional).
        path: output file, e.g. ``<run>/robustness.png``; its directory is created.

    Returns:
        ``Path(path)``.

    Raises:
        ValueError: if a section or key is missing or the lists differ in length.

    Example:
        >>> import tempfile, os
        >>> r = {"gaussian_noise": {"sigma": [0, 0.1], "accuracy": [0.9, 0.8]},
        ...      "pgd_linf": {"epsilon": [0, 0.03], "accuracy": [0.9, 0.1]}}
        >>> plot_robustness(r, os.path.join(tempfile.mkdtemp(), "robustness.png")).name
        'robustness.png'
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not isinstance(report, Mapping):
        raise ValueError(f"plot_robustness: report must be a mapping (dict), found {type(report).__name__}")
    sigmas, noise_acc = _curve(report, "gaussian_noise", "sigma")
    epsilons, pgd_acc = _curve(report, "pgd_linf", "epsilon")
    clean = report.get("clean_accuracy")
    path = Path(path)

    fig = Figure(figsize=(9, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax_noise, ax_pgd = fig.subplots(1, 2, sharey=True)
    ax_noise.plot(sigmas, noise_acc, marker="o")
    ax_noise.set(xlabel="Gaussian noise σ", ylabel="accuracy", title="Gaussian noise")
    pgd_info = report["pgd_linf"]
    title = "PGD L∞"
    if "steps" in pgd_info and "restarts" in pgd_info:
        title += f" ({pgd_info['steps']} steps, {pgd_info['restarts']} restart(s))"
    ax_pgd.plot([e * 255 for e in epsilons], pgd_acc, marker="o", color="tab:red")
    ax_pgd.set(xlabel="ε × 255", title=title)
    for ax in (ax_noise, ax_pgd):
        if clean is not None and math.isfinite(float(clean)):
            ax.axhline(float(clean), linestyle="--", color="gray", label="clean")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    if clean is not None:
        ax_noise.legend(loc="lower left")

    fmt = path.suffix.lstrip(".") or "png"
    _atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=120), mode="wb")
    return path
