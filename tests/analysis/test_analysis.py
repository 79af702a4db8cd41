"""neuroreg.analysis: reading reproductions, curves and tables, twin diagnostics, representations."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from neuroreg.analysis.representations import (
    Profile,
    Spectrum,
    alpha_table,
    default_layers,
    profile_table,
    rdms,
    spectrum,
)
from neuroreg.analysis.results import (
    AnalysisError,
    Table,
    comparison_table,
    curve_over_seeds,
    load_repro,
    plot_robustness,
    robustness_curves,
    seed_table,
)
from neuroreg.analysis.twin import (
    diagnose,
    feature_to_image,
    predict,
    readout_positions,
)
from neuroreg.twin.readouts import FactorizedReadout, GaussianReadout

T975 = {1: 12.706204736174698, 2: 4.302652729749464}  # t_{0.975, df}


# ------------------------------------------------------------- a fake reproduction
def _report(clean: float, drop: float) -> dict:
    """A complete evaluation report whose accuracies fall linearly with perturbation size."""
    return {
        "complete": True, "n_images": 32, "clean_accuracy": clean,
        "gaussian_noise": {"sigma": [0.2, 0.0, 0.1], "accuracy": [clean - 2 * drop, clean, clean - drop]},
        "pgd_linf": {"epsilon": [0.0, 0.01], "accuracy": [clean, clean - 3 * drop]},
        "robust_linf": {"epsilon": [0.0, 0.01], "accuracy": [clean, clean - 3 * drop], "n_images": 32,
                        "members": {"pgd": [clean, clean - 3 * drop], "apgd_ce": [clean, clean - 3 * drop]}},
        "corruptions": {"per_corruption": {"fog": {"severity": [1, 5], "accuracy": [clean, clean - 4 * drop]},
                                           "contrast": {"severity": [1, 5], "accuracy": [clean - drop, clean - 2 * drop]}},
                        "mean_accuracy": clean - 1.75 * drop},
    }


CLEAN = {("baseline", 0): 0.9, ("baseline", 1): 0.7, ("sim", 0): 0.95, ("sim", 1): 0.85,
         ("color_baseline", 0): 0.6, ("color_baseline", 1): 0.5, ("color_sim", 0): 0.5, ("color_sim", 1): 0.46}


def _write(path: Path, payload) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))


def make_repro(root: Path, groups: bool = False) -> Path:
    """OUT with 2 arms × 2 seeds, a twin used by arm ``sim``, every stage done; with
    ``groups``, a second group (``color_sim`` against its own ``color_baseline``)."""
    arms = ("baseline", "sim", "color_baseline", "color_sim") if groups else ("baseline", "sim")
    out = root / "out"
    twin_dir = out / "stages" / "twin-k1"
    targets_dir = out / "stages" / "targets-k2"
    stages = [{"name": "twin k1", "kind": "twin", "key": "k1", "folder": str(twin_dir), "deps": []},
              {"name": "targets sim", "kind": "targets", "key": "k2", "folder": str(targets_dir), "deps": ["twin k1"]}]
    _write(twin_dir / "done.json", {"checkpoint": str(root / "cache" / "twin.ckpt"), "config": "experiments/twin/sim_mouse_v1.yaml",
                                    "overrides": ["--trainer.max_epochs=1"]})
    _write(targets_dir / "done.json", {"num_neurons": {"twin": 10}})
    evals = []
    for seed in (0, 1):
        for arm in arms:
            fit = out / "runs" / arm / f"seed{seed}-f{arm}{seed}"
            ev = fit / "evals" / f"e{seed}"
            deps = ["targets sim"] if arm == "sim" else []
            stages.append({"name": f"fit {arm} seed {seed}", "kind": "fit", "key": f"f{arm}{seed}", "folder": str(fit), "deps": deps,
                           "arm": arm, "seed": seed})
            evals.append({"name": f"eval {arm} seed {seed}", "kind": "eval", "key": f"e{seed}", "folder": str(ev),
                          "deps": [f"fit {arm} seed {seed}"], "arm": arm, "seed": seed})
            _write(fit / "done.json", {"checkpoint": str(fit / "final.ckpt"), "config": str(fit / "config.yaml"), "metrics": {"val/accuracy": 0.5}})
            _write(ev / "eval" / "report.json", _report(CLEAN[(arm, seed)], 0.1 if arm == "baseline" else 0.05))
            _write(ev / "done.json", {"report": str(ev / "eval" / "report.json")})
    plan = {"recipe": "fake", "title": "A fake reproduction", "scale": "mini", "seeds": [0, 1], "baseline": "baseline",
            "arms": {"baseline": {}, "sim": {}}, "stages": stages + evals}
    if groups:  # as `neuroreg repro` writes it: each arm's baseline, null for a baseline arm
        plan["arms"] = {"baseline": {"baseline": None}, "sim": {"baseline": "baseline"},
                        "color_baseline": {"baseline": None}, "color_sim": {"baseline": "color_baseline"}}
    _write(out / "repro.json", plan)
    return out


def test_load_repro_reads_plan_fits_twins_and_matches_the_report_summary(tmp_path):
    from neuroreg.repro.report import summarize

    out = make_repro(tmp_path)
    res = load_repro(out)
    assert res.arms == ["baseline", "sim"] and res.seeds == [0, 1] and res.baseline == "baseline"
    assert [(r.arm, r.seed, r.status, r.eval_status) for r in res.runs()] == [
        ("baseline", 0, "done", "done"), ("baseline", 1, "done", "done"), ("sim", 0, "done", "done"), ("sim", 1, "done", "done")]
    assert res.run("sim", 1).checkpoint == out / "runs" / "sim" / "seed1-fsim1" / "final.ckpt"
    assert [t.arms for t in res.twins] == [("sim",)] and res.twin(0).overrides == ("--trainer.max_epochs=1",)
    # the same statistics as `neuroreg repro`'s report
    assert res.summary == summarize(json.loads((out / "repro.json").read_text()))
    clean = res.summary["arms"]["sim"]["metrics"]["eval/clean_accuracy"]
    assert clean["mean"] == pytest.approx(0.9) and clean["ci95"] == pytest.approx(T975[1] * np.std([0.95, 0.85], ddof=1) / np.sqrt(2))
    assert clean["diff_vs_baseline"]["mean"] == pytest.approx(0.1)  # paired: (0.05 + 0.15) / 2
    with pytest.raises(AnalysisError, match="twin stage number 1"):
        res.twin(1)
    with pytest.raises(KeyError, match="arms are"):
        res.runs("nope")


def test_load_repro_follows_a_moved_folder_and_partial_results(tmp_path):
    out = make_repro(tmp_path / "a")
    moved = tmp_path / "b" / "copy"
    moved.parent.mkdir()
    shutil.move(str(out), moved)
    res = load_repro(moved)
    assert all(r.report_path is not None and r.report_path.is_relative_to(moved) for r in res.runs())
    assert res.twin().checkpoint == tmp_path / "a" / "cache" / "twin.ckpt"  # outside OUT: unchanged
    assert res.summary["arms"]["baseline"]["metrics"]["eval/clean_accuracy"]["mean"] == pytest.approx(0.8)
    # one evaluation failed, one fit still running: left out, reported by status
    victim = Path(res.run("baseline", 1).report_path).parents[1]
    (victim / "done.json").unlink()
    (victim / "failed.json").write_text("{}")
    (Path(res.run("sim", 0).folder) / "done.json").unlink()
    res = load_repro(moved)
    assert res.run("baseline", 1).eval_status == "failed" and res.runs("sim")[0].status == "pending"
    assert res.summary["arms"]["baseline"]["metrics"]["eval/clean_accuracy"]["values"] == [0.9]
    assert res.status().rows == [["twin", "1", "0", "0"], ["targets", "1", "0", "0"], ["fit", "3", "0", "1"], ["eval", "3", "1", "0"]]
    assert seed_table(res).rows == [["baseline", "0.900", "–"], ["sim", "0.950", "0.850"]]


def test_load_repro_errors_name_the_file_and_field(tmp_path):
    with pytest.raises(AnalysisError, match=r"repro\.json: file not found"):
        load_repro(tmp_path)
    out = make_repro(tmp_path)
    plan = json.loads((out / "repro.json").read_text())
    del plan["arms"]
    (out / "repro.json").write_text(json.dumps(plan))
    with pytest.raises(AnalysisError, match=r"repro\.json: field 'arms'"):
        load_repro(out)
    (out / "repro.json").write_text("{not json")
    with pytest.raises(AnalysisError, match=r"repro\.json: expected a JSON file"):
        load_repro(out)
    out = make_repro(tmp_path / "again")
    report = next(out.glob("runs/sim/*/evals/*/eval/report.json"))
    report.write_text(json.dumps({**json.loads(report.read_text()), "complete": False}))
    with pytest.raises(AnalysisError, match=r"report\.json: field 'complete'"):
        load_repro(out)


def test_curves_are_mean_and_t_interval_over_seeds(tmp_path):
    res = load_repro(make_repro(tmp_path))
    curves = robustness_curves(res)
    assert list(curves) == ["gaussian_noise", "corruptions", "pgd_linf", "robust_linf"]
    c = curves["gaussian_noise"]["baseline"]
    np.testing.assert_allclose(c.x, [0.0, 0.1, 0.2])  # sorted
    np.testing.assert_allclose(c.values, [[0.9, 0.8, 0.7], [0.7, 0.6, 0.5]])
    np.testing.assert_allclose(c.mean, [0.8, 0.7, 0.6])
    np.testing.assert_allclose(c.ci95, T975[1] * np.std([0.9, 0.7], ddof=1) / np.sqrt(2))
    # corruptions: accuracy per severity averaged over corruptions
    np.testing.assert_allclose(curves["corruptions"]["sim"].mean, [np.mean([0.95, 0.9, 0.85, 0.8]), np.mean([0.75, 0.85, 0.65, 0.75])])
    # three seeds: t with 2 degrees of freedom
    three = curve_over_seeds([_report(v, 0.0) for v in (0.6, 0.8, 1.0)], "pgd_linf")
    assert three.n == 3 and three.ci95[0] == pytest.approx(T975[2] * 0.2 / np.sqrt(3))
    bad = _report(0.5, 0.0)
    bad["pgd_linf"]["epsilon"] = [0.0, 0.02]
    with pytest.raises(AnalysisError, match=r"r2: field 'pgd_linf\.epsilon'"):
        curve_over_seeds([_report(0.5, 0.0), bad], "pgd_linf", names=["r1", "r2"])
    with pytest.raises(AnalysisError, match="r2: field 'pgd_l2'"):
        curve_over_seeds([{**_report(0.5, 0.0), "pgd_l2": {"epsilon": [0.0], "accuracy": [0.5]}}, _report(0.5, 0.0)], "pgd_l2", names=["r1", "r2"])
    fig = plot_robustness(curves)
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 4


def test_comparison_table_has_every_arm_and_paired_differences(tmp_path):
    res = load_repro(make_repro(tmp_path))
    table = comparison_table(res)
    assert table.columns == ["metric", "baseline", "sim"]
    assert table.rows[0] == ["clean_accuracy", f"0.800 ± {T975[1] * np.std([0.9, 0.7], ddof=1) / np.sqrt(2):.3f}",
                             f"0.900 ± {T975[1] * np.std([0.95, 0.85], ddof=1) / np.sqrt(2):.3f}"]
    assert "noise σ=0.2" in table.column("metric") and "noise σ=0" not in table.column("metric")
    diff = comparison_table(res, diff=True)
    assert diff.columns == ["metric", "sim"]
    # robust accuracy (the attack ensemble, the headline) at ε=0.01: sim − baseline per seed
    # = (0.95−0.15) − (0.9−0.3) = 0.2 and (0.85−0.15) − (0.7−0.3) = 0.3; PGD alone is a diagnostic, not a headline row
    assert "PGD L∞ ε=0.01" not in diff.column("metric")
    row = diff.rows[diff.column("metric").index("robust L∞ ε=0.01")]
    assert row[1] == f"0.250 ± {T975[1] * np.std([0.2, 0.3], ddof=1) / np.sqrt(2):.3f}"
    with pytest.raises(AnalysisError, match="was not measured"):
        comparison_table(res, metrics=["eval/autoattack_accuracy"])
    md = table.to_markdown()
    assert md.splitlines()[2] == "| metric | baseline | sim |" and table._repr_markdown_() == md


def test_arms_are_compared_with_their_own_baseline(tmp_path):
    from neuroreg.repro.report import summarize

    out = make_repro(tmp_path, groups=True)
    res = load_repro(out)
    assert res.summary == summarize(json.loads((out / "repro.json").read_text()))
    assert res.baselines == {"baseline": None, "sim": "baseline", "color_baseline": None, "color_sim": "color_baseline"}
    diff = res.summary["arms"]["color_sim"]["metrics"]["eval/clean_accuracy"]["diff_vs_baseline"]
    assert diff["mean"] == pytest.approx(-0.07)  # paired with color_baseline: (−0.1 − 0.04) / 2
    assert "diff_vs_baseline" not in res.summary["arms"]["color_baseline"]["metrics"]["eval/clean_accuracy"]
    table = comparison_table(res, diff=True)
    assert table.columns == ["metric", "sim", "color_sim"]
    assert "sim − baseline" in table.title and "color_sim − color_baseline" in table.title
    assert table.rows[0][2] == f"-0.070 ± {T975[1] * np.std([-0.1, -0.04], ddof=1) / np.sqrt(2):.3f}"


def test_table_checks_rows():
    with pytest.raises(ValueError, match="row 0: expected 2 cells"):
        Table(["a", "b"], [["1"]])
    assert Table(["a"], [["x|y"]]).to_markdown().splitlines()[-1] == "| x\\|y |"
    with pytest.raises(KeyError, match="columns are"):
        Table(["a"], []).column("b")


# ------------------------------------------------------------------ representations
def test_spectrum_recovers_a_power_law_exponent():
    rng = np.random.default_rng(0)
    n_img, d, alpha = 200, 50, 1.3
    lam = np.arange(1, d + 1, dtype=float) ** -alpha
    q, _ = np.linalg.qr(rng.standard_normal((n_img, d + 1)))
    q = q - q.mean(axis=0)  # centred columns, then re-orthonormalised
    q, _ = np.linalg.qr(q[:, :d])
    features = q * np.sqrt((n_img - 1) * lam)  # covariance = diag(λ)
    s = spectrum(features @ np.linalg.qr(rng.standard_normal((d, d)))[0])  # rotated units: same spectrum
    np.testing.assert_allclose(s.eigenvalues[:d], lam, rtol=1e-8)
    assert (s.n_min, s.n_max) == (1, 24) and s.alpha == pytest.approx(alpha, abs=1e-8)
    assert spectrum(features, 5, 40).alpha == pytest.approx(alpha, abs=1e-8)
    with pytest.raises(ValueError, match="n_min, n_max"):
        spectrum(features, 1, 500)


def test_rdms_show_class_blocks_and_tables_report_seed_statistics():
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((2, 64))
    feats = np.concatenate([centres[0] + 0.1 * rng.standard_normal((5, 64)), centres[1] + 0.1 * rng.standard_normal((5, 64))])
    d = rdms({"l": feats})["l"]
    assert np.allclose(d, d.T) and np.allclose(np.diag(d), 0)
    assert d[:5, :5].mean() < 0.1 < d[:5, 5:].mean()
    spectra = {"a": [{"l": Spectrum(np.ones(3), a, 1, 2)} for a in (1.0, 1.2)], "b": [{"l": Spectrum(np.ones(3), 0.5, 1, 2)}]}
    t = alpha_table(spectra)
    assert t.rows == [["a", f"1.10 ± {T975[1] * np.std([1.0, 1.2], ddof=1) / np.sqrt(2):.2f}"], ["b", "0.50"]]
    p = Profile(["l1", "l2"], {k: np.array([[0.2, np.nan], [0.4, 0.5]]) for k in ("ridge", "pls", "rsa", "cka")}, [0, 1])
    mean, half = p.mean_ci("ridge")
    np.testing.assert_allclose(mean, [0.3, 0.5])
    assert half[1] == 0.0 and half[0] == pytest.approx(T975[1] * np.std([0.2, 0.4], ddof=1) / np.sqrt(2))
    assert profile_table({"a": p}, "ridge").rows == [["a", f"0.300 ± {half[0]:.3f}", "0.500 ± 0.000"]]


def test_default_layers_are_the_backbone_stages():
    from neuroreg.models.backbones import SmallResNet
    from neuroreg.models.classifier import RegularizedClassifier

    model = RegularizedClassifier(SmallResNet(1, [4, 8, 8]), num_classes=3, mean=[0.5], std=[0.5])
    assert default_layers(model) == ["layer1", "layer2", "layer3"]
    assert default_layers(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Conv2d(2, 2, 3))) == ["0", "2"]


# --------------------------------------------------------------------- twin
def test_readout_positions_of_known_readouts():
    ro = GaussianReadout((4, 9, 5), n_neurons=3)
    with torch.no_grad():
        ro.mu.copy_(torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.5]]))
    np.testing.assert_allclose(readout_positions(ro), [[0, 0], [4, 8], [2, 6]])
    fr = FactorizedReadout((4, 6, 7), n_neurons=2)
    with torch.no_grad():
        fr.spatial.zero_()
        fr.spatial[0, 2, 5] = -3.0  # row 2, column 5
        fr.spatial[1, 1, 1] = fr.spatial[1, 1, 3] = 1.0  # two equal peaks: centre between them
    np.testing.assert_allclose(readout_positions(fr), [[5, 2], [2, 1]])
    with pytest.raises(TypeError, match="no receptive-field positions for Linear"):
        readout_positions(torch.nn.Linear(2, 2))


def test_feature_to_image_inverts_the_stimulus_transform():
    from neuroreg.twin.transforms import StimulusTransform

    t = StimulusTransform(size=(32, 32), mean=0.0, std=1.0)
    for col, row in ((40, 20), (10, 30), (33, 7)):
        img = torch.zeros(1, 1, 48, 64)
        img[0, 0, row - 1 : row + 2, col - 1 : col + 2] = 1.0  # a 3×3 blob centred at (col, row)
        x = t(img)[0, 0].numpy()
        rr, cc = np.mgrid[:32, :32]
        u, v = (x * cc).sum() / x.sum(), (x * rr).sum() / x.sum()  # where the transform put it
        back = feature_to_image(np.array([[u, v]]), (32, 32), (32, 32), (48, 64))[0]
        np.testing.assert_allclose(back, [col, row], atol=0.3)
    # a half-resolution feature grid: cell j covers input pixels 2j, 2j+1
    np.testing.assert_allclose(feature_to_image(np.array([[0.0, 3.0]]), (16, 16), (32, 32), (32, 32)), [[0.5, 6.5]])


def test_diagnose_measures_the_twin_against_the_recording():
    from neuroreg.data.simulated import V1Population
    from neuroreg.twin import metrics
    from neuroreg.twin.cores import Stacked2dCore
    from neuroreg.twin.module import TwinModule
    from neuroreg.twin.transforms import StimulusTransform

    pop = V1Population(n_neurons=6, image_size=16, seed=0)
    imgs = (np.random.default_rng(0).random((30, 1, 16, 16)) * 255).astype(np.uint8)
    rec = pop.record(imgs, repeats=np.r_[np.ones(20, int), np.full(10, 3)], seed=0, tiers=["train"] * 20 + ["test"] * 10)
    torch.manual_seed(0)
    twin = TwinModule(Stacked2dCore(1, 4, 5, 3, layers=1), readout=GaussianReadout, num_neurons=6,
                      transform=StimulusTransform(size=(16, 16), mean=0.5, std=0.2)).eval()
    with torch.no_grad():
        twin.readout["default"].mu.copy_(torch.as_tensor((np.stack([pop.rf_x, pop.rf_y], 1) / 15) * 2 - 1, dtype=torch.float32))
    (d,) = diagnose(twin, {"default": rec})
    index, reps = rec.repeats("test")
    np.testing.assert_array_equal(d.image_index, index)
    pred = predict(twin, rec.images[index], "default")
    assert pred.shape == (10, 6)
    np.testing.assert_allclose(d.correlation, metrics.single_trial_correlation(pred, reps))
    np.testing.assert_allclose(d.oracle, metrics.oracle_correlation(reps))
    # the readout sits on the true centres: zero position error
    np.testing.assert_allclose(d.rf_true, np.stack([pop.rf_x, pop.rf_y], 1))
    np.testing.assert_allclose(d.rf_error, 0.0, atol=1e-5)
    with pytest.raises(AnalysisError, match="field 'trial_tier': expected a 'validation' tier"):
        diagnose(twin, {"default": rec}, tier="validation")
