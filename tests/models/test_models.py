import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from neuroreg.data.datamodules import RegularizedDataModule
from neuroreg.data.images import Digits
from neuroreg.models.backbones import ResNet18, SmallResNet
from neuroreg.models.classifier import RegularizedClassifier
from neuroreg.models.taps import FeatureTaps, LayerNotFoundError
from neuroreg.regularizers import SimilarityRegularizer
from neuroreg.targets.base import TargetSource
from neuroreg.targets.format import TargetSet, TargetSetError, target_key


class PixelTargets(TargetSource):
    """Targets = a fixed random projection of the pixels (so they carry image geometry)."""

    def __init__(self, n_neurons=20, keys_override=None, nan_neuron=None):
        self.num_neurons = n_neurons
        self.keys_override = keys_override
        self.nan_neuron = nan_neuron

    def target_set(self, images):
        train = images.split("train")
        w = np.random.default_rng(0).normal(size=(train.images[0].size, self.num_neurons)).astype(np.float32)
        t = np.maximum(train.images_float().reshape(len(train), -1) @ w, 0).astype(np.float32)
        if self.nan_neuron is not None:
            t[:, self.nan_neuron] = np.nan
        keys = train.keys if self.keys_override is None else self.keys_override(train.keys)
        return TargetSet(t, keys, target_key("pixels"), name="pixel-targets")


@pytest.mark.parametrize("backbone, shape", [(SmallResNet(1, [8, 16]), (2, 1, 32, 32)), (ResNet18(3), (2, 3, 32, 32))])
def test_backbones_output_features(backbone, shape):
    out = backbone(torch.rand(shape))
    assert out.shape == (2, backbone.out_features)


def test_taps_capture_named_layers_only_inside_block():
    net = SmallResNet(1, [8, 16])
    taps = FeatureTaps(net, ["layer1", "layer2.0.conv2"])
    with taps.capture() as feats:
        net(torch.rand(3, 1, 32, 32))
    assert feats["layer1"].shape == (3, 8, 32, 32) and feats["layer2.0.conv2"].shape == (3, 16, 16, 16)
    with taps.capture() as again:
        pass
    assert again == {}


def test_unknown_layer_names_the_layer_and_the_options():
    with pytest.raises(LayerNotFoundError, match=r"layer 'layer9'.*SmallResNet.*'layer1'"):
        FeatureTaps(SmallResNet(1, [8, 16]), ["layer9"])
    with pytest.raises(LayerNotFoundError, match="layer5"):
        RegularizedClassifier(ResNet18(3), regularizers={"s": SimilarityRegularizer(["layer5"])}, mean=[0.5] * 3, std=[0.2] * 3)


def test_forward_normalises_and_checks_channels():
    model = RegularizedClassifier(SmallResNet(1, [8]), num_classes=10, mean=[0.3], std=[0.3])
    assert model(torch.rand(4, 1, 32, 32)).shape == (4, 10)
    with pytest.raises(ValueError, match=r"expected \[batch, 1, H, W\], found shape \(4, 3, 32, 32\)"):
        model(torch.rand(4, 3, 32, 32))
    with pytest.raises(ValueError, match="mean, std: expected 3 values"):
        RegularizedClassifier(ResNet18(3), mean=[0.5], std=[0.5])


def _fit(model, dm, steps=3):
    trainer = pl.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(model, dm)
    return trainer


def test_training_logs_named_terms_and_regularizer_changes_gradients():
    torch.manual_seed(0)
    dm = RegularizedDataModule(Digits(), PixelTargets(), batch_size=16)
    model = RegularizedClassifier(SmallResNet(1, [8, 16]), num_classes=10, num_neurons={"targets": 20},
                                  regularizers={"sim": SimilarityRegularizer(["layer1", "layer2"], weight=2.0)})
    trainer = _fit(model, dm)
    logged = trainer.callback_metrics
    for key in ["train/loss", "train/task/cross_entropy", "train/sim/loss", "train/sim/layer_weight/layer1",
                "train/sim/neural_model_corr"]:
        assert key in logged, key
    total = logged["train/loss"]
    assert float(total) == pytest.approx(float(logged["train/task/cross_entropy"] + 2.0 * logged["train/sim/loss"]), rel=1e-5)
    (val,) = trainer.validate(model, dm, verbose=False)
    assert 0.0 <= val["val/accuracy"] <= 1.0 and val["val/task/cross_entropy"] > 0


def test_regularizer_weight_zero_equals_plain_training():
    batch = next(iter(RegularizedDataModule(Digits(), PixelTargets(), batch_size=8).train_dataloader()))

    def grads(weight):
        torch.manual_seed(0)
        m = RegularizedClassifier(SmallResNet(1, [8]), num_neurons={"targets": 20},
                                  regularizers={"sim": SimilarityRegularizer(["layer1"], weight=weight)})
        m.log = lambda *a, **k: None
        m.training_step(batch, 0).backward()
        return m.backbone.stem[0].weight.grad.clone()

    assert torch.allclose(grads(0.0), grads(0.0))
    assert not torch.allclose(grads(0.0), grads(5.0))


def test_target_dimension_mismatch_is_reported():
    batch = next(iter(RegularizedDataModule(Digits(), PixelTargets(), batch_size=8).train_dataloader()))
    m = RegularizedClassifier(SmallResNet(1, [8]), num_neurons={"targets": 7}, regularizers={"sim": SimilarityRegularizer(["layer1"])})
    m.log = lambda *a, **k: None
    with pytest.raises(ValueError, match=r"expected \[batch, 7\] neural targets, found \(8, 20\)"):
        m.training_step(batch, 0)


def test_datamodule_refuses_targets_of_another_image_set():
    dm = RegularizedDataModule(Digits(), PixelTargets(keys_override=lambda k: np.char.add("cifar10/", k)))
    with pytest.raises(TargetSetError, match="foreign keys"):
        dm.setup()


def test_datamodule_refuses_targets_missing_images():
    dm = RegularizedDataModule(Digits(), PixelTargets(keys_override=lambda k: k[:-5].tolist() + ["digits/x"] * 5))
    with pytest.raises(TargetSetError):
        dm.setup()


def test_datamodule_refuses_all_nan_neuron():
    with pytest.raises(TargetSetError, match="1 neurons that are NaN"):
        RegularizedDataModule(Digits(), PixelTargets(nan_neuron=3)).setup()


def test_regularizers_without_targets_fail_at_setup():
    model = RegularizedClassifier(SmallResNet(1, [8]), regularizers={"sim": SimilarityRegularizer(["layer1"])})
    with pytest.raises(ValueError, match="need neural targets"):
        _fit(model, RegularizedDataModule(Digits(), None, batch_size=16), steps=1)


def test_channel_mismatch_fails_at_setup():
    model = RegularizedClassifier(ResNet18(3), mean=[0.5] * 3, std=[0.2] * 3)
    with pytest.raises(ValueError, match="images have 1 channels but the model expects 3"):
        _fit(model, RegularizedDataModule(Digits(), None, batch_size=16), steps=1)
