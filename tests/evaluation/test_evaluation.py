"""Tests for neuroreg.evaluation: perturbations, attacks, report, RobustnessEvaluation."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, Dataset

from neuroreg.evaluation.attacks.gradient import fgsm, pgd
from neuroreg.evaluation.callbacks import RobustnessEvaluation
from neuroreg.evaluation.perturbations import gaussian_noise
from neuroreg.evaluation.report import plot_robustness, write_report

SHAPE = (1, 4, 4)  # images [C, H, W]; D = 16 pixels


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """The tensors here are tiny: one intra-op thread is fastest and immune to a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_blobs(n: int, seed: int, spread: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes, images 0.5 ± 0.1·u + N(0, spread²) clipped to [0, 1], u a fixed ±1 pattern.

    The Bayes boundary is the hyperplane u·(x - 0.5) = 0; a point's L∞ distance to it is
    |u·(x - 0.5)| / ||u||_1 ≈ 0.1 ± 0.0375, so accuracy under an L∞ attack collapses
    between ε ≈ 0.05 and ε ≈ 0.2.
    """
    g = torch.Generator().manual_seed(seed)
    u = torch.tensor([1.0, -1.0] * 8).view(SHAPE)
    y = torch.randint(0, 2, (n,), generator=g)
    sign = (2 * y - 1).float().view(-1, 1, 1, 1)
    x = 0.5 + 0.1 * sign * u + spread * torch.randn((n, *SHAPE), generator=g)
    return x.clamp(0, 1), y


def make_mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 2))


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """An MLP trained on the blobs (full batch Adam), in eval mode, plus held-out data."""
    torch.manual_seed(0)
    model = make_mlp()
    x, y = make_blobs(1000, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    x_test, y_test = make_blobs(500, seed=2)
    return model, x_test, y_test


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


# ---------------------------------------------------------------- gaussian_noise


def test_noise_statistics_match_sigma() -> None:
    x = torch.full((50, 3, 32, 32), 0.5)
    sigma = 0.1
    noise = gaussian_noise(x, sigma, generator=torch.Generator().manual_seed(0)) - x
    # clamping at 5 sigma is negligible: mean 0, std sigma (n = 153600, SE(std) ~ 0.0002)
    assert abs(noise.mean().item()) < 0.002
    assert noise.std().item() == pytest.approx(sigma, rel=0.02)
    assert noise.shape == x.shape and noise.dtype == x.dtype


def test_noise_is_clamped_to_unit_interval() -> None:
    g = torch.Generator().manual_seed(0)
    for value in (0.0, 1.0):
        x = torch.full((20, 1, 16, 16), value)
        noisy = gaussian_noise(x, 0.5, generator=g)
        assert noisy.min() >= 0 and noisy.max() <= 1
        # half of the draws point outside the range and are clamped onto the edge
        assert (noisy == value).float().mean().item() == pytest.approx(0.5, abs=0.05)


def test_noise_seeding_is_deterministic() -> None:
    x = torch.rand(4, 3, 8, 8)
    a = gaussian_noise(x, 0.2, generator=torch.Generator().manual_seed(7))
    b = gaussian_noise(x, 0.2, generator=torch.Generator().manual_seed(7))
    c = gaussian_noise(x, 0.2, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_noise_zero_sigma_and_validation() -> None:
    x = torch.rand(2, 1, 4, 4)
    assert torch.equal(gaussian_noise(x, 0.0), x)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_noise(x, -0.1)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_noise(x, math.nan)


# ---------------------------------------------------------------- pgd / fgsm


@settings(max_examples=25, deadline=None)
@given(
    eps=st.floats(0.0, 0.5),
    seed=st.integers(0, 2**16),
    binary=st.booleans(),
    norm=st.sampled_from(["linf", "l2"]),
)
def test_pgd_stays_in_ball_and_box(eps: float, seed: int, binary: bool, norm: str) -> None:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 5)).eval()
    x = torch.rand(8, 3, 4, 4)
    if binary:  # pixels on the edges of the box: every step pushes against the clamp
        x = x.round()
    y = torch.randint(0, 5, (8,))
    g = torch.Generator().manual_seed(seed)
    x_adv = pgd(model, x, y, eps, steps=5, norm=norm, restarts=2, generator=g)
    delta = (x_adv - x).flatten(1)
    assert x_adv.shape == x.shape
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    if norm == "linf":
        assert delta.abs().max().item() <= eps + 1e-6
    else:
        assert delta.norm(dim=1).max().item() <= eps * (1 + 1e-5) + 1e-6


def test_pgd_eps_zero_returns_x_and_clean_accuracy(trained) -> None:
    model, x, y = trained
    for norm in ("linf", "l2"):
        x_adv = pgd(model, x, y, 0.0, norm=norm)
        assert torch.equal(x_adv, x)
    assert accuracy(model, pgd(model, x, y, 0.0), y) == accuracy(model, x, y)


def test_pgd_breaks_trained_model(trained) -> None:
    model, x, y = trained
    g = torch.Generator().manual_seed(0)
    clean = accuracy(model, x, y)
    moderate = accuracy(model, pgd(model, x, y, 0.1, generator=g), y)
    large = accuracy(model, pgd(model, x, y, 0.3, generator=g), y)
    assert clean > 0.9
    assert moderate < clean - 0.25
    assert large <= 0.02


def test_pgd_at_least_as_strong_as_fgsm(trained) -> None:
    model, x, y = trained
    g = torch.Generator().manual_seed(0)
    for eps in (0.05, 0.08, 0.12):
        acc_fgsm = accuracy(model, fgsm(model, x, y, eps), y)
        acc_pgd = accuracy(model, pgd(model, x, y, eps, steps=20, restarts=2, generator=g), y)
        assert acc_fgsm < accuracy(model, x, y)
        assert acc_pgd <= acc_fgsm + 1e-9, (eps, acc_pgd, acc_fgsm)


@pytest.mark.parametrize("steps", [0, 3])
def test_pgd_restarts_keep_the_worst_case(trained, steps: int) -> None:
    """Restart 1 of both runs starts at the same point, so more restarts see a superset of
    candidates: per example never less wrong, and never a lower loss while still right."""
    model, x, y = trained

    def attack(restarts: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(3)
        x_adv = pgd(model, x, y, 0.08, steps=steps, restarts=restarts, generator=g)
        with torch.no_grad():
            logits = model(x_adv)
        return logits.argmax(1) != y, nn.functional.cross_entropy(logits, y, reduction="none")

    (wrong_one, loss_one), (wrong_many, loss_many) = attack(1), attack(8)
    assert bool((wrong_many | ~wrong_one).all()), "an example broken by restart 1 must stay broken"
    both_right = ~wrong_one & ~wrong_many
    assert bool((loss_many[both_right] >= loss_one[both_right] - 1e-5).all())
    assert wrong_many.sum() >= wrong_one.sum()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_random_start_is_uniform_in_the_ball(norm: str) -> None:
    """steps=0, restarts=1 returns the start point: uniform in the ball of radius eps."""
    x, y = torch.full((4000, *SHAPE), 0.5), torch.zeros(4000, dtype=torch.long)
    eps = 0.2  # the box [0, 1] never binds around 0.5
    x_adv = pgd(make_mlp().eval(), x, y, eps, steps=0, norm=norm, generator=torch.Generator().manual_seed(0))
    delta = (x_adv - x).flatten(1) / eps
    if norm == "linf":  # independent U(-1, 1) coordinates: E|u| = 1/2, E u = 0
        assert delta.abs().mean().item() == pytest.approx(0.5, abs=0.01)
        assert abs(delta.mean().item()) < 0.01
    else:  # radius r with P(r <= t) = t^d, d = 16: E r = d / (d + 1); isotropic direction
        radius = delta.norm(dim=1)
        assert radius.mean().item() == pytest.approx(16 / 17, abs=0.005)
        assert delta.mean(0).abs().max().item() < 0.03


@pytest.mark.parametrize("random_start", [False, True])
def test_pgd_l2_flips_linear_classifier_iff_eps_exceeds_distance(random_start: bool) -> None:
    """For logits (0, w·x + b) the L2 distance to the decision boundary is |w·x + b| / ||w||."""
    torch.manual_seed(0)
    linear = nn.Linear(16, 1)
    model = nn.Sequential(nn.Flatten(), linear)

    def two_class(x: torch.Tensor) -> torch.Tensor:
        s = model(x)
        return torch.cat([torch.zeros_like(s), s], dim=1)

    x = 0.35 + 0.3 * torch.rand(400, *SHAPE)  # far from the box edges: the clamp never binds
    w, b = linear.weight.detach().flatten(), linear.bias.detach()
    score = x.flatten(1) @ w + b
    y = (score > 0).long()
    distance = score.abs() / w.norm()
    eps = distance.median().item()
    # from a random start the iterate must also shed its orthogonal part: use larger steps
    step_size = 0.2 * eps if random_start else None
    x_adv = pgd(
        two_class, x, y, eps, steps=30, step_size=step_size, norm="l2",
        random_start=random_start, generator=torch.Generator().manual_seed(0),
    )
    with torch.no_grad():
        flipped = two_class(x_adv).argmax(1) != y
    clear = (distance - eps).abs() > 0.03 * eps  # leave out a thin shell around the boundary
    assert clear.sum() > 300
    assert torch.equal(flipped[clear], (distance < eps)[clear])


def test_pgd_under_inference_mode_and_leaves_parameter_grads_alone(trained) -> None:
    model, x, y = trained
    model.zero_grad(set_to_none=True)
    with torch.inference_mode():
        x_inf, y_inf = x.clone(), y.clone()
        x_adv = pgd(model, x_inf, y_inf, 0.1, generator=torch.Generator().manual_seed(0))
    assert (x_adv - x).abs().max().item() <= 0.1 + 1e-6
    assert accuracy(model, x_adv, y) < accuracy(model, x, y)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"eps": -0.1}, "eps"),
        ({"eps": 1.5}, "eps"),
        ({"eps": 0.1, "steps": -1}, "steps"),
        ({"eps": 0.1, "restarts": 0}, "restarts"),
        ({"eps": 0.1, "norm": "l1"}, "norm"),
        ({"eps": 0.1, "step_size": 0.0}, "step_size"),
    ],
)
def test_pgd_validation(kwargs: dict, match: str) -> None:
    model = make_mlp().eval()
    x, y = make_blobs(4, seed=0)
    with pytest.raises(ValueError, match=match):
        pgd(model, x, y, **kwargs)


def test_pgd_rejects_images_outside_unit_interval() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pgd(make_mlp().eval(), torch.full((2, *SHAPE), 2.0), torch.zeros(2, dtype=torch.long), 0.1)


# ---------------------------------------------------------------- report


def example_report() -> dict:
    return {
        "clean_accuracy": 0.9,
        "gaussian_noise": {"sigma": [0.0, 0.1, 0.3], "accuracy": [0.9, 0.8, 0.5]},
        "pgd_linf": {"epsilon": [0.0, 2 / 255, 8 / 255], "accuracy": [0.9, 0.4, 0.0], "steps": 10, "restarts": 1},
        "robust_linf": {"epsilon": [0.0, 2 / 255, 8 / 255], "accuracy": [0.9, 0.3, 0.0], "n_images": 100,
                        "members": {"pgd": [0.9, 0.4, 0.0], "apgd_ce": [0.9, 0.3, 0.0], "apgd_t": [0.9, 0.35, 0.0]}},
        "n_images": 100,
        "checkpoint": None,
        "seed": 0,
    }


def test_write_report_roundtrip(tmp_path: Path) -> None:
    report = example_report()
    path = write_report(report, tmp_path / "run")
    assert path == tmp_path / "run" / "report.json"
    assert json.loads(path.read_text()) == report
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.json"]


def test_write_report_converts_tensors(tmp_path: Path) -> None:
    path = write_report({"a": torch.tensor(0.5), "b": torch.tensor([1, 2]), "p": tmp_path}, tmp_path)
    assert json.loads(path.read_text()) == {"a": 0.5, "b": [1, 2], "p": str(tmp_path)}


def test_write_report_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_dump(obj, fp, **kwargs):
        fp.write('{"clean_accuracy": 0.')
        raise RuntimeError("disk full")

    monkeypatch.setattr(json, "dump", broken_dump)
    with pytest.raises(RuntimeError, match="disk full"):
        write_report(example_report(), tmp_path)
    assert list(tmp_path.iterdir()) == []  # neither report.json nor a temp file

    # an existing report survives a failed rewrite untouched
    monkeypatch.undo()
    path = write_report({"old": 1}, tmp_path)
    monkeypatch.setattr(json, "dump", broken_dump)
    with pytest.raises(RuntimeError):
        write_report(example_report(), tmp_path)
    assert json.loads(path.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_write_report_rejects_nan(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_report({"clean_accuracy": math.nan}, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_plot_robustness_writes_png(tmp_path: Path) -> None:
    path = plot_robustness(example_report(), tmp_path / "robustness.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    assert [p.name for p in tmp_path.iterdir()] == ["robustness.png"]


def test_plot_robustness_names_missing_section(tmp_path: Path) -> None:
    report = example_report()
    del report["robust_linf"]  # the headline panel is the attack ensemble's
    with pytest.raises(ValueError, match="robust_linf"):
        plot_robustness(report, tmp_path / "robustness.png")


# ---------------------------------------------------------------- callback


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"noise_sigmas": [0.1, -0.1]}, "noise_sigmas"),
        ({"noise_sigmas": []}, "noise_sigmas"),
        ({"pgd_epsilons": [0.0, 2.0]}, "pgd_epsilons"),
        ({"pgd_epsilons": [0.1, 0.1]}, "pgd_epsilons"),
        ({"pgd_steps": 0}, "pgd_steps"),
        ({"pgd_restarts": 0}, "pgd_restarts"),
        ({"max_images": 0}, "max_images"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_callback_validates_arguments(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        RobustnessEvaluation(**kwargs)


def test_evaluate_restores_modes_and_matches_direct_computation(trained) -> None:
    model, x, y = trained
    model.train()
    model[1].eval()  # a submodule deliberately frozen in eval mode
    loader = [{"image": x[i : i + 64], "label": y[i : i + 64], "extra": i} for i in range(0, 256, 64)]
    cb = RobustnessEvaluation(noise_sigmas=[0.0, 0.2], pgd_epsilons=[0.0, 0.3], pgd_steps=5, max_images=200)
    report = cb.evaluate(model, loader, progress=False)
    assert model.training and not model[1].training and model[3].training
    model.eval()
    assert report["n_images"] == 200
    assert report["clean_accuracy"] == pytest.approx(accuracy(model, x[:200], y[:200]))
    assert report["gaussian_noise"]["accuracy"][0] == report["clean_accuracy"]
    assert report["pgd_linf"]["accuracy"] == [report["clean_accuracy"], pytest.approx(0.0, abs=0.02)]


class BandModel(nn.Module):
    """1-pixel images; predicts the wrong class 1 only inside the band |x - 0.6| < 0.05."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = 1 - (x.flatten(1) - 0.6).abs() / 0.05
        return torch.cat([torch.zeros_like(t), t], dim=1)


def test_evaluate_pgd_curve_counts_attacks_found_at_smaller_eps() -> None:
    """From x = 0.5 a one-step attack lands in the band at eps = 0.1 but overshoots it at
    eps = 0.3; the adversarial image of eps = 0.1 is also in the 0.3-ball, so the reported
    robust accuracy at 0.3 must be 0 too (monotone), not the attack's own ~5/6."""
    model = BandModel()
    x, y = torch.full((300, 1, 1, 1), 0.5), torch.zeros(300, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    assert accuracy(model, pgd(model, x, y, 0.1, steps=1, generator=g), y) == 0.0
    assert accuracy(model, pgd(model, x, y, 0.3, steps=1, generator=g), y) > 0.6

    cb = RobustnessEvaluation(noise_sigmas=[0.0], pgd_epsilons=[0.3, 0.0, 0.1], pgd_steps=1)
    report = cb.evaluate(model, [{"image": x, "label": y}], progress=False)
    assert report["pgd_linf"]["epsilon"] == [0.3, 0.0, 0.1]  # the caller's order is kept
    assert report["pgd_linf"]["accuracy"] == [0.0, 1.0, 0.0]


class BlobSet(Dataset):
    def __init__(self, n: int, seed: int) -> None:
        self.x, self.y = make_blobs(n, seed)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.x[i], "label": self.y[i], "index": i}


def _lightning_classes():
    import pytorch_lightning as pl

    class BlobData(pl.LightningDataModule):
        def __init__(self) -> None:
            super().__init__()
            self.stages: list[str] = []

        def setup(self, stage: str) -> None:
            self.stages.append(stage)
            self.train_set, self.test_set = BlobSet(512, seed=1), BlobSet(256, seed=2)

        def train_dataloader(self) -> DataLoader:
            return DataLoader(self.train_set, batch_size=16, shuffle=True)

        def test_dataloader(self) -> DataLoader:
            return DataLoader(self.test_set, batch_size=64)

    class BlobClassifier(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = make_mlp()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
            loss = nn.functional.cross_entropy(self(batch["image"]), batch["label"])
            self.log("train/loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=2e-2)

    return pl, BlobData, BlobClassifier


def test_callback_after_real_fit(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from pytorch_lightning.loggers import CSVLogger

    pl, BlobData, BlobClassifier = _lightning_classes()
    pl.seed_everything(0, workers=True)
    epsilons = [0.0, 0.02, 0.05, 0.1, 0.3]
    cb = RobustnessEvaluation(noise_sigmas=[0.0, 0.1, 0.3], pgd_epsilons=epsilons, pgd_steps=5, pgd_restarts=2)
    trainer = pl.Trainer(
        max_epochs=1, accelerator="cpu", devices=1, default_root_dir=tmp_path,
        logger=CSVLogger(tmp_path), callbacks=[cb], enable_progress_bar=False, enable_model_summary=False,
    )
    model, data = BlobClassifier(), BlobData()
    trainer.fit(model, datamodule=data)
    assert "test" in data.stages

    run_dir = Path(trainer.log_dir)
    report = json.loads((run_dir / "report.json").read_text())
    assert report == cb.report
    png = (run_dir / "robustness.png").read_bytes()
    assert png[:4] == b"\x89PNG" and len(png) > 1000

    assert report["n_images"] == 256 and report["seed"] == 0
    assert report["checkpoint"] and Path(report["checkpoint"]).is_file()
    pgd_acc = report["pgd_linf"]["accuracy"]
    all_acc = [report["clean_accuracy"], *report["gaussian_noise"]["accuracy"], *pgd_acc]
    assert all(0.0 <= a <= 1.0 for a in all_acc)
    assert report["clean_accuracy"] > 0.85  # one epoch is enough for the blobs
    assert report["pgd_linf"]["epsilon"] == epsilons
    assert pgd_acc[0] == report["clean_accuracy"] == report["gaussian_noise"]["accuracy"][0]
    assert all(a >= b for a, b in zip(pgd_acc, pgd_acc[1:])), pgd_acc
    assert pgd_acc[-1] <= 0.05
    assert next(model.parameters()).device.type == "cpu"

    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    logged = {k: float(v) for row in rows for k, v in row.items() if k.startswith("eval/") and v}
    assert logged["eval/clean_accuracy"] == report["clean_accuracy"]
    assert logged["eval/noise_accuracy_sigma=0.1"] == report["gaussian_noise"]["accuracy"][1]
    assert logged["eval/pgd_linf_accuracy_eps=0.05"] == pgd_acc[2]

    out = capsys.readouterr().out
    assert f"neuroreg: robustness report written to {run_dir / 'report.json'}" in out


def test_callback_names_missing_datamodule(tmp_path: Path) -> None:
    pl, BlobData, BlobClassifier = _lightning_classes()
    trainer = pl.Trainer(
        max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False, default_root_dir=tmp_path,
        callbacks=[RobustnessEvaluation()], enable_progress_bar=False, enable_model_summary=False,
    )
    with pytest.raises(RuntimeError, match="datamodule"):
        trainer.fit(BlobClassifier(), train_dataloaders=DataLoader(BlobSet(32, seed=0), batch_size=16))

    class NoTest(BlobData):
        test_dataloader = pl.LightningDataModule.test_dataloader

    trainer = pl.Trainer(
        max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False, default_root_dir=tmp_path,
        callbacks=[RobustnessEvaluation()], enable_progress_bar=False, enable_model_summary=False,
    )
    with pytest.raises(RuntimeError, match="test_dataloader"):
        trainer.fit(BlobClassifier(), datamodule=NoTest())
