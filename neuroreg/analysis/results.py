"""Read a reproduction's output folder: the plan, fits, twins, evaluation reports.

``neuroreg repro`` writes ``OUT/repro.json`` (the plan) and one folder per stage with a
``done.json`` when it finished (see :mod:`neuroreg.repro.runner` for the layout).
:func:`load_repro` reads all of it into a :class:`ReproResults`; unfinished or failed
stages are listed with their status instead of being an error, so a reproduction that
is still running can be looked at. The folder may have been moved or copied from
another machine: the absolute paths that the plan and the markers hold are re-based
onto the folder actually read.

Robustness curves (:func:`robustness_curves`) and the comparison table
(:func:`comparison_table`) are mean ± 95 % t-interval over seeds, the same statistics
as ``OUT/report/`` (:func:`neuroreg.stats.t_interval`).
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from neuroreg.evaluation.measurements import Measurement

def curve_measurements() -> dict[str, Measurement]:
    """The curve measurements of the evaluation suite, ``{section: measurement}``: each
    gives its x field (``axis``), axis label and :meth:`~neuroreg.evaluation.measurements.Measurement.curve`
    (for ``corruptions``: the accuracy per severity averaged over the corruptions).

    >>> list(curve_measurements())
    ['gaussian_noise', 'corruptions', 'pgd_linf', 'fgsm_linf', 'pgd_l2', 'robust_linf', 'robust_l2']
    """
    from neuroreg.evaluation.measurements import flatten
    from neuroreg.evaluation.suite import default_measurements

    return OrderedDict((m.name, m) for m in flatten(default_measurements()) if m.axis is not None)


_PLAN_FIELDS = ("recipe", "title", "scale", "seeds", "baseline", "arms", "stages")
#: how many folders a stage of each kind sits below OUT
_DEPTH = {"fit": 3, "eval": 5, "twin": 2, "targets": 2, "fetch": 2}


class AnalysisError(ValueError):
    """Outputs that cannot be analysed; the message names the file and field."""


@dataclass(frozen=True)
class Table:
    """A small table of strings, shown as markdown in a notebook.

    Args:
        columns: header names.
        rows: one list of cells per row, ``len(columns)`` each.
        title: optional caption printed above the table.
    """

    columns: list[str]
    rows: list[list[str]]
    title: str = ""

    def __post_init__(self) -> None:
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(f"Table: row {i}: expected {len(self.columns)} cells ({self.columns}), found {len(row)}")

    def column(self, name: str) -> list[str]:
        """The cells of column ``name``.

        Raises:
            KeyError: no such column (lists the columns).
        """
        if name not in self.columns:
            raise KeyError(f"Table: no column {name!r}; columns are {self.columns}")
        j = self.columns.index(name)
        return [row[j] for row in self.rows]

    def to_markdown(self) -> str:
        """GitHub-flavoured markdown (``|`` in cells escaped)."""

        def esc(cell: str) -> str:
            return str(cell).replace("|", "\\|")

        lines = [f"**{self.title}**\n"] if self.title else []
        lines.append("| " + " | ".join(esc(c) for c in self.columns) + " |")
        lines.append("|" + "---|" * len(self.columns))
        lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def __str__(self) -> str:
        return self.to_markdown()


@dataclass(frozen=True)
class FitRun:
    """One fit of one arm and seed, and its evaluation.

    Attributes:
        arm, seed: which fit.
        folder: the run folder (``OUT/runs/<arm>/seed<s>-<key>``).
        status: ``"done"``, ``"failed"`` or ``"pending"`` (not started or running).
        checkpoint: ``final.ckpt`` when done.
        config: the run's ``config.yaml`` when done.
        metrics: the last logged scalars (``done.json``'s ``metrics``).
        report_path: the evaluation's ``report.json`` when the evaluation is done.
        eval_status: status of the evaluation stage.
    """

    arm: str
    seed: int
    folder: Path
    status: str
    checkpoint: Path | None = None
    config: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    report_path: Path | None = None
    eval_status: str = "pending"

    def report(self) -> dict[str, Any]:
        """The evaluation report (``report.json``).

        Raises:
            AnalysisError: not evaluated yet, or the file is unreadable or incomplete.
        """
        if self.report_path is None:
            raise AnalysisError(f"{self.folder}: the evaluation of arm '{self.arm}' seed {self.seed} is {self.eval_status}, not done")
        report = _read_json(self.report_path)
        if not report.get("complete"):
            raise AnalysisError(f"{self.report_path}: field 'complete': expected true (a finished evaluation), found {report.get('complete')!r}")
        return report


@dataclass(frozen=True)
class TwinRun:
    """A digital twin fitted by the reproduction (a ``twin`` stage).

    Attributes:
        name, key, folder, status: the stage.
        checkpoint: the twin checkpoint (usually in the TwinTargets cache, outside OUT).
        config: the twin's ``neuroreg fit`` config (``None`` when the twin was given as a checkpoint).
        overrides: the ``--key=value`` arguments the twin was fitted with.
        arms: the arms whose targets it predicted.
    """

    name: str
    key: str
    folder: Path
    status: str
    checkpoint: Path | None = None
    config: Path | None = None
    overrides: tuple[str, ...] = ()
    arms: tuple[str, ...] = ()


@dataclass
class ReproResults:
    """Everything a reproduction folder holds (see :func:`load_repro`).

    Attributes:
        out: the folder read.
        plan: ``repro.json`` with stage folders re-based onto ``out``.
        fits: one :class:`FitRun` per arm × seed, in plan order.
        twins: the :class:`TwinRun` s.
        summary: per-arm statistics of the finished evaluations
            (:func:`neuroreg.repro.report.summarize`), ``None`` when none finished.
        workdir: the folder ``neuroreg repro`` ran in (relative paths inside configs,
            e.g. ``data/recordings``, are resolved from there).
    """

    out: Path
    plan: dict[str, Any]
    fits: list[FitRun]
    twins: list[TwinRun]
    summary: dict[str, Any] | None
    workdir: Path

    @property
    def title(self) -> str:
        """The recipe's title."""
        return str(self.plan["title"])

    @property
    def arms(self) -> list[str]:
        """Arm labels, baseline first, then in recipe order."""
        arms = list(self.plan["arms"])
        return [self.baseline] + [a for a in arms if a != self.baseline]

    @property
    def baseline(self) -> str:
        """The scale's baseline arm's label."""
        return str(self.plan["baseline"])

    @property
    def baselines(self) -> dict[str, str | None]:
        """``{arm: the arm it is compared with}``; ``None`` for a baseline arm
        (:func:`neuroreg.repro.report.arm_baselines`)."""
        from neuroreg.repro.report import arm_baselines

        return arm_baselines(self.plan)

    @property
    def seeds(self) -> list[int]:
        """The seeds of the plan."""
        return [int(s) for s in self.plan["seeds"]]

    def runs(self, arm: str | None = None, *, done: bool = False, evaluated: bool = False) -> list[FitRun]:
        """The fits of ``arm`` (all arms when ``None``), in seed order.

        Args:
            arm: an arm label.
            done: only finished fits.
            evaluated: only fits whose evaluation finished.

        Raises:
            KeyError: an unknown arm (lists the arms).
        """
        if arm is not None and arm not in self.plan["arms"]:
            raise KeyError(f"{self.out}: no arm {arm!r}; arms are {self.arms}")
        runs = [r for r in self.fits if arm is None or r.arm == arm]
        runs = [r for r in runs if (not done or r.status == "done") and (not evaluated or r.report_path is not None)]
        return sorted(runs, key=lambda r: (self.arms.index(r.arm), r.seed))

    def run(self, arm: str, seed: int | None = None) -> FitRun:
        """The finished fit of ``arm`` with ``seed`` (the first finished seed when ``None``).

        Raises:
            AnalysisError: no such finished fit.
        """
        runs = [r for r in self.runs(arm, done=True) if seed is None or r.seed == seed]
        if not runs:
            status = {r.seed: r.status for r in self.runs(arm)}
            raise AnalysisError(f"{self.out}: arm '{arm}' has no finished fit{'' if seed is None else f' with seed {seed}'}; fits by seed: {status}")
        return runs[0]

    def twin(self, index: int = 0) -> TwinRun:
        """The reproduction's twin number ``index`` (in plan order).

        Raises:
            AnalysisError: the reproduction has no such twin.
        """
        if not 0 <= index < len(self.twins):
            raise AnalysisError(f"{self.out}: field 'stages': expected a twin stage number {index}, found {len(self.twins)} twin stage(s); "
                                "this reproduction's arms use no TwinTargets")
        return self.twins[index]

    def reports(self, arm: str) -> list[dict[str, Any]]:
        """The finished evaluation reports of ``arm``, in seed order."""
        return [r.report() for r in self.runs(arm, evaluated=True)]

    def status(self) -> Table:
        """Stages per kind: how many are done, failed or pending."""
        counts: OrderedDict[str, dict[str, int]] = OrderedDict()
        for st in self.plan["stages"]:
            state = _status(Path(st["folder"]))
            counts.setdefault(st["kind"], {"done": 0, "failed": 0, "pending": 0})[state] += 1
        return Table(["stage", "done", "failed", "pending"], [[k, *(str(c[s]) for s in ("done", "failed", "pending"))] for k, c in counts.items()],
                     title=f"{self.title} — {self.plan['scale']}: stages")


# ---------------------------------------------------------------------- reading
def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise AnalysisError(f"{path}: file not found") from None
    except (OSError, json.JSONDecodeError) as err:
        raise AnalysisError(f"{path}: expected a JSON file, cannot read it ({err})") from err


def _status(folder: Path) -> str:
    if (folder / "done.json").is_file():
        return "done"
    if (folder / "failed.json").is_file():
        return "failed"
    return "pending"


def _rebase(path: Any, old: Path, new: Path) -> Path | None:
    """``path`` moved from under ``old`` to under ``new`` (other paths unchanged)."""
    if path in (None, "", "None"):
        return None
    p = Path(str(path))
    if old == new or not p.is_absolute():
        return p
    try:
        return new / p.relative_to(old)
    except ValueError:
        return p


@contextmanager
def working_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Run a block with ``path`` as the current directory (restored afterwards)."""
    before = Path.cwd()
    os.chdir(path)
    try:
        yield Path(path)
    finally:
        os.chdir(before)


def load_repro(out: str | os.PathLike[str], workdir: str | os.PathLike[str] | None = None) -> ReproResults:
    """Read a ``neuroreg repro`` output folder.

    Args:
        out: the folder holding ``repro.json``.
        workdir: the folder ``neuroreg repro`` ran in (default: the current directory);
            relative paths inside configs (e.g. a recording cache) resolve from there.

    Returns:
        :class:`ReproResults` with every fit and twin (any status) and the summary of
        the finished evaluations.

    Raises:
        AnalysisError: ``repro.json`` is missing, unreadable or lacks a field, or a
            ``done.json`` is unreadable (the message names the file and field).
    """
    out = Path(out).resolve()
    plan_path = out / "repro.json"
    if not plan_path.is_file():
        raise AnalysisError(f"{plan_path}: file not found; expected the plan that `neuroreg repro` writes into its output folder")
    plan = _read_json(plan_path)
    if not isinstance(plan, dict):
        raise AnalysisError(f"{plan_path}: expected a JSON object with {list(_PLAN_FIELDS)}, found {type(plan).__name__}")
    missing = [k for k in _PLAN_FIELDS if k not in plan]
    if missing:
        raise AnalysisError(f"{plan_path}: field '{missing[0]}': expected the fields {list(_PLAN_FIELDS)}, found {sorted(plan)}")
    if not isinstance(plan["stages"], list) or not plan["stages"]:
        raise AnalysisError(f"{plan_path}: field 'stages': expected a non-empty list of stages, found {plan['stages']!r}")
    old = None
    for i, st in enumerate(plan["stages"]):
        need = ("name", "kind", "folder") + (("arm", "seed") if st.get("kind") in ("fit", "eval") else ())
        for k in need:
            if k not in st:
                raise AnalysisError(f"{plan_path}: field 'stages[{i}].{k}': expected it in a {st.get('kind')} stage, found {sorted(st)}")
        if old is None and st["kind"] in _DEPTH:
            old = Path(st["folder"]).parents[_DEPTH[st["kind"]] - 1]
    old = old or out
    stages = [{**st, "folder": str(_rebase(st["folder"], old, out))} for st in plan["stages"]]
    plan = {**plan, "stages": stages}

    def done(st: dict[str, Any]) -> dict[str, Any]:
        path = Path(st["folder"]) / "done.json"
        payload = _read_json(path)
        if not isinstance(payload, dict):
            raise AnalysisError(f"{path}: expected a JSON object, found {type(payload).__name__}")
        return payload

    evals = {}
    for st in stages:
        if st["kind"] != "eval":
            continue
        state = _status(Path(st["folder"]))
        report = None
        if state == "done":
            payload = done(st)
            if "report" not in payload:
                raise AnalysisError(f"{Path(st['folder']) / 'done.json'}: field 'report': expected the path of the evaluation report, found {sorted(payload)}")
            report = _rebase(payload["report"], old, out)
        evals[(st["arm"], int(st["seed"]))] = (state, report)
    fits = []
    for st in stages:
        if st["kind"] != "fit":
            continue
        key = (st["arm"], int(st["seed"]))
        state = _status(Path(st["folder"]))
        eval_state, report = evals.get(key, ("pending", None))
        kwargs: dict[str, Any] = {}
        if state == "done":
            payload = done(st)
            kwargs = {"checkpoint": _rebase(payload.get("checkpoint"), old, out), "config": _rebase(payload.get("config"), old, out),
                      "metrics": dict(payload.get("metrics") or {})}
        fits.append(FitRun(st["arm"], int(st["seed"]), Path(st["folder"]), state, report_path=report, eval_status=eval_state, **kwargs))

    def users(name: str) -> tuple[str, ...]:
        """Arms whose fits depend (through a targets stage) on stage ``name``."""
        targets = {t["name"] for t in stages if t["kind"] == "targets" and name in t.get("deps", [])}
        return tuple(OrderedDict.fromkeys(f["arm"] for f in stages if f["kind"] == "fit" and targets & set(f.get("deps", []))))

    twins = []
    for st in stages:
        if st["kind"] != "twin":
            continue
        state = _status(Path(st["folder"]))
        kwargs = {}
        if state == "done":
            payload = done(st)
            kwargs = {"checkpoint": _rebase(payload.get("checkpoint"), old, out), "config": _rebase(payload.get("config"), old, out),
                      "overrides": tuple(payload.get("overrides") or ())}
        twins.append(TwinRun(st["name"], str(st.get("key", "")), Path(st["folder"]), state, arms=users(st["name"]), **kwargs))
    return ReproResults(out=out, plan=plan, fits=fits, twins=twins, summary=summarize(plan, fits),
                        workdir=Path(workdir).resolve() if workdir is not None else Path.cwd())


def summarize(plan: Mapping[str, Any], fits: Sequence[FitRun]) -> dict[str, Any] | None:
    """Per-arm statistics of the finished evaluations among ``fits``.

    The same structure and statistics as :func:`neuroreg.repro.report.summarize`
    (``OUT/report/summary.json``: per arm and ``eval/…`` metric the mean, the 95 %
    t-interval half-width, the values, and the paired difference to the arm's baseline arm;
    the ``claims`` table), but from the report paths of ``fits`` (re-based when the folder moved) and over the
    evaluations that finished so far.

    Returns:
        the summary, or ``None`` when no evaluation has finished.
    """
    from neuroreg.evaluation.suite import metrics
    from neuroreg.repro.report import brain_notes, failed_checks, reference_name, summary_of

    per_arm: OrderedDict[str, dict[int, dict[str, float]]] = OrderedDict((a, {}) for a in plan["arms"])
    reports: OrderedDict[str, list[str]] = OrderedDict((a, []) for a in plan["arms"])
    failed: OrderedDict[str, list[dict[str, Any]]] = OrderedDict((a, []) for a in plan["arms"])
    loaded = []
    for run in fits:
        if run.report_path is not None:
            report = run.report()
            per_arm[run.arm][run.seed] = metrics(report)
            reports[run.arm].append(str(run.report_path))
            failed[run.arm] += failed_checks(report, run.seed)
            loaded.append(report)
    if not any(per_arm.values()):
        return None
    summary = summary_of(plan, per_arm, reports, failed)
    spec = plan.get("eval") or {}
    summary["brain"] = brain_notes(loaded, reference_name(spec.get("recording")), (spec.get("budget") or {}).get("rsa_rdm"))
    return summary


# ------------------------------------------------------------------ statistics
@dataclass(frozen=True)
class Curve:
    """Accuracy along one perturbation axis, over seeds.

    Attributes:
        x: ``[P]`` perturbation sizes (σ, ε or severity), ascending.
        values: ``[n, P]`` accuracy of each seed.
        mean: ``[P]`` mean over seeds.
        ci95: ``[P]`` half-width of the 95 % t-interval (0 for one seed).
    """

    x: np.ndarray
    values: np.ndarray
    mean: np.ndarray
    ci95: np.ndarray

    @property
    def n(self) -> int:
        """Number of seeds."""
        return int(self.values.shape[0])


def _section_curve(report: Mapping[str, Any], section: str) -> tuple[list[float], list[float]] | None:
    known = curve_measurements()
    if section not in known:
        raise KeyError(f"robustness_curves: unknown section {section!r}; expected one of {list(known)}")
    part = report.get(section)
    if not part:
        return None
    return known[section].curve(part)


def curve_over_seeds(reports: Sequence[Mapping[str, Any]], section: str, names: Sequence[str] | None = None) -> Curve | None:
    """Mean ± 95 % CI of one robustness section over the reports of several seeds.

    Args:
        reports: evaluation reports of one arm.
        section: a key of :func:`curve_measurements`.
        names: where each report came from, for error messages.

    Returns:
        the :class:`Curve`, or ``None`` when no report has the section.

    Raises:
        AnalysisError: some reports have the section and others do not, or their x grids differ.
    """
    from neuroreg.stats import t_interval

    names = list(names) if names is not None else [f"report {i}" for i in range(len(reports))]
    parts = [_section_curve(r, section) for r in reports]
    have = [p is not None for p in parts]
    if not any(have):
        return None
    if not all(have):
        lacking = [n for n, h in zip(names, have) if not h]
        raise AnalysisError(f"{lacking[0]}: field '{section}': expected it as in the other seeds' reports, found none")
    x0 = parts[0][0]
    for n, (x, _) in zip(names, parts):
        if list(x) != list(x0):
            raise AnalysisError(f"{n}: field '{section}.{curve_measurements()[section].axis}': expected the grid {x0} of {names[0]}, found {x}")
    order = np.argsort(x0)
    values = np.asarray([np.asarray(a, dtype=float)[order] for _, a in parts])
    stats = [t_interval(list(values[:, j])) for j in range(values.shape[1])]
    return Curve(np.asarray(x0, dtype=float)[order], values, np.asarray([m for m, _ in stats]), np.asarray([h for _, h in stats]))


def robustness_curves(results: ReproResults, sections: Sequence[str] | None = None) -> dict[str, dict[str, Curve]]:
    """``{section: {arm: Curve}}`` over the finished evaluations of every arm.

    Args:
        results: from :func:`load_repro`.
        sections: keys of :func:`curve_measurements` (default: all that some report has).

    Raises:
        AnalysisError: no evaluation has finished, or the grids of one arm differ.
    """
    if results.summary is None:
        raise AnalysisError(f"{results.out}: no evaluation has finished yet; run `neuroreg repro` to the end first")
    sections = list(sections) if sections is not None else list(curve_measurements())
    out: dict[str, dict[str, Curve]] = OrderedDict()
    for section in sections:
        per_arm = OrderedDict()
        for arm in results.arms:
            runs = results.runs(arm, evaluated=True)
            if not runs:
                continue
            curve = curve_over_seeds([r.report() for r in runs], section, [str(r.report_path) for r in runs])
            if curve is not None:
                per_arm[arm] = curve
        if per_arm:
            out[section] = per_arm
    return out


def plot_robustness(
    curves: Mapping[str, Mapping[str, Curve]], sections: Sequence[str] | None = None, columns: int = 3, panel_size: float = 3.6
) -> Any:
    """One panel per section: accuracy vs perturbation size per arm, mean line ± 95 % CI band.

    Args:
        curves: :func:`robustness_curves`'s output.
        sections: which of them, in order (default: all).
        columns: panels per row.
        panel_size: inches per panel.

    Returns:
        a matplotlib ``Figure``.

    Raises:
        AnalysisError: nothing to plot.
    """
    from matplotlib.figure import Figure

    known = curve_measurements()
    sections = [s for s in (sections or list(curves)) if s in curves]
    if not sections:
        raise AnalysisError(f"plot_robustness: expected some of the sections {list(curve_measurements())}, found {list(curves)}")
    ncols = max(1, min(columns, len(sections)))
    nrows = -(-len(sections) // ncols)
    fig = Figure(figsize=(panel_size * ncols + 0.6, panel_size * nrows), layout="constrained")
    grid = fig.subplots(nrows, ncols, sharey=True, squeeze=False)
    axes = grid.ravel()
    for ax in axes[len(sections):]:
        ax.set_visible(False)
    for ax, section in zip(axes, sections):
        for arm, c in curves[section].items():
            line = ax.plot(c.x, c.mean, marker="o", label=f"{arm} (n={c.n})")[0]
            if c.n > 1:
                ax.fill_between(c.x, np.clip(c.mean - c.ci95, 0, 1), np.clip(c.mean + c.ci95, 0, 1), color=line.get_color(), alpha=0.2)
        ax.set(xlabel=known[section].axis_label, ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
    for row in grid:
        row[0].set_ylabel("accuracy (mean ± 95% CI)")
    axes[0].legend(fontsize=8)
    return fig


def comparison_table(results: ReproResults, metrics: Sequence[str] | None = None, diff: bool = False) -> Table:
    """Metrics × arms, mean ± 95 % CI over seeds (or the paired difference to each arm's baseline).

    Args:
        results: from :func:`load_repro`.
        metrics: ``eval/…`` names (default: the headline metrics of the reproduction
            report — clean, noise, corruptions, attacks — those that were measured).
        diff: show ``arm − its baseline arm`` (same seed) instead of the values; the
            baseline arms' columns are left out, and the title names each arm's baseline
            when they are not all the same.

    Raises:
        AnalysisError: no evaluation has finished, or an unknown metric.
    """
    from neuroreg.repro.report import is_headline, mean_ci_cell, metric_label

    summary = results.summary
    if summary is None:
        raise AnalysisError(f"{results.out}: no evaluation has finished yet; run `neuroreg repro` to the end first")
    names = list(metrics) if metrics is not None else [n for n in summary["metrics"] if is_headline(n)]
    unknown = [n for n in names if n not in summary["metrics"]]
    if unknown:
        raise AnalysisError(f"comparison_table: metric {unknown[0]!r} was not measured; measured: {summary['metrics']}")
    baselines = results.baselines
    arms = [a for a in results.arms if a in summary["arms"] and (not diff or baselines.get(a) is not None)]
    rows = []
    for n in names:
        cells = []
        for a in arms:
            entry = summary["arms"][a]["metrics"].get(n)
            cells.append(mean_ci_cell(entry, "diff_vs_baseline" if diff else None))
        rows.append([metric_label(n), *cells])
    n_seeds = max((len(summary["arms"][a]["seeds"]) for a in arms), default=0)
    what = "value"
    if diff:
        against = list(dict.fromkeys(baselines[a] for a in arms))
        if len(against) <= 1:
            what = f"difference to `{against[0] if against else results.baseline}` (same seed)"
        else:
            what = "difference to each arm's baseline (" + ", ".join(f"{a} − {baselines[a]}" for a in arms) + "; same seed)"
    return Table(["metric", *arms], rows, title=f"{results.title} — {what}, mean ± 95 % CI over {n_seeds} seed(s)")


def seed_table(results: ReproResults, metric: str = "eval/clean_accuracy") -> Table:
    """One row per arm, one column per seed: the value of ``metric`` in each evaluation.

    Raises:
        AnalysisError: no evaluation has finished.
    """
    from neuroreg.evaluation.suite import metrics as flat

    if results.summary is None:
        raise AnalysisError(f"{results.out}: no evaluation has finished yet; run `neuroreg repro` to the end first")
    rows = []
    for arm in results.arms:
        by_seed = {r.seed: flat(r.report()).get(metric) for r in results.runs(arm, evaluated=True)}
        rows.append([arm, *("–" if by_seed.get(s) is None else f"{by_seed[s]:.3f}" for s in results.seeds)])
    return Table(["arm", *(f"seed {s}" for s in results.seeds)], rows, title=f"{metric} per seed")
