"""``neuroreg eval`` and ``neuroreg compare`` end to end on a tiny checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from neuroreg.cli import main

from _runs import make_run

def test_eval_writes_complete_report_and_compare_overlays(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpts = [make_run(tmp_path / f"run{s}", seed=s) for s in (0, 1)]
    for ckpt in ckpts:
        assert main(["eval", "--ckpt", str(ckpt), "--suite", "quick", "--max-images", "12", "--no-progress"]) == 0
    out = capsys.readouterr().out
    report_path = tmp_path / "run0" / "eval" / "report.json"
    assert f"report written to {report_path}" in out
    report = json.loads(report_path.read_text())
    assert report["complete"] is True and report["suite"] == "quick" and report["n_images"] == 12
    for key in ("clean_accuracy", "gaussian_noise", "corruptions", "pgd_linf", "pgd_l2", "fgsm_linf",
                "minimal_perturbation", "sanity", "square", "decision", "robust_linf", "robust_l2"):
        assert key in report, key
    assert set(report["robust_linf"]["per_image"]) == set(report["robust_linf"]["members"])  # kept per attack
    assert (report_path.parent / "robustness.png").is_file() and (report_path.parent / "metrics.csv").is_file()
    assert (report_path.parent / "decision.png").is_file() and "decision_vs_white_box" in report["sanity"]

    assert main(["compare", str(tmp_path / "run0"), str(tmp_path / "run1"), "--out", str(tmp_path / "cmp")]) == 0
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| run0 | 2 |" in md  # same config up to the seed: one group of two runs with a CI
    assert "robust L∞ @ max ε" in md and "PGD L∞ @ max ε" in md  # the ensemble, and PGD's column beside it
    assert (tmp_path / "cmp" / "comparison.png").stat().st_size > 1000


def test_eval_bad_inputs_exit_2_with_clear_message(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    five = make_run(tmp_path / "five", num_classes=5)
    assert main(["eval", "--ckpt", str(five), "--max-images", "4", "--no-progress"]) == 2
    assert "expected a data set with 5 classes" in capsys.readouterr().err

    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"net.weight": torch.zeros(2, 2)}}, other)
    assert main(["eval", "--ckpt", str(other), "--config", str(tmp_path / "five" / "config.yaml")]) == 2
    assert "another model class" in capsys.readouterr().err

    assert main(["eval", "--ckpt", str(tmp_path / "missing.ckpt"), "--config", str(tmp_path / "five" / "config.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not list(tmp_path.rglob("report.json"))

    assert main(["compare", str(tmp_path / "five"), "--out", str(tmp_path / "cmp")]) == 2
    assert "eval/report.json" in capsys.readouterr().err


def test_eval_brain_similarity_from_cli(tmp_path: Path) -> None:
    import numpy as np

    from neuroreg.data.simulated import V1Population

    ckpt = make_run(tmp_path / "run")
    images = np.random.default_rng(0).random((30, 1, 32, 32), dtype=np.float32)
    rec = V1Population(n_neurons=20, image_size=32, seed=0).record(images, repeats=2, seed=1, tiers="test")
    path = rec.save(tmp_path / "heldout.h5")
    status = main([
        "eval", "--ckpt", str(ckpt), "--suite", "quick", "--max-images", "4", "--no-progress",
        "--recording", str(path), "--layers", "layer1", "layer2",
    ])
    assert status == 0
    report = json.loads((tmp_path / "run" / "eval" / "report.json").read_text())
    brain = report["brain"]
    assert brain["layers"] == ["layer1", "layer2"] and brain["n_images"] == 30
    assert len(brain["pls"]["score"]) == 2 and all(-1 <= v <= 1 for v in brain["rsa"])
    assert (tmp_path / "run" / "eval" / "brain.png").is_file()
    assert main(["eval", "--ckpt", str(ckpt), "--recording", str(path)]) == 2  # --layers missing


def test_evaluate_checkpoint_in_process_with_a_custom_budget(tmp_path: Path) -> None:
    from dataclasses import replace

    from neuroreg.evaluation.commands import EvalError, evaluate_checkpoint
    from neuroreg.evaluation.suite import Budget

    ckpt = make_run(tmp_path / "run")
    budget = Budget(max_images=6, noise_sigmas=(0.0, 0.2), linf_epsilons=(0.0, 2 / 255), fgsm=False, pgd_steps=2,
                    decision_images=4, decision_queries=60, large_epsilon=None)
    report, out = evaluate_checkpoint(ckpt, budget=budget, out=tmp_path / "elsewhere" / "ev", progress=False, seed=3)
    assert out == tmp_path / "elsewhere" / "ev" and report == json.loads((out / "report.json").read_text())
    assert report["complete"] and report["n_images"] == 6 and report["seed"] == 3
    assert report["budget"]["decision_queries"] == 60 and report["decision"]["n_images"] == 4
    assert "corruptions" not in report and "fgsm_linf" not in report and report["suite"] is None
    assert report["global_step"] == 0 and report["checkpoint"] == str(ckpt)
    # a run without loggers.json whose config names no logger: nothing logged, and the report says why
    assert report["run_loggers"] == [] and "trainer.logger" in report["run_logger_notes"][0]
    assert not (tmp_path / "run" / "eval").exists()

    # a baseline given as a report dict: the run is its own baseline, CE = 1
    with_corr = replace(budget, corruptions=("contrast",), severities=(5,), decision_images=0)
    base, _ = evaluate_checkpoint(ckpt, budget=with_corr, out=tmp_path / "base", progress=False, log_to_run=False)
    again, path = evaluate_checkpoint(ckpt, budget=with_corr, baseline=base, suite="custom", progress=False, log_to_run=False)
    assert path == tmp_path / "run" / "eval" and again["suite"] == "custom" and "run_loggers" not in again
    assert again["corruptions"]["ce"]["contrast"] == pytest.approx(1.0)

    for kwargs, match in (({"budget": "quick"}, "budget: expected a neuroreg"), ({"budget": budget, "eot_samples": 0}, "eot"),
                          ({"budget": budget, "recording": "x.h5"}, "go together"),
                          ({"budget": budget, "baseline": {"clean_accuracy": 0.5}}, "complete")):
        with pytest.raises(EvalError, match=match):
            evaluate_checkpoint(ckpt, progress=False, **kwargs)
