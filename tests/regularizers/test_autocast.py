"""Every regularizer under bfloat16 autocast equals float32 (loss and gradients).

Under ``torch.autocast("cpu", dtype=torch.bfloat16)`` the backbone's features arrive
in bfloat16; the regularizers must compute their covariances, Gram matrices, ``eigh``
and spectral fits in float32. The reference is the float32 computation on the same
(bfloat16-rounded) features, so any difference is the regularizer's own precision.
Tolerances: loss within 1e-4 relative (plus 1e-5 absolute); gradient within 1e-2 of its
norm (the gradient comes back in bfloat16, whose rounding is 2^-8 ≈ 4e-3).
"""

import pytest
import torch
from _regularizers import FEATURE_SHAPE, NEURONS, cases

from neuroreg.regularizers import StepContext
from neuroreg.regularizers import functional as F

BATCH = 32


def _loss_and_grad(reg, features, targets, autocast: bool):
    x = features.detach().clone().requires_grad_(True)
    torch.manual_seed(1)  # the same draws for stochastic parts (the Gaussian readout samples positions)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = reg({"x": x}, targets, ~torch.isnan(targets), context=StepContext(task_loss=torch.tensor(2.0), step=0, epoch=0))
    out["loss"].backward()
    return out["loss"].detach(), x.grad


@pytest.mark.parametrize("case", cases(), ids=lambda c: c.id)
def test_bf16_autocast_matches_float32(case):
    torch.manual_seed(0)
    reg = case.build(dim=4)
    feats = torch.randn(BATCH, *FEATURE_SHAPE).to(torch.bfloat16)  # what a bf16 backbone hands over
    targets = torch.rand(BATCH, NEURONS)
    ref_loss, ref_grad = _loss_and_grad(reg, feats.float(), targets, autocast=False)
    reg.zero_grad()
    loss, grad = _loss_and_grad(reg, feats, targets, autocast=True)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert grad.dtype == torch.bfloat16
    torch.testing.assert_close(loss, ref_loss, rtol=1e-4, atol=1e-5)
    err = (grad.float() - ref_grad).norm() / ref_grad.norm().clamp_min(1e-12)
    assert err < 1e-2, f"{case.id}: gradient off by {float(err):.2e} of its norm under autocast"


def test_float32_inside_autocast_is_what_makes_the_difference():
    """The same CCA computed with bfloat16 matmuls is far from float32 (the check above could fail)."""
    torch.manual_seed(0)
    x, y = torch.randn(256, 6), torch.randn(256, 6)
    y = y + 2.0 * x  # strong, but not perfect, correlations
    ref = F.cca(x, y, k=3, eps=1e-3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = F.cca(x, y, k=3, eps=1e-3)
        xc, yc = x - x.mean(0), y - y.mean(0)
        sxy = xc.T @ yc  # autocast: a bfloat16 matmul
    torch.testing.assert_close(inside, ref, rtol=1e-5, atol=1e-6)
    assert sxy.dtype == torch.bfloat16
    exact = (xc.T @ yc).float()
    assert (sxy.float() - exact).abs().max() > 1e-3 * exact.abs().max()


def test_float32_casts_nested_values():
    value = {"a": torch.ones(2, dtype=torch.bfloat16), "b": [torch.ones(1, dtype=torch.float16), 3], "c": torch.ones(1, dtype=torch.float64)}
    out = F.float32(value)
    assert out["a"].dtype == torch.float32 and out["b"][0].dtype == torch.float32 and out["b"][1] == 3
    assert out["c"].dtype == torch.float64
    assert not F.autocasting()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert F.autocasting()
        with F.autocast_off():
            assert not F.autocasting()
