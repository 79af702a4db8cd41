"""The comparison report of a reproduction: every arm's metrics, mean ± 95 % CI over seeds.

For each arm and each scalar of :func:`neuroreg.evaluation.suite.metrics` (clean
accuracy, accuracy under each noise σ, mean and per-corruption accuracy, PGD / FGSM
accuracy at each ε, AutoAttack, minimal perturbation medians, …) over the seeds
``s = 1..n``: the mean and the half-width of the 95 % t-interval
``t_{0.975, n-1} · sd / √n``. Against the arm's baseline arm (its own ``baseline`` in
the recipe, else the scale's; :func:`arm_baselines`), the paired difference
``d_s = arm_s − baseline_s`` (same seed: same data order at the start, same evaluation
draws) with its own t-interval; a baseline arm has none. Nothing is selected or tuned:
every arm of the recipe and every metric the evaluation produced is reported.

The claims table (:func:`claims`) weighs each arm that is compared with a baseline
against that baseline and against each of its ``controls`` (recipe.yaml): for every
claim metric (:func:`claim_metrics`: the headline accuracies of the measurement list at
a non-zero strength — robust accuracy at each ε, accuracy at each noise σ — and the mean
corruption accuracy; not clean accuracy) the paired difference over the seeds both arms
ran, mean ± 95 % t-interval, and one verdict word by :data:`CLAIM_RULE`.
:func:`claims_paragraph` renders it as the text the README quotes (``claims.md``).

Brain similarity is one more set of rows per arm (:func:`brain_table`): per layer, the
ceiling-normalised neural predictivity (ridge) and the RSA on the held-out tier of the
recipe's ``eval.recording`` (``eval/brain/<layer>/ridge``, ``.../rsa``), and the RSA
against a neural RDM over its own images when the budget names one
(``eval/rsa_rdm=<layer>``, :class:`~neuroreg.evaluation.measurements.RDMBrain`).
:func:`brain_notes` gathers what bounds each: the recording's split-half ceiling (median
over neurons), and the RDM's noise ceiling where its data allow one (else the reason it
has none). The claims table weighs the predictivity and the RDM RSA like the accuracies
(:func:`brain_claim_metrics`).
"""

from __future__ import annotations

import csv
import io
import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neuroreg.evaluation.measurements import Clean, Corruptions, Measurement, Sanity, flatten
from neuroreg.evaluation.suite import default_measurements, metrics
from neuroreg.io import atomic_write
from neuroreg.stats import t_interval


def metric_label(name: str, measurements: Sequence[Measurement] | None = None) -> str:
    """A scalar's name for tables: ``eval/`` dropped, each measurement's ``metric_labels`` applied.

    >>> metric_label("eval/pgd_linf_accuracy_eps=0.0314")
    'PGD L∞ ε=0.0314'
    """
    short = name.removeprefix("eval/")
    for m in flatten(default_measurements() if measurements is None else measurements):
        for old, new in m.metric_labels:
            short = short.replace(old, new)
    return short


def is_headline(name: str, measurements: Sequence[Measurement] | None = None) -> bool:
    """Whether a scalar is in the headline table: a measurement's ``headline`` names it,
    or it starts with one of its prefixes (ending in ``=``) at a strength other than 0.

    >>> is_headline("eval/noise_accuracy_sigma=0.1"), is_headline("eval/noise_accuracy_sigma=0")
    (True, False)
    """
    for m in flatten(default_measurements() if measurements is None else measurements):
        for p in m.headline:
            if name == p or (p.endswith("=") and name.startswith(p) and name != p + "0"):
                return True
    return False


def failed_checks(report: Mapping[str, Any], seed: int) -> list[dict[str, Any]]:
    """The sanity checks ``report`` failed, as ``[{"seed", "check", "detail"}]``."""
    return [{"seed": seed, "check": check, "detail": flag.get("detail", "")}
            for check, flag in (report.get(Sanity.name) or {}).items() if not flag.get("passed", True)]


def arm_baselines(plan: Mapping[str, Any]) -> dict[str, str | None]:
    """``{arm: the arm it is compared with, or None}`` from a plan (``repro.json``).

    Each entry of ``plan["arms"]`` that records a ``baseline`` (as
    :func:`neuroreg.repro.runner.describe` writes it: ``null`` for a baseline arm) gives
    it; otherwise (older plans, or ``arms`` given as a list of labels) every arm but
    ``plan["baseline"]`` is compared with ``plan["baseline"]``.
    """
    default = plan["baseline"]
    out: dict[str, str | None] = {}
    for arm in plan["arms"]:
        entry = plan["arms"][arm] if isinstance(plan["arms"], Mapping) else None
        if isinstance(entry, Mapping) and "baseline" in entry:
            out[arm] = entry["baseline"]
        else:
            out[arm] = None if arm == default else default
    return out


def arm_statistics(
    per_arm: Mapping[str, Mapping[int, Mapping[str, float]]], baselines: Mapping[str, str | None]
) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Mean ± 95 % t-interval over seeds of every metric per arm, and the paired
    (same-seed) difference to each arm's baseline arm.

    Args:
        per_arm: ``{arm: {seed: {metric: value}}}``.
        baselines: ``{arm: the arm it is compared with, or None}`` (:func:`arm_baselines`);
            an arm missing here is compared with nothing.

    Returns:
        ``(metric names in first-seen order, {arm: {"seeds": [...], "baseline": label or
        None, "metrics": {name: {"mean", "ci95", "n", "values"[, "diff_vs_baseline":
        {"mean", "ci95", "n"}]}}}})``.
    """
    names = list(OrderedDict.fromkeys(n for runs in per_arm.values() for m in runs.values() for n in m))
    arms: dict[str, dict[str, Any]] = {}
    for arm, runs in per_arm.items():
        baseline = baselines.get(arm)
        base = per_arm.get(baseline, {}) if baseline is not None else {}
        stats = {}
        for n in names:
            vals = [runs[s][n] for s in sorted(runs) if n in runs[s]]
            if not vals:
                continue
            mean, half = t_interval(vals)
            entry: dict[str, Any] = {"mean": mean, "ci95": half, "n": len(vals), "values": vals}
            paired = [runs[s][n] - base[s][n] for s in sorted(runs) if s in base and n in runs[s] and n in base[s]]
            if baseline is not None and baseline != arm and paired:
                d, dh = t_interval(paired)
                entry["diff_vs_baseline"] = {"mean": d, "ci95": dh, "n": len(paired)}
            stats[n] = entry
        arms[arm] = {"seeds": sorted(runs), "baseline": baseline, "metrics": stats}
    return names, arms


#: the verdict rule of the claims table, stated above it in every report
CLAIM_RULE = ("gain: the 95 % t-interval of the paired difference (arm − comparison, same seed) lies entirely above 0; "
              "loss: it lies entirely below 0; no evidence: otherwise, and always with fewer than 2 paired seeds.")

def claim_metrics(names: Sequence[str], measurements: Sequence[Measurement] | None = None) -> list[str]:
    """The scalars of ``names`` the claims table weighs, in their order: the headline
    scalars (:func:`is_headline`) that are accuracies (``accuracy`` in the name), except
    clean accuracy.

    >>> claim_metrics(["eval/clean_accuracy", "eval/noise_accuracy_sigma=0", "eval/noise_accuracy_sigma=0.1",
    ...                "eval/mean_corruption_accuracy", "eval/relative_mce", "eval/corruption/fog"])
    ['eval/noise_accuracy_sigma=0.1', 'eval/mean_corruption_accuracy']
    """
    clean = set(Clean.headline)
    return [n for n in names if n not in clean and "accuracy" in n and is_headline(n, measurements)]


def _is_brain(name: str) -> bool:
    return name.startswith(("eval/brain/", "eval/rsa_rdm="))


def brain_metrics(names: Sequence[str]) -> list[str]:
    """The brain-similarity scalars of ``names`` the report's brain table shows, in their
    order within each group: the normalised ridge predictivity of each layer on the
    recording (``eval/brain/<layer>/ridge``), the RSA on the recording (``.../rsa``), the
    RSA against the RDM (``eval/rsa_rdm=<layer>``).

    >>> brain_metrics(["eval/clean_accuracy", "eval/rsa_rdm=layer1", "eval/brain/layer1/ridge", "eval/brain/layer1/pls",
    ...                "eval/brain/layer1/rsa", "eval/brain/layer1/cka", "eval/brain/layer2/ridge"])
    ['eval/brain/layer1/ridge', 'eval/brain/layer2/ridge', 'eval/brain/layer1/rsa', 'eval/rsa_rdm=layer1']
    """
    groups = ([n for n in names if n.startswith("eval/brain/") and n.endswith("/ridge")],
              [n for n in names if n.startswith("eval/brain/") and n.endswith("/rsa")],
              [n for n in names if n.startswith("eval/rsa_rdm=")])
    return [n for group in groups for n in group]


def brain_claim_metrics(names: Sequence[str]) -> list[str]:
    """The brain-similarity scalars the claims table weighs: the normalised predictivity
    and the RSA against the RDM of each layer (:func:`brain_metrics` without the RSA on
    the recording, which the predictivity already speaks for).

    >>> brain_claim_metrics(["eval/brain/layer2/ridge", "eval/brain/layer2/rsa", "eval/rsa_rdm=layer2"])
    ['eval/brain/layer2/ridge', 'eval/rsa_rdm=layer2']
    """
    return [n for n in brain_metrics(names) if not (n.startswith("eval/brain/") and n.endswith("/rsa"))]


def brain_label(name: str) -> str:
    """A brain-similarity scalar's name for tables.

    >>> brain_label("eval/brain/layer2/ridge"), brain_label("eval/rsa_rdm=layer2"), brain_label("eval/brain/layer2/cka")
    ('predictivity layer2 (ridge, / ceiling)', 'RSA vs RDM layer2', 'CKA vs recording layer2')
    """
    if name.startswith("eval/rsa_rdm="):
        return f"RSA vs RDM {name.removeprefix('eval/rsa_rdm=')}"
    parts = name.split("/")
    if len(parts) != 4:
        return metric_label(name)
    layer, key = parts[2], parts[3]
    readable = {"ridge": "predictivity {} (ridge, / ceiling)", "pls": "predictivity {} (PLS, / ceiling)",
                "rsa": "RSA vs recording {}", "cka": "CKA vs recording {}"}
    return readable.get(key, "{} " + key).format(layer)


def reference_name(ref: Any) -> str | None:
    """A plan's brain-similarity recording (``repro.json`` → ``eval.recording``) in words:
    the manifest's name, or the file's path.

    >>> reference_name({"manifest": "cowley2023-v4-210325", "options": {}}), reference_name("/x/held.h5"), reference_name(None)
    ('cowley2023-v4-210325', '/x/held.h5', None)
    """
    if isinstance(ref, Mapping):
        return str(ref.get("manifest"))
    return None if ref is None else str(ref)


def brain_notes(reports: Sequence[Mapping[str, Any]], recording: str | None = None, rdm_name: str | None = None) -> dict[str, Any]:
    """What bounds the brain-similarity rows, from the evaluations' reports (``recording``,
    ``rdm_name``: how the recipe names them, for the notes; default for the RDM: the
    file the report names).

    Returns:
        ``{"recording": {"name", "tier", "n_images", "n_neurons", "ceiling_median"} or None,
        "rdm": {"name", "species", "area", "n_images", "method", "noise_ceiling", "noise_ceiling_note"} or None}``:
        the recording's ceiling is the median split-half (Spearman–Brown) reliability over
        its neurons, the one the predictivity is divided by; the RDM's from the report's
        ``rsa_rdm`` section (``rdm``, ``ceiling``, ``ceiling_reason``). Every report holds
        the same; the first one that has a section gives it.
    """
    rec = next((r["brain"] for r in reports if r.get("brain")), None)
    rdm = next((r["rsa_rdm"] for r in reports if r.get("rsa_rdm")), None)
    return {
        "recording": None if rec is None else {
            "name": recording, "tier": rec.get("tier"), "n_images": rec.get("n_images"), "n_neurons": rec.get("n_neurons"),
            "ceiling_median": (rec.get("ridge") or {}).get("ceiling_median")},
        "rdm": None if rdm is None else {
            "name": rdm_name or rdm.get("rdm"), "species": rdm.get("species"), "area": rdm.get("area"),
            "n_images": rdm.get("n_images"), "method": rdm.get("method"),
            "noise_ceiling": rdm.get("ceiling"), "noise_ceiling_note": rdm.get("ceiling_reason")},
    }


def verdict(mean: float, ci95: float, n: int) -> str:
    """One word by :data:`CLAIM_RULE` for a paired difference ``mean ± ci95`` over ``n`` seeds.

    >>> verdict(0.19, 0.08, 5), verdict(-0.1, 0.05, 3), verdict(0.1, 0.2, 3), verdict(0.3, 0.0, 1)
    ('gain', 'loss', 'no evidence', 'no evidence')
    """
    if n < 2 or not (np.isfinite(mean) and np.isfinite(ci95)):
        return "no evidence"
    if mean - ci95 > 0:
        return "gain"
    if mean + ci95 < 0:
        return "loss"
    return "no evidence"


def arm_controls(plan: Mapping[str, Any]) -> dict[str, list[str]]:
    """``{arm: its controls}`` from a plan (``repro.json``; ``[]`` where it records none)."""
    arms = plan["arms"]
    return {arm: list(arms[arm].get("controls") or []) if isinstance(arms, Mapping) and isinstance(arms[arm], Mapping) else []
            for arm in arms}


def claims(
    per_arm: Mapping[str, Mapping[int, Mapping[str, float]]],
    baselines: Mapping[str, str | None],
    controls: Mapping[str, Sequence[str]],
    metrics: Sequence[str],
) -> list[dict[str, Any]]:
    """The claims table: each arm with a baseline against it and each of its controls.

    Args:
        per_arm: ``{arm: {seed: {metric: value}}}``.
        baselines: ``{arm: the arm it is compared with, or None}`` (:func:`arm_baselines`).
        controls: ``{arm: [control arms]}`` (:func:`arm_controls`).
        metrics: the claim metrics (:func:`claim_metrics`), in table order.

    Returns:
        rows in order arm → comparison (baseline first, then the controls) → metric:
        ``{"arm", "versus", "role" ("baseline" or "control"), "metric", "label", "mean",
        "ci95", "n", "verdict"}``; the difference is ``arm − versus`` over the seeds both
        ran with the metric; a pair with no such seed is left out.
    """
    rows: list[dict[str, Any]] = []
    for arm, runs in per_arm.items():
        baseline = baselines.get(arm)
        if baseline is None:
            continue
        for versus, role in [(baseline, "baseline"), *((c, "control") for c in controls.get(arm, ()))]:
            other = per_arm.get(versus, {})
            for n in metrics:
                paired = [runs[s][n] - other[s][n] for s in sorted(runs) if s in other and n in runs[s] and n in other[s]]
                if not paired:
                    continue
                mean, half = t_interval(paired)
                label = brain_label(n) if _is_brain(n) else metric_label(n)
                rows.append({"arm": arm, "versus": versus, "role": role, "metric": n, "label": label,
                             "mean": mean, "ci95": half, "n": len(paired), "verdict": verdict(mean, half, len(paired))})
    return rows


def _difference(row: Mapping[str, Any]) -> str:
    if row["n"] < 2:
        return f"{row['mean']:+.3f}"
    return f"{row['mean']:+.3f} ± {row['ci95']:.3f}"


def claims_table(claims_: Mapping[str, Any]) -> str:
    """Markdown: the rule in words, then one row per claim (arm, versus, metric,
    difference, seeds, verdict)."""
    md = [f"\n## Claims\n\nPaired difference (arm − comparison, same seed), mean ± 95 % t-interval over the seeds both "
          f"arms ran. Verdict rule: {claims_['rule']}\n\n"]
    if not claims_["rows"]:
        return md[0] + "No arm is compared with a baseline: no claims.\n"
    md.append("| arm | versus | metric | difference | seeds | verdict |\n|---|---|---|---|---|---|\n")
    for r in claims_["rows"]:
        versus = r["versus"] if r["role"] == "baseline" else f"{r['versus']} (control)"
        md.append(f"| {r['arm']} | {versus} | {r['label']} | {_difference(r)} | {r['n']} | {r['verdict']} |\n")
    return "".join(md)


def claims_paragraph(claims_: Mapping[str, Any]) -> str:
    """The result paragraph the README quotes, rendered from a report's ``claims``.

    A list item per arm that has controls (every arm compared with a baseline when none
    has), with one line for its difference to the baseline and one per control, metric
    by metric, each with its verdict; the rule in words below. A ``note`` in ``claims_`` (e.g. that the
    numbers are a placeholder) is shown first.
    """
    rows = claims_["rows"]
    with_controls = list(OrderedDict.fromkeys(r["arm"] for r in rows if r["role"] == "control"))
    arms = with_controls or list(OrderedDict.fromkeys(r["arm"] for r in rows))
    seeds = claims_.get("seeds") or []
    lines = []
    if claims_.get("note"):
        lines.append(f"*{claims_['note']}*\n")
    lines.append(f"{claims_['title']} ({claims_['scale']} scale, {len(seeds)} seed(s)); paired difference "
                 "to each comparison arm (same seed), mean ± 95 % t-interval, and its verdict:\n")
    if not arms:
        lines.append("- no arm is compared with a baseline: no claims.")
    for arm in arms:
        groups: OrderedDict[str, list[Mapping[str, Any]]] = OrderedDict()
        for r in rows:
            if r["arm"] == arm:
                groups.setdefault(r["versus"], []).append(r)
        lines.append(f"- **{arm}**")
        lines += [f"  - vs {versus}: " + ", ".join(f"{r['label']} {_difference(r)} ({r['verdict']})" for r in rs) + "."
                  for versus, rs in groups.items()]
    lines.append(f"\nVerdict rule: {claims_['rule']}")
    return "\n".join(lines) + "\n"


def _claims_markers(name: str) -> tuple[str, str]:
    return f"<!-- claims:{name} -->\n", "<!-- /claims -->"


def claims_block(text: str, name: str) -> str:
    """The text between ``<!-- claims:NAME -->`` (and its line end) and the next
    ``<!-- /claims -->`` in ``text`` (a README).

    Raises:
        ValueError: no such block (names the marker that is missing).

    >>> claims_block("a\\n<!-- claims:quickstart -->\\nsome text\\n<!-- /claims -->\\nb", "quickstart")
    'some text\\n'
    """
    start, end = _claims_markers(name)
    i = text.find(start)
    if i < 0:
        raise ValueError(f"expected a line '{start.strip()}', found none")
    j = text.find(end, i + len(start))
    if j < 0:
        raise ValueError(f"expected '{end}' after '{start.strip()}', found none")
    return text[i + len(start):j]


def with_claims_block(text: str, name: str, paragraph: str) -> str:
    """``text`` with the content of its ``claims:NAME`` block replaced by ``paragraph``
    (see :func:`claims_block`; raises as it does)."""
    start, _ = _claims_markers(name)
    old = claims_block(text, name)
    i = text.find(start) + len(start)
    return text[:i] + paragraph + text[i + len(old):]


def summarize(plan: dict[str, Any]) -> dict[str, Any]:
    """Per-arm statistics of the finished evaluations listed in ``plan`` (``repro.json``).

    Raises:
        FileNotFoundError: an evaluation of the plan has no ``done.json`` (not finished).
    """
    per_arm: OrderedDict[str, dict[int, dict[str, float]]] = OrderedDict((a, {}) for a in plan["arms"])
    reports: OrderedDict[str, list[str]] = OrderedDict((a, []) for a in plan["arms"])
    failed: OrderedDict[str, list[dict[str, Any]]] = OrderedDict((a, []) for a in plan["arms"])
    loaded = []
    for st in plan["stages"]:
        if st["kind"] != "eval":
            continue
        done = Path(st["folder"]) / "done.json"
        if not done.is_file():
            raise FileNotFoundError(f"{done}: the evaluation '{st['name']}' has not finished")
        report_path = json.loads(done.read_text())["report"]
        report = json.loads(Path(report_path).read_text())
        per_arm[st["arm"]][st["seed"]] = metrics(report)
        reports[st["arm"]].append(report_path)
        failed[st["arm"]] += failed_checks(report, st["seed"])
        loaded.append(report)
    summary = summary_of(plan, per_arm, reports, failed)
    spec = plan.get("eval") or {}
    summary["brain"] = brain_notes(loaded, reference_name(spec.get("recording")), (spec.get("budget") or {}).get("rsa_rdm"))
    return summary


def summary_of(
    plan: Mapping[str, Any],
    per_arm: Mapping[str, Mapping[int, Mapping[str, float]]],
    reports: Mapping[str, Sequence[str]],
    failed: Mapping[str, Sequence[Mapping[str, Any]]],
) -> dict[str, Any]:
    """The summary of a plan's evaluations: :func:`arm_statistics` per arm (with its
    report paths, failed sanity checks and controls) and the :func:`claims`.

    Args:
        plan: the plan (``repro.json``).
        per_arm: ``{arm: {seed: {metric: value}}}`` of the evaluations to summarize.
        reports, failed: per arm, its report paths and :func:`failed_checks`.
    """
    baselines, controls = arm_baselines(plan), arm_controls(plan)
    names, arms = arm_statistics(per_arm, baselines)
    for arm, entry in arms.items():
        entry.update({"reports": list(reports[arm]), "sanity_failed": list(failed[arm]), "controls": controls[arm]})
    claims_ = {"recipe": plan["recipe"], "title": plan["title"], "scale": plan["scale"], "seeds": plan["seeds"],
               "rule": CLAIM_RULE, "rows": claims(per_arm, baselines, controls, claim_metrics(names) + brain_claim_metrics(names))}
    return {"recipe": plan["recipe"], "title": plan["title"], "scale": plan["scale"], "baseline": plan["baseline"],
            "seeds": plan["seeds"], "metrics": names, "arms": arms, "claims": claims_}


def baseline_groups(summary: Mapping[str, Any]) -> OrderedDict[str, list[str]]:
    """``{baseline arm: [the arms compared with it]}`` of a summary, in arm order."""
    groups: OrderedDict[str, list[str]] = OrderedDict()
    for arm, entry in summary["arms"].items():
        if entry.get("baseline") is not None:
            groups.setdefault(entry["baseline"], []).append(arm)
    return groups


def mean_ci_cell(entry: Mapping[str, Any] | None, key: str | None = None) -> str:
    """``"mean ± ci95"`` of a statistics entry (or of its ``key`` part, e.g.
    ``"diff_vs_baseline"``); the mean alone for one value; ``"–"`` when missing."""
    if entry is None:
        return "–"
    e = entry if key is None else entry.get(key)
    if e is None:
        return "–"
    if e["n"] < 2:
        return f"{e['mean']:.3f}"
    return f"{e['mean']:.3f} ± {e['ci95']:.3f}"


def tables(summary: dict[str, Any]) -> str:
    """Markdown: the headline metrics per arm (mean ± 95 % CI) and the paired
    differences, one table per baseline arm with the arms compared with it."""
    arms = list(summary["arms"])
    rows = [n for n in summary["metrics"] if is_headline(n) and not _is_brain(n)]  # brain similarity: its own table
    n_seeds = max(len(a["seeds"]) for a in summary["arms"].values())
    head = "| metric | " + " | ".join(arms) + " |\n|---|" + "---|" * len(arms) + "\n"
    md = [f"# {summary['title']} — {summary['scale']}\n",
          f"Mean ± 95 % CI over {n_seeds} seed(s) (t-interval). Accuracies in [0, 1]; "
          "perturbation sizes (medians) in image units.\n", head]
    for n in rows:
        md.append(f"| {metric_label(n)} | " + " | ".join(mean_ci_cell(summary["arms"][a]["metrics"].get(n)) for a in arms) + " |\n")
    for baseline, others in baseline_groups(summary).items():
        md.append(f"\nPaired difference to the baseline arm `{baseline}` (same seed), mean ± 95 % CI; "
                  "an interval that contains 0 is no evidence of a difference.\n\n")
        md.append("| metric | " + " | ".join(others) + " |\n|---|" + "---|" * len(others) + "\n")
        for n in rows:
            md.append(f"| {metric_label(n)} | " + " | ".join(mean_ci_cell(summary["arms"][a]["metrics"].get(n), "diff_vs_baseline") for a in others) + " |\n")
    md.append(brain_table(summary))
    if "claims" in summary:
        md.append(claims_table(summary["claims"]))
    md.append("\nSanity checks of the evaluations (`report.json` → `sanity`): ")
    failures = [(a, f) for a in arms for f in summary["arms"][a].get("sanity_failed", [])]
    if not failures:
        md.append("all passed.\n")
    else:
        md.append(f"**{len(failures)} FAILED** — the robustness numbers of these runs may be overestimated.\n\n")
        md.append("| arm | seed | check | detail |\n|---|---|---|---|\n")
        for a, f in failures:
            md.append(f"| {a} | {f['seed']} | {f['check']} | {f['detail']} |\n")
    return "".join(md)


def brain_table(summary: Mapping[str, Any]) -> str:
    """Markdown: brain similarity per arm (mean ± 95 % CI over seeds) with what bounds each
    measure (:func:`brain_notes`); empty when the evaluation measured none."""
    rows = brain_metrics(summary["metrics"])
    notes = summary.get("brain") or {}
    if not rows:
        return ""
    arms = list(summary["arms"])
    md = ["\n## Brain similarity\n\n"]
    rec, rdm = notes.get("recording"), notes.get("rdm")
    if rec:
        ceiling = rec.get("ceiling_median")
        ceiling = "not defined (fewer than 2 repeats)" if ceiling is None or not np.isfinite(ceiling) else f"{ceiling:.3f}"
        md.append(f"Predictivity: cross-validated ridge from the layer to each neuron of the recording "
                  f"`{rec.get('name')}` (tier {rec.get('tier')}: {rec.get('n_images')} images, {rec.get('n_neurons')} neurons), "
                  f"Pearson r divided by the neuron's split-half (Spearman–Brown) ceiling, median over neurons; "
                  f"median ceiling {ceiling}. RSA vs recording: Spearman correlation of the layer's and the recording's "
                  f"RDMs on those images.\n")
    if rdm:
        bound = rdm.get("noise_ceiling")
        if bound is not None and np.isfinite(bound):
            bound_text = f"its noise ceiling is {bound:.3f}"
        else:
            bound_text = f"no noise ceiling: {rdm.get('noise_ceiling_note') or 'the data do not allow one'}"
        whose = " ".join(str(v) for v in (rdm.get("species"), rdm.get("area")) if v)
        md.append(f"RSA vs RDM: {rdm.get('method') or 'rank'} correlation of the layer's RDM with the {whose + ' ' if whose else ''}"
                  f"RDM `{rdm.get('name')}` over its {rdm.get('n_images')} images; {bound_text}.\n")
    md.append("\n| measure | " + " | ".join(arms) + " |\n|---|" + "---|" * len(arms) + "\n")
    for n in rows:
        md.append(f"| {brain_label(n)} | " + " | ".join(mean_ci_cell(summary["arms"][a]["metrics"].get(n)) for a in arms) + " |\n")
    return "".join(md)


def _csv(summary: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["arm", "metric", "mean", "ci95", "n", "baseline", "diff_vs_baseline", "diff_ci95", "values"])
    for arm, a in summary["arms"].items():
        for n, e in a["metrics"].items():
            d = e.get("diff_vs_baseline") or {}
            w.writerow([arm, n, e["mean"], e["ci95"], e["n"], a.get("baseline") or "", d.get("mean", ""), d.get("ci95", ""),
                        " ".join(f"{v:.6g}" for v in e["values"])])
    return buf.getvalue()


def claims_csv(claims_: Mapping[str, Any]) -> str:
    """CSV text of the claims table: one row per claim."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["arm", "versus", "role", "metric", "mean", "ci95", "n", "verdict"])
    for r in claims_["rows"]:
        w.writerow([r["arm"], r["versus"], r["role"], r["metric"], r["mean"], r["ci95"], r["n"], r["verdict"]])
    return buf.getvalue()


def plot_corruptions(summary: dict[str, Any], path: Path) -> Path | None:
    """Grouped bars: accuracy per corruption (mean over severities), per arm, ± 95 % CI."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure


    names = [n for n in summary["metrics"] if n.startswith(Corruptions.per_corruption)]
    if not names:
        return None
    arms = list(summary["arms"])
    fig = Figure(figsize=(max(6.0, 0.9 * len(names) * max(1, len(arms)) / 2), 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    width = 0.8 / len(arms)
    x = np.arange(len(names))
    for i, arm in enumerate(arms):
        m = summary["arms"][arm]["metrics"]
        means = [m[n]["mean"] if n in m else np.nan for n in names]
        errs = [m[n]["ci95"] if n in m else 0.0 for n in names]
        ax.bar(x + (i - (len(arms) - 1) / 2) * width, means, width, yerr=errs, capsize=2, label=arm)
    ax.set_xticks(x, [n.rsplit("/", 1)[1].replace("_", " ") for n in names], rotation=30, ha="right")
    ax.set(ylabel="accuracy (mean over severities)", ylim=(0, 1.02), title="Common corruptions (mean ± 95% CI over seeds)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110), mode="wb")
    return path


def write_report(plan: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write every file of the comparison report into ``out`` (see the module docstring)."""
    from neuroreg.evaluation.compare import compare

    from .stages import write_json

    summary = summarize(plan)
    out.mkdir(parents=True, exist_ok=True)
    groups = OrderedDict((arm, a["reports"]) for arm, a in summary["arms"].items())
    paths = dict(compare([], out, groups=groups))
    md = tables(summary)
    paths["summary_md"] = out / "summary.md"
    atomic_write(paths["summary_md"], lambda f: f.write(md))
    text = _csv(summary)
    paths["summary_csv"] = out / "summary.csv"
    atomic_write(paths["summary_csv"], lambda f: f.write(text))
    claims_text, paragraph = claims_csv(summary["claims"]), claims_paragraph(summary["claims"])
    paths["claims_csv"] = out / "claims.csv"
    atomic_write(paths["claims_csv"], lambda f: f.write(claims_text))
    paths["claims_md"] = out / "claims.md"
    atomic_write(paths["claims_md"], lambda f: f.write(paragraph))
    corr = plot_corruptions(summary, out / "corruptions.png")
    if corr:
        paths["corruptions_png"] = corr
    paths["summary_json"] = write_json(out / "summary.json", summary)
    return paths
