"""The regularizer family: losses, gradients, NaN handling, bad input, schedules, weights."""

import numpy as np
import pytest
import torch

from neuroreg.regularizers import (
    CKARegularizer,
    CotrainingRegularizer,
    DCCARegularizer,
    RSARegularizer,
    Schedule,
    SimilarityRegularizer,
    SpectralRegularizer,
    SpectralSlopeRegularizer,
    StepContext,
)
from neuroreg.regularizers import functional as F
from neuroreg.twin.losses import GaussianLoss


def built(reg, shape=(8, 6, 6), neurons=20):
    reg.build({reg.layers[0]: shape}, neurons)
    return reg


def all_regularizers():
    return {
        "similarity": SimilarityRegularizer(["x"]),
        "rsa": RSARegularizer(["x"]),
        "rsa_squared_cosine": RSARegularizer(["x"], metric="cosine", penalty="squared"),
        "cka": CKARegularizer(["x"]),
        "cka_unbiased": CKARegularizer(["x"], unbiased=True),
        "dcca": built(DCCARegularizer(["x"], dim=4)),
        "dcca_ey": built(DCCARegularizer(["x"], dim=4, objective="ey")),
        "cotraining": built(CotrainingRegularizer(["x"])),
        "spectral": SpectralRegularizer(["x"], tau=2),
        "spectral_slope": SpectralSlopeRegularizer(["x"], n_min=2),
    }


@pytest.mark.parametrize("name", list(all_regularizers()))
def test_every_regularizer_gives_finite_loss_and_gradients_with_nan_targets(name):
    torch.manual_seed(0)
    reg = all_regularizers()[name]
    feats = torch.randn(16, 8, 6, 6, requires_grad=True)
    targets = torch.rand(16, 20)
    targets[0, 3] = float("nan")
    targets[:, 7] = float("nan")
    out = reg({"x": feats}, targets, ~torch.isnan(targets), context=StepContext(task_loss=torch.tensor(2.0)))
    assert out["loss"].shape == () and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert torch.isfinite(feats.grad).all() and feats.grad.abs().sum() > 0
    for value in out.values():
        assert torch.isfinite(torch.as_tensor(value)).all()


@pytest.mark.parametrize("name", ["similarity", "rsa", "cka", "dcca", "spectral"])
def test_batch_of_one_is_refused_clearly(name):
    reg = all_regularizers()[name]
    with pytest.raises(ValueError, match="batch size"):
        reg({"x": torch.randn(1, 8, 6, 6)}, torch.rand(1, 20))


@pytest.mark.parametrize("cls", [SimilarityRegularizer, RSARegularizer, CKARegularizer, DCCARegularizer, SpectralRegularizer])
def test_negative_weight_and_no_layers_are_refused(cls):
    with pytest.raises(ValueError, match="weight"):
        cls(["x"], weight=-0.1)
    with pytest.raises(ValueError, match="at least one"):
        cls([])


@pytest.mark.parametrize("make, msg", [
    (lambda: SpectralRegularizer(["x"], alpha=0.0), "alpha"),
    (lambda: SpectralSlopeRegularizer(["x"], alpha=-1.0), "alpha"),
    (lambda: SpectralRegularizer(["x"], tau=10, n_max=5), "tau"),
    (lambda: DCCARegularizer(["x"], dim=4, k=5), "k: expected"),
    (lambda: DCCARegularizer(["x", "y"]), "exactly one layer"),
    (lambda: DCCARegularizer(["x"], eps=0), "eps"),
    (lambda: RSARegularizer(["x"], metric="l2"), "metric"),
    (lambda: RSARegularizer(["x"], task_fraction=0), "task_fraction"),
    (lambda: CKARegularizer(["x"], delta=0), "delta"),
    (lambda: Schedule(every_n_steps=0), "every_n_steps"),
    (lambda: Schedule(start_epoch=3, end_epoch=2), "end_epoch"),
])
def test_bad_arguments_are_named(make, msg):
    with pytest.raises(ValueError, match=msg):
        make()


def test_spectral_index_range_beyond_batch_is_reported():
    with pytest.raises(ValueError, match="n_max: expected <= 7"):
        SpectralRegularizer(["x"], tau=2, n_max=50)({"x": torch.randn(8, 30)}, None)


def test_missing_layer_in_features_is_reported():
    with pytest.raises(KeyError, match="missing"):
        RSARegularizer(["layer3"])({"layer1": torch.randn(4, 5)}, torch.rand(4, 3))


def test_rsa_loss_matches_definition_and_task_fraction_rescales():
    torch.manual_seed(1)
    feats, targets = torch.randn(10, 12), torch.rand(10, 7)
    reg = RSARegularizer(["x"], penalty="squared", task_fraction=0.25, weight=2.0)
    out = reg({"x": feats}, targets)
    dm, dn = F.offdiagonal(F.rdm(feats)), F.offdiagonal(F.rdm(targets))
    torch.testing.assert_close(out["loss"], ((dm - dn) ** 2).mean())
    task = torch.tensor(3.0)
    w = reg.loss_weight(out["loss"], StepContext(task_loss=task))
    assert float(w * out["loss"]) == pytest.approx(2.0 * 0.25 * 3.0)  # a fixed fraction of the task loss
    with pytest.raises(ValueError, match="task loss"):
        reg.loss_weight(out["loss"], None)


def test_schedule_every_k_steps_within_epoch_window():
    s = Schedule(every_n_steps=3, start_epoch=1, end_epoch=3)
    active = [(e, t) for e in range(4) for t in range(6) if s.active(StepContext(step=t, epoch=e))]
    assert active == [(1, 0), (1, 3), (2, 0), (2, 3)]


def test_cka_loss_is_log_one_minus_cka_and_training_raises_cka():
    torch.manual_seed(0)
    targets = torch.rand(64, 30)
    feats = torch.randn(64, 16, requires_grad=True)
    reg = CKARegularizer(["x"])
    out = reg({"x": feats}, targets)
    torch.testing.assert_close(out["loss"], torch.log(1 - F.linear_cka(feats, targets) + 1e-4))
    opt = torch.optim.Adam([feats], lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        reg({"x": feats}, targets)["loss"].backward()
        opt.step()
    assert float(reg({"x": feats}, targets)["cka"]) > float(out["cka"]) + 0.3


def test_dcca_training_raises_canonical_correlations():
    torch.manual_seed(0)
    latent = torch.randn(256, 3)
    feats = latent @ torch.randn(3, 40) + 0.5 * torch.randn(256, 40)
    targets = latent @ torch.randn(3, 25) + 0.5 * torch.randn(256, 25)
    reg = built(DCCARegularizer(["x"], dim=3, eps=1e-3), shape=(40,), neurons=25)
    first = reg({"x": feats}, targets)
    opt = torch.optim.Adam(reg.parameters(), lr=0.02)
    for _ in range(150):
        opt.zero_grad()
        reg({"x": feats}, targets)["loss"].backward()
        opt.step()
    last = reg({"x": feats}, targets)
    assert float(last["rho_mean"]) > max(0.8, float(first["rho_mean"]))
    with pytest.raises(RuntimeError, match="not built"):
        DCCARegularizer(["x"])({"x": feats}, targets)


def test_cotraining_uncertainty_weighting_formula_and_mse_option():
    torch.manual_seed(0)
    reg = built(CotrainingRegularizer(["x"], likelihood=GaussianLoss()), shape=(4, 5, 5), neurons=6)
    with torch.no_grad():
        reg.log_var.copy_(torch.tensor([0.5, -0.3]))
    feats, targets, task = torch.randn(8, 4, 5, 5), torch.randn(8, 6), torch.tensor(1.7)
    out = reg({"x": feats}, targets, context=StepContext(task_loss=task))
    neural = out["neural_loss"]
    expected = (torch.exp(torch.tensor(-0.5)) - 1) * task + 0.5 + torch.exp(torch.tensor(0.3)) * neural - 0.3
    torch.testing.assert_close(out["loss"], expected)
    with pytest.raises(ValueError, match="task loss"):
        reg({"x": feats}, targets)
    plain = built(CotrainingRegularizer(["x"], likelihood=GaussianLoss(), uncertainty_weights=False), shape=(4, 5, 5), neurons=6)
    out = plain({"x": feats}, targets)
    assert float(out["loss"].detach()) == pytest.approx(float(out["neural_loss"]))


def test_cotraining_needs_a_feature_map():
    with pytest.raises(ValueError, match=r"\[C, H, W\] feature map"):
        CotrainingRegularizer(["x"]).build({"x": (32,)}, 5)


def with_spectrum(lam, n=200):
    """Features ``[n, len(lam)]`` whose covariance eigenvalues are exactly ``lam``."""
    lam = torch.as_tensor(lam, dtype=torch.float64)
    z = torch.randn(n, len(lam), dtype=torch.float64)
    q, _ = torch.linalg.qr(z - z.mean(0))
    return q * (lam * (n - 1)).sqrt()


def test_spectral_loss_zero_on_exact_power_law_and_slope_reports_alpha():
    d = 50
    x = with_spectrum(torch.arange(1, d + 1, dtype=torch.float64) ** -1.0)
    np.testing.assert_allclose(F.eigenspectrum(x)[:d].numpy(), (np.arange(1, d + 1) ** -1.0), rtol=1e-8)
    reg = SpectralRegularizer(["x"], alpha=1.0, tau=2, n_max=d)
    other = SpectralRegularizer(["x"], alpha=2.0, tau=2, n_max=d)
    assert float(reg({"x": x}, None)["loss"]) < 1e-10 < 0.05 < float(other({"x": x}, None)["loss"])
    slope = SpectralSlopeRegularizer(["x"], alpha=1.0, n_min=1, n_max=d)({"x": x}, None)
    assert float(slope["alpha_fit"]) == pytest.approx(1.0) and float(slope["loss"]) < 1e-10


def test_spectral_penalty_is_asymmetric():
    base = torch.arange(1, 11, dtype=torch.float64) ** -1.0
    reg = SpectralRegularizer(["x"], alpha=1.0, tau=1, n_max=10)
    high, low = base.clone(), base.clone()
    high[4] *= 1.1  # 10 % above the power law (order of eigenvalues unchanged)
    low[4] *= 0.9  # 10 % below
    loss_high = float(reg({"x": with_spectrum(high)}, None)["loss"])
    loss_low = float(reg({"x": with_spectrum(low)}, None)["loss"])
    assert loss_high == pytest.approx((0.01 + 0.1) / 10) and loss_low == pytest.approx(0.01 / 10)


def test_similarity_gathers_nothing_when_not_distributed():
    reg = SimilarityRegularizer(["x"])
    f, t, m = reg.gathered({"x": torch.ones(2, 3)}, torch.ones(2, 4), None)
    assert f["x"].shape == (2, 3) and t.shape == (2, 4) and m is None
