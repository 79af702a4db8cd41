import numpy as np
import pytest
import torch

from neuroreg.gabor import gabor_kernels, sample_gabor_params
from neuroreg.models.backbones import SmallResNet
from neuroreg.models.classifier import RegularizedClassifier
from neuroreg.models.vone import VOneBackbone, VOneBlock
from neuroreg.regularizers import SimilarityRegularizer


def test_filters_come_from_the_shared_gabor_distributions():
    vone = VOneBlock(in_channels=1, simple_channels=6, complex_channels=4, kernel_size=9, preset="mouse_v1",
                     pixels_per_degree=1.0, seed=3)
    params = sample_gabor_params(10, "mouse_v1", np.random.default_rng(3))
    np.testing.assert_allclose(vone.params.sf, params.sf)
    even = gabor_kernels(params, 9, 1.0)
    np.testing.assert_allclose(vone.weight[:10, 0].numpy(), even, atol=1e-7)
    odd = gabor_kernels(params.subset(slice(6, 10)), 9, 1.0, phase_offset=np.pi / 2)
    np.testing.assert_allclose(vone.weight[10:, 0].numpy(), odd, atol=1e-7)
    assert not vone.weight.requires_grad and all(p is vone.bottleneck.weight for p in vone.parameters())


def test_rgb_filters_read_one_channel_each_and_quadrature_pairs_share_it():
    vone = VOneBlock(in_channels=3, simple_channels=5, complex_channels=5, seed=0)
    per_channel = vone.weight.abs().sum(dim=(2, 3)) > 0  # [filters, channels]
    assert (per_channel.sum(1) == 1).all()
    assert torch.equal(per_channel[5:10], per_channel[10:15])


def test_deterministic_given_seed_and_noise_controls():
    x = torch.rand(2, 1, 16, 16)
    a = VOneBlock(1, 8, 4, 4, seed=1)
    b = VOneBlock(1, 8, 4, 4, seed=1)
    assert torch.equal(a.weight, b.weight)
    off = VOneBlock(1, 8, 4, 4, seed=1, noise="off")
    assert torch.equal(off.responses(x), off.responses(x))
    a.train()
    assert not torch.equal(a.responses(x), a.responses(x))  # stochastic while training
    a.freeze_noise((2, 8, 16, 16), seed=0)
    assert torch.equal(a.responses(x), a.responses(x))
    a.unfreeze_noise()
    quiet = VOneBlock(1, 8, 4, 4, seed=1, noise_in_eval=False).eval()
    torch.testing.assert_close(quiet.responses(x), off.responses(x))
    assert (off.responses(x) >= 0).all()


def test_complex_cells_are_phase_invariant_energy():
    vone = VOneBlock(1, 4, simple_channels=0, complex_channels=4, noise="off", kernel_size=9)
    x = torch.rand(1, 1, 16, 16)
    q = torch.nn.functional.conv2d(x, vone.weight, padding=4)
    torch.testing.assert_close(vone.responses(x), torch.sqrt(q[:, :4] ** 2 + q[:, 4:] ** 2 + 1e-12) / np.sqrt(2))


def test_backbone_wrapper_checks_channels_and_taps_nested_layers():
    with pytest.raises(ValueError, match=r"vone.out_channels: expected 16"):
        VOneBackbone(VOneBlock(1, 8, 4, 4), SmallResNet(16, [8]))
    net = VOneBackbone(VOneBlock(1, 16, 4, 4), SmallResNet(16, [8, 16]))
    assert net.in_channels == 1 and net.out_features == 16
    model = RegularizedClassifier(net, num_neurons={"t": 5}, regularizers={"s": SimilarityRegularizer(["backbone.layer1"])})
    assert model(torch.rand(3, 1, 32, 32)).shape == (3, 10)


@pytest.mark.parametrize("kwargs, msg", [({"in_channels": 2}, "in_channels"), ({"kernel_size": 8}, "kernel_size"),
                                          ({"noise": "gaussian"}, "noise"), ({"simple_channels": 0, "complex_channels": 0}, "simple_channels")])
def test_bad_arguments(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        VOneBlock(**kwargs)
