"""FastResNet, channels-last, an opt-in compiled backbone and bf16-mixed training on CPU."""

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from neuroreg.models.backbones import FastResNet
from neuroreg.models.classifier import RegularizedClassifier
from neuroreg.regularizers import CKARegularizer, SpectralRegularizer


def test_fast_resnet_layers_for_taps():
    net = FastResNet(3, widths=[8, 16, 32, 32])
    names = dict(net.named_modules())
    assert {"stem", "layer1", "layer2", "layer3", "layer2.conv2"} <= set(names)
    model = RegularizedClassifier(net, regularizers={"cka": CKARegularizer(["layer2"])}, mean=[0.5] * 3, std=[0.25] * 3,
                                  num_neurons={"t": 5}, image_size=32)
    with model.taps.capture() as feats:
        out = model(torch.rand(4, 3, 32, 32))
    assert out.shape == (4, 10) and feats["layer2"].shape == (4, 32, 7, 7)  # 32 → 31 (stem) → 15 → 7
    with pytest.raises(ValueError, match="widths"):
        FastResNet(3, widths=[8])
    with pytest.raises(ValueError, match="pool"):
        FastResNet(3, widths=[8, 8], pool=[True, False])


def test_channels_last_and_compiled_backbone_give_the_same_outputs():
    torch.manual_seed(0)
    plain = RegularizedClassifier(FastResNet(1, widths=[4, 8, 8]), mean=[0.5], std=[0.5]).eval()
    fast = RegularizedClassifier(FastResNet(1, widths=[4, 8, 8]), mean=[0.5], std=[0.5], channels_last=True,
                                 compile_backbone={"backend": "eager"}).eval()
    fast.load_state_dict(plain.state_dict())
    assert set(fast.state_dict()) == set(plain.state_dict())  # no compiled-module prefixes
    assert fast.backbone.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(3, 1, 16, 16)
    torch.testing.assert_close(fast(x), plain(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError, match="compile_backbone"):
        RegularizedClassifier(FastResNet(1, widths=[4, 8]), mean=[0.5], std=[0.5], compile_backbone="yes")


class _Batches(Dataset):
    def __init__(self, n=16):
        g = torch.Generator().manual_seed(0)
        self.x, self.y, self.t = torch.rand(n, 1, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g), torch.rand(n, 5, generator=g)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"image": self.x[i], "label": self.y[i], "targets": {"t": self.t[i]}}


def test_bf16_mixed_training_step_on_cpu_is_finite_and_regularizers_stay_float32():
    torch.manual_seed(0)
    regs = {"cka": CKARegularizer(["layer1"]), "spec": SpectralRegularizer(["layer2"], n_max=6)}
    model = RegularizedClassifier(FastResNet(1, widths=[4, 8, 8]), regularizers=regs, num_neurons={"t": 5}, image_size=16,
                                  mean=[0.5], std=[0.5], channels_last=True)
    seen = {}

    def record(name):
        def hook(module, inputs, output):  # what forward received and returned (returns None: output unchanged)
            seen[name] = (inputs[0][module.layers[0]].dtype, output["loss"].dtype)

        return hook

    for name, reg in regs.items():
        reg.register_forward_hook(record(name))
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", precision="bf16-mixed", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.fit(model, DataLoader(_Batches(), batch_size=8))
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert seen["cka"] == (torch.float32, torch.float32) and seen["spec"] == (torch.float32, torch.float32)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bf16_mixed_autocasts_the_steps_but_not_the_fit_end_evaluation():
    """Under trainer.precision bf16-mixed the training step runs under autocast, while callbacks at the end of the
    fit (RobustnessEvaluation's attacks) run outside it, in float32: what the full scales rely on."""
    seen = {}

    class Probe(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.setdefault("after_step", torch.is_autocast_enabled("cpu"))

        def on_fit_end(self, trainer, pl_module):
            seen["fit_end"] = torch.is_autocast_enabled("cpu")
            x = next(iter(DataLoader(_Batches(), batch_size=4)))["image"]
            seen["fit_end_dtype"] = pl_module(x).dtype

    class Model(RegularizedClassifier):
        def training_step(self, batch, batch_idx):
            seen.setdefault("step", torch.is_autocast_enabled("cpu"))
            return super().training_step(batch, batch_idx)

    model = Model(FastResNet(1, widths=[4, 8, 8]), mean=[0.5], std=[0.5], channels_last=True)
    pl.Trainer(max_steps=1, accelerator="cpu", precision="bf16-mixed", logger=False, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False, callbacks=[Probe()]).fit(model, DataLoader(_Batches(), batch_size=8))
    assert seen == {"step": True, "after_step": False, "fit_end": False, "fit_end_dtype": torch.float32}
