"""The RSA regularizer with an RDM target (dissimilarities over a batch's images, no responses)."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from neuroreg.data.datamodules import RegularizedDataModule
from neuroreg.data.images import Digits
from neuroreg.models.backbones import SmallResNet
from neuroreg.models.classifier import RegularizedClassifier
from neuroreg.regularizers import CKARegularizer, RSARegularizer
from neuroreg.regularizers import functional as F
from neuroreg.targets.rdm import RDMFile, RDMTargets


def random_rdm(n: int, seed: int = 0) -> torch.Tensor:
    return F.rdm(torch.randn(n, 30, generator=torch.Generator().manual_seed(seed)))


def test_rsa_loss_matches_a_naive_sum_over_pairs():
    a, b = random_rdm(7, 0), random_rdm(7, 1)
    naive = np.mean([abs(float(a[i, j] - b[i, j])) ** 2 for i in range(7) for j in range(i + 1, 7)])
    assert float(F.rsa_loss(a, b, 2)) == pytest.approx(naive, rel=1e-5)
    assert float(F.rsa_loss(F.offdiagonal(a), F.offdiagonal(b), 2)) == pytest.approx(naive, rel=1e-5)
    with pytest.raises(ValueError, match="expected RDMs of one shape"):
        F.rsa_loss(a, b[:3, :3])
    with pytest.raises(ValueError, match="power: expected 1 or 2"):
        F.rsa_loss(a, b, 3)


def test_dissimilarities_equal_the_responses_path_when_they_are_the_responses_rdm():
    reg = RSARegularizer(["x"], penalty="squared")
    feats = {"x": torch.randn(10, 16)}
    responses = torch.rand(10, 40)
    from_responses = reg(feats, responses)
    from_rdm = reg(feats, None, dissimilarities=F.rdm(responses))
    assert float(from_rdm["loss"]) == pytest.approx(float(from_responses["loss"]), rel=1e-3)
    assert float(from_rdm["neural_model_corr"]) == pytest.approx(float(from_responses["neural_model_corr"]), rel=1e-3)


def test_gradient_steps_reduce_the_loss_toward_a_given_rdm():
    torch.manual_seed(0)
    target = random_rdm(12, seed=3)
    x = torch.randn(12, 20, requires_grad=True)
    reg = RSARegularizer(["x"], penalty="abs")
    opt = torch.optim.Adam([x], lr=0.05)
    losses, corrs = [], []
    for _ in range(60):
        out = reg({"x": x}, None, dissimilarities=target)
        losses.append(float(out["loss"]))
        corrs.append(float(out["neural_model_corr"]))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert losses[-1] < 0.5 * losses[0], losses
    assert corrs[-1] > corrs[0] + 0.3, corrs


def test_shape_and_form_errors():
    reg = RSARegularizer(["x"])
    feats = {"x": torch.randn(6, 5)}
    with pytest.raises(ValueError, match="found both"):
        reg(feats, torch.rand(6, 3), dissimilarities=random_rdm(6))
    with pytest.raises(ValueError, match="found neither"):
        reg(feats, None)
    with pytest.raises(ValueError, match=r"dissimilarities: expected the \[6, 6\] neural RDM over the batch's images, found shape \(5, 5\)"):
        reg(feats, None, dissimilarities=random_rdm(5))
    with pytest.raises(ValueError, match="expected >= 2 images, found 1"):
        reg({"x": torch.randn(1, 5)}, None, dissimilarities=torch.zeros(1, 1))
    assert RSARegularizer.accepts_dissimilarities and not getattr(CKARegularizer, "accepts_dissimilarities", False)


def rdm_file(tmp_path, metric: str = "correlation", n: int = 20) -> str:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 3, 20, 20), dtype=np.uint8)
    t = RDMTargets(images, np.arange(n), F.offdiagonal(F.rdm(torch.randn(n, 50))).double().numpy(), metric=metric)
    return str(t.save(tmp_path / "rdm.h5"))


def model_and_data(tmp_path, reg, metric="correlation"):
    dm = RegularizedDataModule(Digits(size=16), neural={"it": RDMFile(rdm_file(tmp_path, metric))}, batch_size=32,
                               neural_batch_size=8, seed=0)
    model = RegularizedClassifier(SmallResNet(in_channels=1, widths=[4, 8]), num_classes=10, regularizers={"rsa": reg},
                                  mean=[0.3], std=[0.3])
    return model, dm


def test_a_fit_step_uses_the_sub_rdm_of_the_neural_batch(tmp_path):
    model, dm = model_and_data(tmp_path, RSARegularizer(["layer2"], source="it"))
    seen = []
    original = model.regularizers["rsa"].forward

    def spy(features, targets=None, mask=None, context=None, dissimilarities=None):
        seen.append((targets, dissimilarities))
        return original(features, targets, mask, context, dissimilarities)

    model.regularizers["rsa"].forward = spy
    trainer = pl.Trainer(fast_dev_run=True, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    assert dm.dissimilarity_metrics == {"it": "correlation"} and dm.num_neurons == {"it": 0}
    targets, d = seen[0]
    assert targets is None and d.shape == (8, 8)
    assert torch.allclose(d, d.T) and not d.diagonal().any()
    assert "train/rsa/loss" in trainer.callback_metrics


def test_regularizers_that_need_responses_or_another_metric_are_refused(tmp_path):
    model, dm = model_and_data(tmp_path, CKARegularizer(["layer2"], source="it"))
    dm.setup()
    with pytest.raises(TypeError, match="regularizers.rsa: source 'it' gives dissimilarities .* CKARegularizer needs responses"):
        model._check_dissimilarity_sources(dm.dissimilarity_metrics)
    model, dm = model_and_data(tmp_path, RSARegularizer(["layer2"], source="it", metric="cosine"))
    trainer = pl.Trainer(fast_dev_run=True, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False)
    with pytest.raises(ValueError, match="regularizers.rsa.metric: source 'it' holds a 'correlation' RDM; expected metric "
                       "'correlation', found 'cosine'"):
        trainer.fit(model, datamodule=dm)
