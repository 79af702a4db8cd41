"""Cores, readouts, losses and the stimulus transform: shapes, gradients, math, errors."""

import numpy as np
import pytest
import torch

from neuroreg.twin.cores import (
    Stacked2dCore,
    TorchvisionCore,
    group_sparsity_penalty,
    laplace_penalty,
)
from neuroreg.twin.losses import GaussianLoss, PoissonLoss
from neuroreg.twin.readouts import FactorizedReadout, GaussianReadout, MultiReadout
from neuroreg.twin.transforms import StimulusTransform


@pytest.mark.parametrize("skip", [0, 2])
def test_stacked_core_shapes_grads_and_regularizer(skip):
    core = Stacked2dCore(1, [4, 6, 5], input_kernel=5, hidden_kernel=3, layers=3, skip=skip, final_layers=2,
                         gamma_input=1.0, gamma_hidden=0.5)
    x = torch.randn(3, 1, 16, 16)
    y = core(x)
    assert y.shape == (3, core.out_channels, 16, 16) and core.out_channels == 11
    (y.sum() + core.regularizer()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in core.parameters())
    valid = Stacked2dCore(1, 4, input_kernel=5, layers=1, pad_input=False)
    assert valid(x).shape == (3, 4, 12, 12)


def test_penalties_math():
    smooth = torch.ones(2, 1, 7, 7)
    rough = torch.randn(2, 1, 7, 7)
    assert laplace_penalty(rough) > laplace_penalty(smooth)
    assert laplace_penalty(3 * rough) == pytest.approx(float(laplace_penalty(rough)), rel=1e-5)  # scale-free
    w = torch.zeros(2, 3, 3, 3)
    w[0, 1] = 2.0  # one group, norm sqrt(9 * 4) = 6
    assert group_sparsity_penalty(w) == pytest.approx(6.0, rel=1e-4)


def test_core_config_errors():
    with pytest.raises(ValueError, match="'input_kernel': expected an odd size"):
        Stacked2dCore(input_kernel=4)
    with pytest.raises(ValueError, match="Stacked2dCore: input: expected \\[batch, 1, H, W\\]"):
        Stacked2dCore(1, 4, layers=1)(torch.zeros(1, 3, 8, 8))


def test_torchvision_core_frozen_and_truncated(tmp_path):
    core = TorchvisionCore("resnet18", layer="layer1", in_channels=1)
    y = core(torch.rand(2, 1, 32, 32))
    assert y.shape == (2, 64, 8, 8)
    assert not any(p.requires_grad for p in core.backbone.parameters())
    core.train()
    assert not core.backbone.training
    with pytest.raises(ValueError, match="'layer': 'layer9' is not a node of resnet18"):
        TorchvisionCore("resnet18", layer="layer9")
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        TorchvisionCore("resnet18", weights_path=str(tmp_path / "nothing.pth"))
    import torchvision

    path = tmp_path / "w.pth"
    ref = torchvision.models.resnet18()
    torch.save(ref.state_dict(), path)
    loaded = TorchvisionCore("resnet18", layer="layer1", weights_path=str(path), fine_tune=True)
    assert torch.equal(loaded.backbone.conv1.weight, ref.conv1.weight)
    assert all(p.requires_grad for p in loaded.backbone.parameters())


@pytest.mark.parametrize("cls", [GaussianReadout, FactorizedReadout])
def test_readouts_shapes_bias_grads(cls):
    bias = torch.arange(5.0)
    ro = cls((8, 6, 7), 5, bias_init=bias)
    x = torch.randn(4, 8, 6, 7)
    out = ro(x)
    assert out.shape == (4, 5)
    (out.sum() + ro.regularizer()).backward()
    assert all(torch.isfinite(p.grad).all() for p in ro.parameters())
    ro.eval()
    np.testing.assert_allclose(ro(torch.zeros(1, 8, 6, 7))[0].detach(), bias)  # zero features -> bias
    with pytest.raises(ValueError, match="'bias_init': expected 5 values"):
        cls((8, 6, 7), 5, bias_init=torch.zeros(4))
    with pytest.raises(ValueError, match="input: expected \\[batch, 8, 6, 7\\]"):
        ro(torch.zeros(1, 8, 5, 7))


def test_gaussian_readout_reads_its_position_in_eval_and_samples_in_training():
    ro = GaussianReadout((1, 5, 5), 1)
    with torch.no_grad():
        ro.mu.copy_(torch.tensor([[1.0, -1.0]]))  # x = right edge, y = top edge
        ro.features.fill_(1.0)
        ro.bias.zero_()
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 0, 4] = 7.0
    ro.eval()
    assert ro(x).item() == pytest.approx(7.0)
    ro.train()
    torch.manual_seed(0)
    assert not torch.allclose(ro(x.expand(8, -1, -1, -1)), torch.full((8, 1), 7.0))


def test_multi_readout():
    multi = MultiReadout({"mouse": GaussianReadout((2, 4, 4), 3), "monkey": FactorizedReadout((2, 4, 4), 5)})
    x = torch.randn(2, 2, 4, 4)
    assert multi(x, "mouse").shape == (2, 3) and multi(x, "monkey").shape == (2, 5)
    with pytest.raises(KeyError, match="known datasets are \\['mouse', 'monkey'\\]"):
        multi(x, "rat")


def test_poisson_loss_math_mask_and_refusal():
    loss = PoissonLoss(eps=0.0)
    pred = torch.tensor([[1.0, 2.0], [0.5, 3.0]])
    target = torch.tensor([[0.0, 1.0], [float("nan"), 4.0]])
    ref = np.mean([1.0 - 0.0, 2.0 - 1.0 * np.log(2.0), 3.0 - 4.0 * np.log(3.0)])
    assert loss(pred, target)["loss"].item() == pytest.approx(ref, rel=1e-6)
    assert torch.all(loss.nonlinearity(torch.linspace(-10, 10, 50)) > 0)
    m = torch.tensor([0.2, 1.0, 3.5])
    np.testing.assert_allclose(loss.nonlinearity(loss.inverse(m)), m, rtol=1e-5)
    with pytest.raises(ValueError, match="rec.h5: 'responses': PoissonLoss expects non-negative.*use neuroreg.twin.losses.GaussianLoss"):
        loss.check(np.array([[0.5, -0.1]]), "rec.h5")
    loss.check(np.array([[0.5, np.nan]]), "rec.h5")


def test_gaussian_loss_and_batch_size_independence():
    loss = GaussianLoss()
    pred = torch.randn(6, 3)
    target = torch.randn(6, 3)
    target[0, 0] = float("nan")
    full = loss(pred, target)["loss"]
    mask = ~torch.isnan(target)
    assert full.item() == pytest.approx(((pred - target)[mask] ** 2).mean().item())
    doubled = loss(torch.cat([pred, pred]), torch.cat([target, target]))["loss"]
    assert doubled.item() == pytest.approx(full.item())
    pred.requires_grad_(True)
    loss(pred, target)["loss"].backward()
    assert torch.isfinite(pred.grad).all() and pred.grad[0, 0] == 0


def test_stimulus_transform_gray_resize_normalise():
    tf = StimulusTransform(size=(8, 12), channels=1)
    rgb = torch.rand(2, 3, 16, 16)
    y = tf(rgb)
    assert y.shape == (2, 1, 8, 12)
    tf.fit_statistics(np.full((4, 1, 8, 12), 0.25, dtype=np.float32))
    assert tf.mean.item() == pytest.approx(0.25) and bool(tf.fitted)
    tf.fit_statistics(np.zeros((1, 1, 8, 12), dtype=np.float32))  # already fitted: kept
    assert tf.mean.item() == pytest.approx(0.25)
    gray = torch.full((1, 1, 8, 12), 0.25)
    assert torch.allclose(tf(gray), torch.zeros(1))
    lum = (rgb * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    same = StimulusTransform(size=(16, 16), mean=0.0, std=1.0)
    assert torch.allclose(same(rgb), lum)
    strict = StimulusTransform(size=(16, 16), resize=False)
    with pytest.raises(ValueError, match="expected resolution 16x16 \\(transform size\\), found 8x8"):
        strict(torch.rand(1, 1, 8, 8))


def test_factorized_smoothness_penalty_prefers_smooth_masks():
    ro = FactorizedReadout((2, 8, 8), 1, gamma_smooth=1.0)
    yy, xx = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    with torch.no_grad():
        ro.features.zero_()
        ro.spatial.copy_(torch.exp(-((xx - 3.5) ** 2 + (yy - 3.5) ** 2) / 8.0)[None] / 4)
        smooth = ro.regularizer().item()
        ro.spatial.copy_(torch.randn(1, 8, 8) * ro.spatial.norm() / 8)
        rough = ro.regularizer().item()
    assert smooth < rough
