"""``neuroreg compare RUN... --out DIR``: overlay robustness curves of several runs.

Each RUN is a run directory (holding ``eval/report.json`` or ``report.json``) or a
report file. Runs whose configs are equal except for the seeds (``seed_everything`` and
any ``seed`` / ``split_seed`` fields) form one group; a group's curve is the mean with a
95 % t-interval across its seeds, ``mean ± t_{0.975, n-1} · s / √n``. Writes
``comparison.png`` (accuracy vs ε for PGD L∞ / L2, vs σ for noise), ``comparison.md`` and
``comparison.html`` (tables of clean accuracy, mean corruption accuracy, AutoAttack and
PGD at the largest ε, and the median minimal L2 perturbation, per group).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from neuroreg.evaluation.measurements import Measurement, flatten
from neuroreg.evaluation.suite import default_measurements
from neuroreg.io import atomic_write, yaml_problem
from neuroreg.stats import t_interval

_SEED_KEYS = {"seed_everything", "seed", "split_seed"}


def _strip_seeds(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_seeds(v) for k, v in value.items() if k not in _SEED_KEYS}
    if isinstance(value, list):
        return [_strip_seeds(v) for v in value]
    return value


def load_run(arg: str | Path) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
    """``(name, report, config or None)`` of a run directory or report file.

    Raises:
        ValueError: no report found, or the report lacks ``"complete": true``.
    """
    p = Path(arg)
    candidates = [p] if p.is_file() else [p / "eval" / "report.json", p / "report.json"]
    report_path = next((c for c in candidates if c.is_file()), None)
    if report_path is None:
        raise ValueError(f"compare: run {arg}: expected a report file or a directory with eval/report.json or report.json")
    try:
        report = json.loads(report_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"compare: {report_path}: expected a JSON evaluation report, found unreadable content ({err})") from err
    if not isinstance(report, dict):
        raise ValueError(f"compare: {report_path}: expected a JSON object (an evaluation report), found {type(report).__name__}")
    if not report.get("complete"):
        raise ValueError(f"compare: {report_path}: expected \"complete\": true (a finished evaluation), found none")
    config = None
    for c in (report_path.parent / "config.yaml", report_path.parent.parent / "config.yaml"):
        if c.is_file():
            try:
                config = yaml.safe_load(c.read_text())
            except yaml.YAMLError as err:
                raise ValueError(f"compare: {c}: {yaml_problem(err)}") from err
            break
    name = report_path.parent.parent.name if report_path.parent.name == "eval" else report_path.parent.name
    return name, report, config


def group_runs(runs: list[tuple[str, dict, dict | None]]) -> OrderedDict[str, list[tuple[str, dict]]]:
    """Group runs whose configs match up to seeds; label = first run's name (+ ``×n``)."""
    groups: OrderedDict[str, list] = OrderedDict()
    keys: dict[str, str] = {}
    for name, report, config in runs:
        key = json.dumps(_strip_seeds(config), sort_keys=True, default=str) if config is not None else f"run:{name}"
        if key not in keys:
            keys[key] = name
            groups[name] = []
        groups[keys[key]].append((name, report))
    return groups


def _curve(reports: list[dict], m: Measurement) -> tuple[list[float], list[float], list[float]] | None:
    parts = [r.get(m.name) for r in reports]
    if any(p is None for p in parts):
        return None
    curves = [m.curve(p) for p in parts]
    xs = curves[0][0]
    if any(list(c[0]) != list(xs) for c in curves):
        raise ValueError(f"compare: runs of one group have different {m.name}.{m.axis} grids")
    stats = [t_interval([c[1][i] for c in curves]) for i in range(len(xs))]
    return list(xs), [s for s, _ in stats], [h for _, h in stats]


def _row(reports: list[dict], measurements: Sequence[Measurement]) -> dict[str, str]:
    """One table row: per column of each measurement, mean ± 95 % CI over the group's runs
    (a boolean column: ``ok`` unless some run says False)."""

    def cell(values: list[float | bool | None]) -> str:
        vals = [v for v in values if v is not None]
        if vals and all(isinstance(v, bool) for v in vals):
            return "ok" if all(vals) else "FAILED"
        if not vals:
            return "–"
        m, h = t_interval(vals)
        return f"{m:.3f}" if len(vals) == 1 else f"{m:.3f} ± {h:.3f}"

    row = {"n": str(len(reports))}
    for m in measurements:
        per_run = [m.cells(r[m.name]) if m.name in r else {} for r in reports]
        for column in m.columns:
            values = [c.get(column) for c in per_run]
            row[column] = cell(values)
    return row


def compare(
    runs: list[str | Path], out: str | Path, groups: Mapping[str, list[str | Path]] | None = None,
    measurements: Sequence[Measurement] | None = None,
) -> dict[str, Path]:
    """Write ``comparison.png``, ``comparison.md`` and ``comparison.html`` into ``out``.

    Args:
        runs: run directories or report files, grouped by config up to seeds.
        out: output directory.
        groups: instead of grouping ``runs`` by config, explicit groups
            ``{label: [run or report, ...]}`` (added after those of ``runs``).
        measurements: the list whose panels (curves with ``panel`` set) and table
            ``columns`` are shown (default:
            :func:`~neuroreg.evaluation.suite.default_measurements`).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure


    groups_ = group_runs([load_run(r) for r in runs])
    for label, members in (groups or {}).items():
        if not members:
            raise ValueError(f"compare: group {label!r}: expected at least one run, found none")
        groups_[label] = [(name, report) for name, report, _ in (load_run(m) for m in members)]
    if not groups_:
        raise ValueError("compare: expected at least one run, found none")
    groups = groups_
    out = Path(out)
    ms = list(flatten(default_measurements() if measurements is None else measurements))
    panels = [m for m in ms if m.panel]
    # only the perturbations some run measured get a panel
    panels = [m for m in panels if any(section_in(r, m.name, ms) for members in groups.values() for _, r in members)] or panels[:1]
    fig = Figure(figsize=(4.4 * len(panels) + 0.4, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True))
    for ax, m in zip(axes, panels):
        for gname, members in groups.items():
            c = _curve([r for _, r in members], m)
            if c is None:
                continue
            xs, mean, half = c
            order = np.argsort(xs)
            xs, mean, half = np.asarray(xs)[order], np.asarray(mean)[order], np.asarray(half)[order]
            line = ax.plot(xs, mean, marker="o", label=f"{gname} (n={len(members)})")[0]
            if len(members) > 1:
                ax.fill_between(xs, mean - half, mean + half, color=line.get_color(), alpha=0.2)
        ax.set(xlabel=m.axis_label, title=m.label)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (mean ± 95% CI over seeds)")
    axes[0].legend(fontsize=8)
    rows = OrderedDict((g, _row([r for _, r in members], ms)) for g, members in groups.items())
    cols = list(next(iter(rows.values())))
    md = "| run | " + " | ".join(cols) + " |\n|" + "---|" * (len(cols) + 1) + "\n"
    md += "".join(f"| {g} | " + " | ".join(r[c] for c in cols) + " |\n" for g, r in rows.items())
    html = "<table>\n<tr><th>run</th>" + "".join(f"<th>{c}</th>" for c in cols) + "</tr>\n"
    html += "".join(f"<tr><td>{g}</td>" + "".join(f"<td>{r[c]}</td>" for c in cols) + "</tr>\n" for g, r in rows.items())
    html += "</table>\n"
    paths = {"png": out / "comparison.png", "md": out / "comparison.md", "html": out / "comparison.html"}
    atomic_write(paths["png"], lambda f: fig.savefig(f, format="png", dpi=110), mode="wb")
    atomic_write(paths["md"], lambda f: f.write(md))
    atomic_write(paths["html"], lambda f: f.write(html))
    return paths


def section_in(report: dict, section: str, measurements: Sequence[Measurement] | None = None) -> bool:
    """Whether ``report`` measured the curve ``section`` (at least one point).

    >>> section_in({"pgd_linf": {"epsilon": [0.0], "accuracy": [0.9]}}, "pgd_linf")
    True
    """
    part = report.get(section)
    if not isinstance(part, dict):
        return False
    ms = flatten(default_measurements() if measurements is None else measurements)
    m = next((m for m in ms if m.name == section), None)
    curve = m.curve(part) if m is not None else None
    return curve is not None and bool(curve[1])


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="neuroreg compare", description="Overlay robustness curves of several runs.")
    p.add_argument("runs", nargs="+", help="run directories or report.json files")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    args = p.parse_args(argv)
    try:
        paths = compare(args.runs, args.out)
    except (ValueError, OSError) as err:
        print(f"neuroreg compare: error: {err}", file=sys.stderr)
        return 2
    print(paths["md"].read_text())
    print(f"neuroreg: comparison written to {args.out}")
    return 0
