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

from _regularizers import Case, cases, regularizer_classes


def built(reg, shape=(8, 6, 6), neurons=20):
    reg.build({reg.layers[0]: shape}, neurons)
    return reg


CASES = cases()
CLASSES = regularizer_classes()
TASK = StepContext(task_loss=torch.tensor(2.0))


def run(reg, feats, targets, mask=None, context=TASK, seed=0):
    """``reg``'s outputs, with the random draws of a training-mode readout fixed by ``seed``."""
    torch.manual_seed(seed)
    return reg({"x": feats}, targets, mask, context=context)


def nan_targets(batch=16, neurons=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    targets = torch.rand(batch, neurons, generator=g)
    targets[0, 3] = float("nan")
    targets[:, 7] = float("nan")
    return targets


def assert_same_outputs(a, b, **tol):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key, **tol)


def test_discovery_finds_every_regularizer_module():
    names = {cls.__name__ for cls in CLASSES}
    assert {"SimilarityRegularizer", "RSARegularizer", "CKARegularizer", "DCCARegularizer",
            "CotrainingRegularizer", "SpectralRegularizer", "SpectralSlopeRegularizer"} <= names
    import neuroreg.regularizers as package

    not_exported = sorted(names - set(package.__all__))
    assert not not_exported, f"regularizers not exported from neuroreg.regularizers: {not_exported}"


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_regularizer_can_be_built_from_its_signature(cls):
    assert isinstance(Case(cls).build(), cls)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_every_regularizer_gives_finite_loss_and_gradients_with_nan_targets(case):
    torch.manual_seed(0)
    reg = case.build(dim=4)
    feats = torch.randn(16, 8, 6, 6, requires_grad=True)
    targets = nan_targets()
    out = reg({"x": feats}, targets, ~torch.isnan(targets), context=StepContext(task_loss=torch.tensor(2.0)))
    assert "loss" in out
    assert out["loss"].shape == () and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert torch.isfinite(feats.grad).all() and feats.grad.abs().sum() > 0
    for value in out.values():
        assert torch.isfinite(torch.as_tensor(value)).all()
    for term, value in out.items():  # diagnostics are logged: they must not hold the graph
        assert term == "loss" or not torch.as_tensor(value).requires_grad, term
    for name, p in reg.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_nan_targets_follow_the_mask_contract(case):
    """The mask defaults to the non-NaN targets, and an entry outside the mask is never read."""
    reg = case.build(dim=4)
    feats = torch.randn(16, 8, 6, 6, generator=torch.Generator().manual_seed(1))
    targets = nan_targets()
    mask = ~torch.isnan(targets)
    reference = run(reg, feats, targets, mask)
    assert_same_outputs(run(reg, feats, targets, None), reference)
    assert_same_outputs(run(reg, feats, torch.where(mask, targets, torch.full_like(targets, 1e3)), mask), reference)
    hidden = mask.clone()
    hidden[2:5, 0] = False  # finite values hidden by the mask count as missing, like NaN
    as_nan = torch.where(hidden, targets, torch.full_like(targets, float("nan")))
    assert_same_outputs(run(reg, feats, targets, hidden), run(reg, feats, as_nan, None))
    if not reg.needs_targets:
        assert_same_outputs(reg({"x": feats}, None), reference)


@pytest.mark.parametrize("case", [c for c in CASES if c.cls.uses_batch_statistics], ids=lambda c: c.id)
def test_batch_of_one_is_refused_clearly(case):
    reg = case.build(dim=4)
    with pytest.raises(ValueError, match="batch size"):
        reg({"x": torch.randn(1, 8, 6, 6)}, torch.rand(1, 20))


@pytest.mark.parametrize("case", [c for c in CASES if not c.cls.uses_batch_statistics], ids=lambda c: c.id)
def test_loss_without_batch_statistics_is_a_mean_over_images(case):
    """Two batches of equal size concatenated give the average of their losses (exactly)."""
    reg = case.build(dim=4).eval()  # eval: a sampling readout reads its mean positions
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 8, 6, 6, generator=g), torch.randn(6, 8, 6, 6, generator=g)
    ta, tb = torch.rand(6, 20, generator=g), torch.rand(6, 20, generator=g)
    whole = run(reg, torch.cat([a, b]), torch.cat([ta, tb]))
    halves = [run(reg, a, ta), run(reg, b, tb)]
    for term in whole:
        torch.testing.assert_close(whole[term], (halves[0][term] + halves[1][term]) / 2, msg=term)


# What each regularizer's math promises about batch size, neuron count and scale (read
# from its formula and docstring). A regularizer missing here fails
# test_every_regularizer_states_what_it_is_invariant_to.
#   pairs: the loss is a mean of terms of image pairs that depend on the pair only, so a
#       batch's loss is the mean of the losses of its 2-image sub-batches (exact).
#   pair_mean: the loss is a mean over image pairs, so on one distribution its level does
#       not depend on the batch size (up to sampling noise).
#   duplicated_neurons: the loss depends on the targets through cosines/correlations
#       or CKA over neurons, so recording every neuron twice changes nothing (exact).
#   feature_scale: multiplying the features by a constant changes nothing (exact).
#   unit_correlations: the reported canonical correlations lie in [0, 1] at any batch
#       size and neuron count.
# Not claimed: CKA's biased HSIC has an O(1/batch) bias, DCCA's sample canonical
# correlations are inflated on small batches and the spectral losses fit the spectrum up
# to batch - 1, so those losses shift with the batch size; DCCA and co-training learn a
# map from the neurons, so they promise nothing about the neuron count. A loss without
# batch statistics is a mean over images (test_loss_without_batch_statistics_...).
PROMISES = {
    "SimilarityRegularizer": {"pair_mean", "duplicated_neurons", "feature_scale"},
    "RSARegularizer": {"pairs", "pair_mean", "duplicated_neurons", "feature_scale"},
    "CKARegularizer": {"duplicated_neurons", "feature_scale"},
    "DCCARegularizer": {"unit_correlations"},
    "CotrainingRegularizer": set(),
    "SpectralRegularizer": {"feature_scale"},
    "SpectralSlopeRegularizer": {"feature_scale"},
}


def promising(promise):
    return [c for c in CASES if promise in PROMISES.get(c.cls.__name__, ())]


def test_every_regularizer_states_what_it_is_invariant_to():
    missing = sorted(cls.__name__ for cls in CLASSES if cls.__name__ not in PROMISES)
    assert not missing, f"add these regularizers to PROMISES in {__file__}: {missing}"


def latent_batch(batch, neurons=20, seed=0):
    """Features ``[batch, 40]`` and targets ``[batch, neurons]`` sharing a 5-d latent."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, 5, generator=g)
    mix = torch.Generator().manual_seed(1234)  # the same distribution for every draw
    a, c = torch.randn(5, 40, generator=mix), torch.randn(5, neurons, generator=mix)
    feats = z @ a + 0.5 * torch.randn(batch, 40, generator=g)
    return feats, z @ c + 0.5 * torch.randn(batch, neurons, generator=g)


@pytest.mark.parametrize("case", promising("pairs"), ids=lambda c: c.id)
def test_pair_losses_are_the_mean_over_their_pairs(case):
    reg = case.build(feature_shape=(40,))
    feats, targets = latent_batch(7)
    whole = run(reg, feats, targets)["loss"]
    pairs = [run(reg, feats[[i, j]], targets[[i, j]])["loss"] for i in range(7) for j in range(i + 1, 7)]
    torch.testing.assert_close(whole, torch.stack(pairs).mean())


@pytest.mark.parametrize("case", promising("pair_mean"), ids=lambda c: c.id)
def test_pair_mean_losses_do_not_depend_on_the_batch_size(case):
    reg = case.build(feature_shape=(40,))

    def level(batch, draws):
        return sum(float(run(reg, *latent_batch(batch, seed=s))["loss"].detach()) for s in range(draws)) / draws

    small, large = level(16, 16), level(256, 2)
    assert small == pytest.approx(large, rel=0.15)


@pytest.mark.parametrize("case", promising("duplicated_neurons"), ids=lambda c: c.id)
def test_recording_every_neuron_twice_changes_nothing(case):
    reg = case.build(feature_shape=(40,))
    feats, targets = latent_batch(24)
    targets[3, :4] = float("nan")
    assert_same_outputs(run(reg, feats, torch.cat([targets, targets], 1)), run(reg, feats, targets))


@pytest.mark.parametrize("case", promising("feature_scale"), ids=lambda c: c.id)
def test_scaling_the_features_changes_nothing(case):
    reg = case.build(feature_shape=(40,))
    feats, targets = latent_batch(24)
    assert_same_outputs(run(reg, 3.7 * feats, targets), run(reg, feats, targets), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", promising("unit_correlations"), ids=lambda c: c.id)
@pytest.mark.parametrize("batch, neurons", [(8, 3), (16, 50), (128, 20)])
def test_canonical_correlations_lie_in_the_unit_interval(case, batch, neurons):
    reg = case.build(feature_shape=(40,), neurons=neurons, dim=4)
    out = run(reg, *latent_batch(batch, neurons))
    for term in ("rho_mean", "rho_1"):
        assert 0.0 <= float(out[term]) <= 1.0, term


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
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


def test_a_regularizer_without_test_values_for_its_arguments_fails_naming_them():
    class Widened(SimilarityRegularizer):
        def __init__(self, layers, width: int):
            super().__init__(layers)

    with pytest.raises(LookupError, match=r"Widened.*'width'"):
        Case(Widened).build()
