"""Batch-statistics regularizers under Lightning DDP (2 CPU processes, gloo) equal the
single-process loss and gradient on the concatenated batch.

Every regularizer (and option) of neuroreg.regularizers that uses batch statistics is
found by tests/_regularizers.py and checked in one DDP run."""

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from _regularizers import cases

GATHERING = [case for case in cases() if case.cls.uses_batch_statistics]


def make_regularizers():
    # ModuleDict keys may not contain "."; the case ids do not
    return nn.ModuleDict({case.id: case.build(feature_shape=(10,), neurons=5, dim=3) for case in GATHERING})


def test_every_batch_statistics_regularizer_is_checked():
    names = {case.cls.__name__ for case in GATHERING}
    assert {"SimilarityRegularizer", "RSARegularizer", "CKARegularizer", "DCCARegularizer", "SpectralRegularizer"} <= names


def losses(net, regs, x, t):
    feats = {"x": net(x)}
    return {name: reg(feats, t if reg.needs_targets else None)["loss"] for name, reg in regs.items()}


class Probe(pl.LightningModule):
    def __init__(self, out_dir: str):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Linear(6, 10)
        self.regs = make_regularizers()
        self.out_dir = Path(out_dir)

    def training_step(self, batch, batch_idx):
        x, t = batch
        terms = losses(self.net, self.regs, x, t)
        self._saved = {"x": x, "t": t, "losses": {k: v.detach() for k, v in terms.items()}}
        return sum(terms.values())

    def on_after_backward(self):
        self._saved["grad"] = self.net.weight.grad.detach().clone()
        torch.save(self._saved, self.out_dir / f"rank{self.global_rank}.pt")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


@pytest.mark.slow
def test_ddp_gathered_losses_and_gradients_equal_single_process(tmp_path, monkeypatch):
    # a port another DDP test of this process left in the environment may still be taken: let Lightning pick a free one
    monkeypatch.delenv("MASTER_PORT", raising=False)
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(16, 6, generator=g), torch.rand(16, 5, generator=g))
    probe = Probe(str(tmp_path))
    reference_state = {k: v.clone() for k, v in probe.state_dict().items()}
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_steps=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(probe, DataLoader(data, batch_size=8))
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert not torch.equal(r0["x"], r1["x"])  # each rank saw its own half

    ref = Probe(str(tmp_path))
    ref.load_state_dict(reference_state)
    x, t = torch.cat([r0["x"], r1["x"]]), torch.cat([r0["t"], r1["t"]])
    single = losses(ref.net, ref.regs, x, t)
    sum(single.values()).backward()
    for name, value in single.items():
        for rank in (r0, r1):
            torch.testing.assert_close(rank["losses"][name], value.detach(), rtol=1e-5, atol=1e-6, msg=name)
    torch.testing.assert_close(r0["grad"], ref.net.weight.grad, rtol=1e-3, atol=1e-5)  # float32 sums in another order
    torch.testing.assert_close(r1["grad"], ref.net.weight.grad, rtol=1e-3, atol=1e-5)
