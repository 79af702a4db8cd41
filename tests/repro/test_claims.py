"""The claims table of a reproduction report, its rendering, and the README's claims block."""

import csv
import json
import runpy
from pathlib import Path

import numpy as np
import pytest

from neuroreg.evaluation.measurements import Clean, Corruptions, GaussianNoise, Measurement
from neuroreg.repro.report import (
    CLAIM_RULE,
    arm_baselines,
    arm_controls,
    claim_metrics,
    claims,
    claims_block,
    claims_csv,
    claims_paragraph,
    claims_table,
    summarize,
    verdict,
    with_claims_block,
)

ROOT = Path(__file__).resolve().parents[2]
T_975 = {2: 12.7062047, 3: 4.30265273, 5: 2.77644511}  # Student t quantile, n - 1 degrees of freedom


class Ensemble(Measurement):
    """A stand-in for the robust-accuracy measurement that marks its scalars as headline."""

    name = "robust_linf"
    headline = ("eval/robust_linf_accuracy_eps=",)


def test_claim_metrics_follow_the_measurement_list():
    names = ["eval/clean_accuracy", "eval/noise_accuracy_sigma=0", "eval/noise_accuracy_sigma=0.1",
             "eval/robust_linf_accuracy_eps=0", "eval/robust_linf_accuracy_eps=0.0157", "eval/pgd_linf_accuracy_eps=0.0157",
             "eval/mean_corruption_accuracy", "eval/relative_mce", "eval/corruption/fog", "eval/minimal_l2_median"]
    measurements = [Clean(), GaussianNoise(), Corruptions(), Ensemble()]
    # PGD is not in this list, so its scalars are not claims; clean accuracy and strength 0 never are
    assert claim_metrics(names, measurements) == [
        "eval/noise_accuracy_sigma=0.1", "eval/robust_linf_accuracy_eps=0.0157", "eval/mean_corruption_accuracy"]
    # with the default list, the robust accuracies are whatever it marks as headline
    assert "eval/clean_accuracy" not in claim_metrics(names)
    assert "eval/mean_corruption_accuracy" in claim_metrics(names)


def test_verdict_rule():
    assert verdict(0.19, 0.08, 5) == "gain"
    assert verdict(-0.19, 0.08, 5) == "loss"
    assert verdict(0.05, 0.08, 5) == "no evidence"
    assert verdict(0.08, 0.08, 5) == "no evidence"  # touching 0 is not clear of it
    assert verdict(0.5, 0.0, 1) == "no evidence"  # one seed: no interval
    assert verdict(float("nan"), 0.1, 3) == "no evidence"
    assert "entirely above 0" in CLAIM_RULE and "fewer than 2" in CLAIM_RULE


def _per_arm():
    eps = "eval/robust_linf_accuracy_eps=0.0157"
    base = {0: 0.10, 1: 0.20, 2: 0.15}
    sim = {0: 0.35, 1: 0.40, 2: 0.38}
    pix = {0: 0.30, 1: 0.45, 2: 0.20}
    shuf = {0: 0.05, 1: 0.12, 2: 0.10}
    per_arm = {}
    for arm, vals in (("baseline", base), ("similarity", sim), ("pixels", pix), ("shuffled", shuf)):
        per_arm[arm] = {s: {eps: v, "eval/clean_accuracy": 0.99, "eval/mean_corruption_accuracy": 0.8 + 0.01 * s}
                        for s, v in vals.items()}
    del per_arm["pixels"][2]  # pixels ran two seeds only: pairs with it have n = 2
    return eps, per_arm


def test_claims_pair_each_arm_with_its_baseline_and_controls():
    eps, per_arm = _per_arm()
    baselines = {"baseline": None, "similarity": "baseline", "pixels": "baseline", "shuffled": "baseline"}
    controls = {"similarity": ["pixels", "shuffled"]}
    rows = claims(per_arm, baselines, controls, [eps, "eval/mean_corruption_accuracy"])
    assert [(r["arm"], r["versus"], r["role"], r["metric"]) for r in rows] == [
        ("similarity", "baseline", "baseline", eps), ("similarity", "baseline", "baseline", "eval/mean_corruption_accuracy"),
        ("similarity", "pixels", "control", eps), ("similarity", "pixels", "control", "eval/mean_corruption_accuracy"),
        ("similarity", "shuffled", "control", eps), ("similarity", "shuffled", "control", "eval/mean_corruption_accuracy"),
        ("pixels", "baseline", "baseline", eps), ("pixels", "baseline", "baseline", "eval/mean_corruption_accuracy"),
        ("shuffled", "baseline", "baseline", eps), ("shuffled", "baseline", "baseline", "eval/mean_corruption_accuracy"),
    ]
    by = {(r["arm"], r["versus"], r["metric"]): r for r in rows}
    d = np.array([0.25, 0.20, 0.23])  # similarity − baseline, same seed
    r = by[("similarity", "baseline", eps)]
    assert r["mean"] == pytest.approx(d.mean())
    assert r["ci95"] == pytest.approx(T_975[3] * d.std(ddof=1) / np.sqrt(3), rel=1e-6)
    assert r["n"] == 3 and r["verdict"] == "gain" and r["label"] == "robust L∞ ε=0.0157"  # the ensemble measurement's label
    d = np.array([0.05, -0.05])  # similarity − pixels on the two seeds pixels ran
    r = by[("similarity", "pixels", eps)]
    assert (r["n"], r["verdict"]) == (2, "no evidence") and r["mean"] == pytest.approx(0.0, abs=1e-12)
    assert r["ci95"] == pytest.approx(T_975[2] * d.std(ddof=1) / np.sqrt(2), rel=1e-6)
    d = np.array([-0.05, -0.08, -0.05])  # shuffled − baseline
    r = by[("shuffled", "baseline", eps)]
    assert r["verdict"] == "loss" and r["mean"] == pytest.approx(d.mean())
    # identical corruption accuracy in every arm: a zero difference, no evidence either way
    r = by[("similarity", "baseline", "eval/mean_corruption_accuracy")]
    assert (r["mean"], r["ci95"], r["verdict"]) == (pytest.approx(0.0, abs=1e-12), pytest.approx(0.0, abs=1e-12), "no evidence")


def _fake_evals(tmp_path, values):
    """Evaluation stages whose reports hold clean, Gaussian-noise and corruption sections."""
    stages = []
    for (arm, seed), (noise, corr) in values.items():
        folder = tmp_path / f"{arm}{seed}"
        folder.mkdir()
        report = {"clean_accuracy": 0.99, "gaussian_noise": {"sigma": [0.0, 0.2], "accuracy": [0.99, noise]},
                  "corruptions": {"per_corruption": {"fog": {"severity": [1], "accuracy": [corr]}}, "mean_accuracy": corr},
                  "complete": True}
        (folder / "report.json").write_text(json.dumps(report))
        (folder / "done.json").write_text(json.dumps({"report": str(folder / "report.json")}))
        stages.append({"kind": "eval", "name": f"eval {arm} seed {seed}", "folder": str(folder), "arm": arm, "seed": seed})
    return stages


def test_summary_holds_the_claims_and_writes_them(tmp_path):
    from neuroreg.repro.report import tables

    values = {("baseline", 0): (0.50, 0.70), ("baseline", 1): (0.60, 0.72),
              ("similarity", 0): (0.70, 0.71), ("similarity", 1): (0.78, 0.70),
              ("pixels", 0): (0.69, 0.71), ("pixels", 1): (0.80, 0.72)}
    arms = {"baseline": {"baseline": None, "controls": []}, "similarity": {"baseline": "baseline", "controls": ["pixels"]},
            "pixels": {"baseline": "baseline", "controls": []}}
    plan_json = {"recipe": "t", "title": "T", "scale": "mini", "baseline": "baseline", "arms": arms, "seeds": [0, 1],
                 "stages": _fake_evals(tmp_path, values)}
    assert arm_controls(plan_json) == {"baseline": [], "similarity": ["pixels"], "pixels": []}
    assert arm_controls({**plan_json, "arms": list(arms)}) == {"baseline": [], "similarity": [], "pixels": []}
    assert arm_baselines(plan_json)["pixels"] == "baseline"
    summary = summarize(plan_json)
    c = summary["claims"]
    assert (c["recipe"], c["scale"], c["seeds"], c["rule"]) == ("t", "mini", [0, 1], CLAIM_RULE)
    assert summary["arms"]["similarity"]["controls"] == ["pixels"]
    assert [(r["arm"], r["versus"], r["metric"]) for r in c["rows"]] == [
        ("similarity", "baseline", "eval/noise_accuracy_sigma=0.2"), ("similarity", "baseline", "eval/mean_corruption_accuracy"),
        ("similarity", "pixels", "eval/noise_accuracy_sigma=0.2"), ("similarity", "pixels", "eval/mean_corruption_accuracy"),
        ("pixels", "baseline", "eval/noise_accuracy_sigma=0.2"), ("pixels", "baseline", "eval/mean_corruption_accuracy")]
    noise = c["rows"][0]
    assert noise["mean"] == pytest.approx(0.19) and noise["label"] == "noise σ=0.2"
    assert noise["ci95"] == pytest.approx(T_975[2] * np.std([0.20, 0.18], ddof=1) / np.sqrt(2), rel=1e-6)
    assert noise["verdict"] == "gain"  # 0.19 ± 0.127
    assert c["rows"][2]["verdict"] == "no evidence"  # vs pixels: +0.01 and −0.02
    md = tables(summary)
    assert CLAIM_RULE in md
    assert "| similarity | baseline | noise σ=0.2 | +0.190 ± 0.127 | 2 | gain |" in md
    assert "| similarity | pixels (control) | noise σ=0.2 | -0.005 ± 0.191 | 2 | no evidence |" in md
    assert md.index("## Claims") > md.index("Paired difference to the baseline arm")
    rows = list(csv.DictReader(claims_csv(c).splitlines()))
    assert len(rows) == 6 and rows[2]["versus"] == "pixels" and rows[2]["role"] == "control"
    assert float(rows[0]["mean"]) == pytest.approx(0.19) and rows[0]["verdict"] == "gain"


CLAIMS = {
    "recipe": "quickstart", "title": "Quickstart", "scale": "mini", "seeds": [0, 1, 2], "rule": "gain: above 0.",
    "rows": [
        {"arm": "similarity", "versus": "baseline", "role": "baseline", "metric": "eval/robust_linf_accuracy_eps=0.0157",
         "label": "robust L∞ ε=0.0157", "mean": 0.1912, "ci95": 0.0804, "n": 3, "verdict": "gain"},
        {"arm": "similarity", "versus": "baseline", "role": "baseline", "metric": "eval/noise_accuracy_sigma=0.1",
         "label": "noise σ=0.1", "mean": -0.004, "ci95": 0.02, "n": 3, "verdict": "no evidence"},
        {"arm": "similarity", "versus": "pixels", "role": "control", "metric": "eval/robust_linf_accuracy_eps=0.0157",
         "label": "robust L∞ ε=0.0157", "mean": 0.0123, "ci95": 0.1, "n": 3, "verdict": "no evidence"},
        {"arm": "similarity", "versus": "pixels", "role": "control", "metric": "eval/noise_accuracy_sigma=0.1",
         "label": "noise σ=0.1", "mean": -0.2, "ci95": 0.0, "n": 1, "verdict": "no evidence"},
        {"arm": "pixels", "versus": "baseline", "role": "baseline", "metric": "eval/noise_accuracy_sigma=0.1",
         "label": "noise σ=0.1", "mean": 0.3, "ci95": 0.1, "n": 3, "verdict": "gain"},
    ],
}


def test_claims_paragraph_rendering_is_exact():
    assert claims_paragraph(CLAIMS) == (
        "Quickstart (mini scale, 3 seed(s)); paired difference to each comparison arm (same seed), "
        "mean ± 95 % t-interval, and its verdict:\n\n"
        "- **similarity**\n"
        "  - vs baseline: robust L∞ ε=0.0157 +0.191 ± 0.080 (gain), noise σ=0.1 -0.004 ± 0.020 (no evidence).\n"
        "  - vs pixels: robust L∞ ε=0.0157 +0.012 ± 0.100 (no evidence), noise σ=0.1 -0.200 (no evidence).\n"
        "\nVerdict rule: gain: above 0.\n"
    )
    # without controls anywhere, every compared arm gets a line; a note comes first
    no_controls = {**CLAIMS, "note": "Placeholder.", "rows": [r for r in CLAIMS["rows"] if r["role"] == "baseline"]}
    text = claims_paragraph(no_controls)
    assert text.startswith("*Placeholder.*\n\nQuickstart")
    assert "- **similarity**\n  - vs baseline: " in text and "- **pixels**\n  - vs baseline: noise σ=0.1 +0.300 ± 0.100 (gain).\n" in text
    assert "- no arm is compared with a baseline: no claims." in claims_paragraph({**CLAIMS, "rows": []})
    assert "No arm is compared with a baseline" in claims_table({**CLAIMS, "rows": []})


def test_claims_block_is_found_and_replaced():
    text = "intro\n<!-- claims:quickstart -->\nold\n<!-- /claims -->\nrest\n"
    assert claims_block(text, "quickstart") == "old\n"
    assert with_claims_block(text, "quickstart", "new\nlines\n") == "intro\n<!-- claims:quickstart -->\nnew\nlines\n<!-- /claims -->\nrest\n"
    with pytest.raises(ValueError, match="claims:li2019"):
        claims_block(text, "li2019")
    with pytest.raises(ValueError, match="<!-- /claims -->"):
        claims_block("<!-- claims:quickstart -->\nno end\n", "quickstart")


@pytest.mark.parametrize("name, scale", [("quickstart", "mini"), ("quickstart_real", "real")])
def test_readme_quotes_the_committed_quickstart_claims(name, scale):
    committed = json.loads((ROOT / "docs" / f"{name}_claims.json").read_text())
    assert committed["recipe"] == "quickstart" and committed["scale"] == scale and committed["rows"]
    assert claims_block((ROOT / "README.md").read_text(), name) == claims_paragraph(committed)


def test_docs_script_copies_a_report_claims_into_the_readme(tmp_path, monkeypatch):
    report = tmp_path / "report"
    report.mkdir()
    (report / "summary.json").write_text(json.dumps({"claims": CLAIMS}))
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- claims:demo -->\nstale\n<!-- /claims -->\n")
    script = runpy.run_path(str(ROOT / "docs" / "claims.py"))
    docs = tmp_path / "docs"
    docs.mkdir()
    monkeypatch.setitem(script["main"].__globals__, "DOCS", docs)
    assert script["main"]([str(report), "--name", "demo", "--readme", str(readme)]) == 0
    assert json.loads((docs / "demo_claims.json").read_text()) == CLAIMS
    assert claims_block(readme.read_text(), "demo") == claims_paragraph(CLAIMS)
