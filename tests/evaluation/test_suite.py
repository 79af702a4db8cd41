"""Tests for the evaluation suite: corruptions, EOT, minimal perturbation, AutoAttack,
sanity flags, brain similarity, report atomicity, compare."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from neuroreg.evaluation import sanity
from neuroreg.evaluation.attacks.autoattack import autoattack
from neuroreg.evaluation.attacks.gradient import pgd
from neuroreg.evaluation.attacks.minimal import minimal_epsilon
from neuroreg.evaluation.attacks.square import square_attack
from neuroreg.evaluation.perturbations import CORRUPTIONS, _gaussian_blur, corrupt
from neuroreg.evaluation.report import write_eval_dir
from neuroreg.evaluation.suite import Budget, budget_for, evaluate, metrics


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def smooth_images(n: int, size: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    x = _gaussian_blur(torch.rand(n, channels, size, size), size / 16)
    return ((x - x.mean()) * 4 + 0.5).clamp(0, 1)


# ---------------------------------------------------------------- corruptions


@pytest.mark.parametrize("size", [32, 64])
def test_corruptions_stay_in_range_are_seeded_and_grow_with_severity(size: int) -> None:
    x = smooth_images(4, size)
    for name in CORRUPTIONS:
        changes = []
        for s in range(1, 6):
            a = corrupt(x, name, s, generator=torch.Generator().manual_seed(1))
            b = corrupt(x, name, s, generator=torch.Generator().manual_seed(1))
            assert a.shape == x.shape and a.dtype == x.dtype
            assert a.min() >= 0 and a.max() <= 1, name
            assert torch.equal(a, b), name
            changes.append((a - x).pow(2).mean().item())
        assert all(c2 > c1 for c1, c2 in zip(changes, changes[1:])), (name, changes)


def test_corrupt_rejects_unknown_name_and_severity() -> None:
    x = torch.rand(1, 1, 32, 32)
    with pytest.raises(ValueError, match="unknown corruption name 'snow'.*gaussian_noise"):
        corrupt(x, "snow", 1)
    with pytest.raises(ValueError, match="severity"):
        corrupt(x, "fog", 6)


# ---------------------------------------------------------------- attacks


def linear_two_class(d: int = 16, seed: int = 0):
    torch.manual_seed(seed)
    linear = nn.Linear(d, 1)

    def model(x: torch.Tensor) -> torch.Tensor:
        s = linear(x.flatten(1))
        return torch.cat([torch.zeros_like(s), s], dim=1)

    return model, linear


def test_minimal_l2_matches_analytic_distance_of_linear_model() -> None:
    model, linear = linear_two_class()
    x = 0.4 + 0.2 * torch.rand(64, 1, 4, 4)  # the box never binds
    w, b = linear.weight.detach().flatten(), linear.bias.detach()
    score = x.flatten(1) @ w + b
    y = (score > 0).long()
    distance = score.abs() / w.norm()
    eps_max = float(distance.max()) * 1.5
    found = minimal_epsilon(model, x, y, eps_max, norm="l2", steps=20, search_steps=12)
    assert torch.isfinite(found).all()
    # binary search resolution eps_max / 2^12 plus PGD reaching the boundary within 20 steps
    assert torch.allclose(found, distance, rtol=0.02, atol=eps_max / 2**11)


def test_minimal_epsilon_zero_for_misclassified_and_inf_when_unbreakable() -> None:
    model, _ = linear_two_class()
    x = torch.rand(8, 1, 4, 4)
    with torch.no_grad():
        pred = model(x).argmax(1)
    found = minimal_epsilon(model, x, 1 - pred, 0.5, norm="l2", search_steps=2)
    assert (found == 0).all()
    const = lambda z: torch.tensor([[1.0, 0.0]]).expand(z.shape[0], 2) + 0 * z.flatten(1)[:, :2]
    assert torch.isinf(minimal_epsilon(const, x, torch.zeros(8, dtype=torch.long), 0.5, search_steps=2)).all()


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_pgd_eot_and_schedule_respect_budget(norm: str, schedule: str) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 5)).eval()
    x = torch.rand(6, 3, 4, 4).round()
    y = torch.randint(0, 5, (6,))
    eps = 0.1 if norm == "linf" else 0.5
    adv = pgd(model, x, y, eps, steps=4, norm=norm, eot_samples=3, schedule=schedule,
              generator=torch.Generator().manual_seed(0))
    assert adv.min() >= 0 and adv.max() <= 1
    d = (adv - x).flatten(1)
    size = d.abs().max(1).values if norm == "linf" else d.norm(dim=1)
    assert size.max().item() <= eps * (1 + 1e-5) + 1e-6


class RandomPhaseModel(nn.Module):
    """Logits (0, w·x + b + A Σ_i sin(ω x_i + φ_i)) with fresh random phases φ each call.

    The random term changes the logit by at most A·D = 0.16 but its gradient A·ω = 10 per
    pixel swamps the signal |w_i| ≈ 0.5: one gradient sample has a near-random sign,
    while the expectation over φ is exactly w.
    """

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(16, 1)
        with torch.no_grad():
            self.linear.weight.copy_(torch.sign(torch.randn(1, 16)) * 0.5)
            self.linear.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        phase = 2 * math.pi * torch.rand_like(flat)
        s = self.linear(flat - 0.5) + 0.01 * torch.sin(1000.0 * flat + phase).sum(1, keepdim=True)
        return torch.cat([torch.zeros_like(s), s], dim=1)


def test_eot_recovers_attack_strength_against_stochastic_model() -> None:
    torch.manual_seed(1)
    model = RandomPhaseModel().eval()
    x = (0.5 + 0.05 * torch.randn(200, 1, 4, 4)).clamp(0, 1)
    with torch.no_grad():
        y = (model.linear(x.flatten(1) - 0.5).squeeze(1) > 0).long()
    assert sanity.is_stochastic(model, x)
    eps = 0.06  # L∞ distance |w·(x-.5)| / ||w||_1 is mostly below this
    g = lambda: torch.Generator().manual_seed(0)
    single = accuracy(model, pgd(model, x, y, eps, steps=10, generator=g()), y)
    eot = accuracy(model, pgd(model, x, y, eps, steps=10, eot_samples=64, generator=g()), y)
    assert eot < 0.3, eot
    assert single > eot + 0.3, (single, eot)
    flag = sanity.stochastic_attacked_with_eot(True, 1)
    assert not flag["passed"] and "without EOT" in flag["detail"]


def tiny_model(classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, classes)).eval()


@pytest.mark.parametrize("classes", [2, 4])
def test_autoattack_standard_and_rand_respect_budget(classes: int) -> None:
    model = tiny_model(classes)
    x = torch.rand(12, 1, 4, 4)
    with torch.no_grad():
        y = model(x).argmax(1)
    for version in ("standard", "rand"):
        adv = autoattack(model, x, y, 0.1, version=version, eot_samples=2)
        assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
        assert (adv - x).abs().max().item() <= 0.1 + 1e-5
        assert accuracy(model, adv, y) <= accuracy(model, pgd(model, x, y, 0.0), y)
    with pytest.raises(ValueError, match="version"):
        autoattack(model, x, y, 0.1, version="plus")
    with pytest.raises(ValueError, match="eps"):
        autoattack(model, x, y, 1.5)


# ---------------------------------------------------------------- sanity flags


class HardThreshold(nn.Module):
    """Binarises the input (x > 0.5) before a linear layer: input gradients are all zero."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_model(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x > 0.5).float() + 0 * x)


def test_masked_gradients_trip_sanity_flags() -> None:
    model = HardThreshold().eval()
    x = torch.rand(64, 1, 4, 4)
    y = (x.flatten(1)[:, 0] > 0.5).long()
    flag = sanity.input_gradients(model, x, y)
    assert not flag["passed"] and "masked" in flag["detail"]
    assert sanity.input_gradients(tiny_model(2), x, y)["passed"]
    # PGD gets no signal, the black-box Square attack does
    wb = accuracy(model, pgd(model, x, y, 0.3, steps=10, generator=torch.Generator().manual_seed(0)), y)
    bb = accuracy(model, square_attack(model, x, y, 0.3, n_queries=300), y)
    black = sanity.black_box_not_stronger(0.3, wb, bb)
    assert not black["passed"], (wb, bb)
    banner = sanity.format_failures({"gradients": flag, "black_box": black})
    assert "SANITY CHECK FAILED" in banner and "gradients" in banner


def test_curve_checks() -> None:
    assert sanity.monotone_in_epsilon([0, 0.1, 0.2], [0.9, 0.5, 0.1])["passed"]
    assert not sanity.monotone_in_epsilon([0, 0.1, 0.2], [0.9, 0.5, 0.6])["passed"]
    assert not sanity.pgd_stronger_than_fgsm([0.1], [0.5], [0.3])["passed"]
    assert not sanity.large_epsilon_breaks(0.4, 0.5)["passed"]


# ---------------------------------------------------------------- suite + report


def blob_loader(n: int = 96):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (n,), generator=g)
    u = torch.tensor([1.0, -1.0] * 8).view(1, 4, 4)
    x = (0.5 + 0.1 * (2 * y - 1).float().view(-1, 1, 1, 1) * u + 0.1 * torch.randn(n, 1, 4, 4, generator=g)).clamp(0, 1)
    return x, y, [{"image": x[i : i + 32], "label": y[i : i + 32]} for i in range(0, n, 32)]


def trained_blob_model():
    x, y, loader = blob_loader(400)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def test_suite_on_small_budget_with_baseline(tmp_path: Path) -> None:
    model = trained_blob_model()
    _, _, loader = blob_loader()
    budget = Budget(
        max_images=64, noise_sigmas=(0.0, 0.2), corruptions=("gaussian_noise", "contrast"), severities=(1, 5),
        linf_epsilons=(0.0, 0.05, 0.2), l2_epsilons=(0.0, 0.5), pgd_steps=5, autoattack_images=8,
        square_images=16, square_queries=50, minimal_images=8, minimal_search_steps=4, large_epsilon=0.5,
        check_images=32,
    )
    base = evaluate(model, loader, budget, progress=False)
    report = evaluate(model, loader, budget, progress=False, baseline=base)
    assert report["n_images"] == 64 and not report["stochastic"] and report["eot_samples"] == 1
    assert set(report["corruptions"]["per_corruption"]) == {"gaussian_noise", "contrast"}
    ce = [v for v in report["corruptions"]["ce"].values() if v is not None]
    assert ce == pytest.approx([1.0] * len(ce))  # the run is its own baseline
    assert report["pgd_linf"]["accuracy"][0] == report["clean_accuracy"]
    assert report["autoattack"]["n_images"] == 8 and report["autoattack"]["version"] == "standard"
    assert len(report["minimal_perturbation"]["l2"]["values"]) == 8
    assert report["sanity_passed"], sanity.format_failures(report["sanity"])
    path = write_eval_dir(report, tmp_path)
    saved = json.loads(path.read_text())
    assert saved["complete"] is True
    assert {p.name for p in path.parent.iterdir()} == {
        "report.json", "robustness.png", "corruptions.png", "minimal_perturbation.png"}
    assert [p.name for p in tmp_path.iterdir()] == ["eval"]


def test_crashed_evaluation_leaves_no_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import neuroreg.evaluation.report as report_mod

    write_eval_dir({"clean_accuracy": 0.5}, tmp_path)

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report_mod, "write_report", boom)
    with pytest.raises(RuntimeError):
        write_eval_dir({"clean_accuracy": 0.9, "gaussian_noise": {"sigma": [0], "accuracy": [0.9]},
                        "pgd_linf": {"epsilon": [0], "accuracy": [0.9]}}, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["eval"]
    assert json.loads((tmp_path / "eval" / "report.json").read_text()) == {"clean_accuracy": 0.5, "complete": True}


def test_budget_for_validates_suite() -> None:
    assert budget_for("quick", max_images=10).max_images == 10
    with pytest.raises(ValueError, match="suite.*quick"):
        budget_for("huge")


def test_suite_rejects_images_outside_unit_interval() -> None:
    loader = [{"image": torch.full((2, 1, 4, 4), 2.0), "label": torch.zeros(2, dtype=torch.long)}]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        evaluate(tiny_model(2), loader, Budget(), progress=False)


# ---------------------------------------------------------------- brain similarity


def test_brain_similarity_ranks_the_true_model_first() -> None:
    from neuroreg.data.simulated import V1Population
    from neuroreg.evaluation.brain import (
        brain_similarity,
        cka_score,
        neural_predictivity,
        rsa_score,
    )

    pop = V1Population(n_neurons=30, image_size=16, seed=0)
    imgs = np.random.default_rng(0).random((60, 1, 16, 16), dtype=np.float32)
    rec = pop.record(imgs, repeats=4, seed=1, tiers="test")
    _, reps = rec.repeats("test")
    truth = pop.mean_response(imgs)
    noise = np.random.default_rng(1).random((60, 40))
    for method in ("ridge", "pls"):
        good = neural_predictivity(truth, reps, method=method)["score"]
        bad = neural_predictivity(noise, reps, method=method)["score"]
        assert good > 0.8 and bad < 0.3, (method, good, bad)
    mean = reps.mean(1)
    assert rsa_score(truth, mean) > rsa_score(noise, mean) + 0.3
    assert cka_score(truth, mean) > cka_score(noise, mean)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2))
            self.in_channels = 1

        def forward(self, x):
            return self.backbone(x).mean((2, 3))

    out = brain_similarity(Net().eval(), rec, ["0", "2"], tier="test")
    assert out["layers"] == ["0", "2"] and len(out["ridge"]["score"]) == 2 and len(out["cka"]) == 2
    with pytest.raises(ValueError, match="images"):
        brain_similarity(Net().eval(), rec, ["0"], tier="train")


def test_callback_runs_a_named_suite_with_overrides() -> None:
    from neuroreg.evaluation.callbacks import RobustnessEvaluation

    cb = RobustnessEvaluation(suite="quick", max_images=16, pgd_steps=2)
    assert cb.budget.corruptions and cb.budget.pgd_steps == 2 and cb.budget.max_images == 16
    _, _, loader = blob_loader(32)
    report = cb.evaluate(trained_blob_model(), loader, progress=False)
    assert report["n_images"] == 16 and "corruptions" in report and "minimal_perturbation" in report
    assert "eval/mean_corruption_accuracy" in cb.metrics(report)
    with pytest.raises(ValueError, match="suite"):
        RobustnessEvaluation(suite="fast")
    with pytest.raises(ValueError, match="brain_layers"):
        RobustnessEvaluation(recording="x.h5")


def test_suite_detects_stochastic_model_and_flags_missing_eot() -> None:
    torch.manual_seed(1)
    model = RandomPhaseModel().eval()
    x = (0.5 + 0.05 * torch.randn(32, 1, 4, 4)).clamp(0, 1)
    with torch.no_grad():
        y = (model.linear(x.flatten(1) - 0.5).squeeze(1) > 0).long()
    loader = [{"image": x, "label": y}]
    budget = Budget(noise_sigmas=(), linf_epsilons=(0.0, 0.06), fgsm=False, eot_samples=16, pgd_steps=5)
    report = evaluate(model, loader, budget, progress=False)
    assert report["stochastic"] and report["eot_samples"] == 16 and report["sanity"]["eot"]["passed"]
    forced = evaluate(model, loader, budget, progress=False, eot_samples=1)
    assert not forced["sanity"]["eot"]["passed"] and not forced["sanity_passed"]
    assert forced["pgd_linf"]["accuracy"][1] > report["pgd_linf"]["accuracy"][1]


# ---------------------------------------------------------------- decision-based attack


def test_decision_vs_white_box_flags_masked_gradients() -> None:
    # PGD never flips the thresholded model (zero gradients), the label-only attack does
    masked = HardThreshold().eval()
    x = torch.rand(32, 1, 4, 4)
    with torch.no_grad():
        y = masked(x).argmax(1)
    budget = Budget(noise_sigmas=(), linf_epsilons=(), fgsm=False, minimal_images=32, minimal_search_steps=4,
                    decision_images=32, decision_queries=300, large_epsilon=None)
    loader = [{"image": x, "label": y}]
    report = evaluate(masked, loader, budget, progress=False)
    flag = report["sanity"]["decision_vs_white_box"]
    assert report["minimal_perturbation"]["l2"]["not_flipped"] == 32
    assert report["decision"]["median"] < budget.minimal_l2_max
    assert not flag["passed"] and "masking" in flag["detail"]
    assert sanity.decision_not_closer([0.5, 1.0, None], [0.6, 1.2, 3.0], 4.0, 0.01)["passed"]
    assert not sanity.decision_not_closer([1.0, 1.0, 1.0], [0.5, 0.6, 2.0], 4.0, 0.01)["passed"]
    assert sanity.decision_not_closer([0.0], [0.0], 4.0, 0.01)["n_images"] == 0


def test_suite_decision_section_metric_and_plot(tmp_path: Path) -> None:
    model = trained_blob_model()
    _, _, loader = blob_loader()
    budget = Budget(max_images=48, noise_sigmas=(0.0, 0.1), linf_epsilons=(0.0, 0.1), pgd_steps=10,
                    minimal_images=24, minimal_search_steps=8, decision_images=24, decision_queries=1500,
                    large_epsilon=0.5, check_images=24)
    report = evaluate(model, loader, budget, progress=False)
    dec, wb = report["decision"], report["minimal_perturbation"]["l2"]
    assert dec["n_images"] == 24 and len(dec["values"]) == 24 and dec["queries"] == 1500
    assert dec["not_found"] == 0 and dec["queries_used_median"] <= 1500
    assert report["sanity"]["decision_vs_white_box"]["passed"], report["sanity"]["decision_vs_white_box"]
    # a label-only attack lands near the white-box minimum on a smooth model, never far below it
    pairs = [(w, d) for w, d in zip(wb["values"], dec["values"]) if w and d]
    assert all(d >= 0.99 * w - budget.minimal_l2_max / 2**8 for w, d in pairs)
    assert np.median([d / w for w, d in pairs]) < 1.5
    assert metrics(report)["eval/decision_l2_median"] == dec["median"]
    path = write_eval_dir(report, tmp_path)
    assert (path.parent / "decision.png").stat().st_size > 1000
    assert set(Budget().__dict__) >= {"decision_images", "decision_queries"} and Budget().decision_images == 0
    assert budget_for("standard").decision_images > 0 and budget_for("full").decision_queries >= budget_for(
        "standard").decision_queries
