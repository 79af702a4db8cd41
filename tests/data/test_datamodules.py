"""Several target sources and regularizers in one run; neural batches; controls; BN handling."""

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import make_recording

from neuroreg.data.datamodules import RegularizedDataModule
from neuroreg.data.images import Digits
from neuroreg.data.recording_sources import RecordingFile
from neuroreg.models.backbones import SmallResNet
from neuroreg.models.classifier import RegularizedClassifier, batchnorm_mode
from neuroreg.regularizers import (
    CKARegularizer,
    CotrainingRegularizer,
    DCCARegularizer,
    SimilarityRegularizer,
    SpectralRegularizer,
)
from neuroreg.targets.base import NeuralBatchSource
from neuroreg.targets.controls import (
    PixelTargets,
    RandomNetworkTargets,
    ShuffledResponses,
    ShuffledTargets,
)
from neuroreg.targets.format import TargetSet, target_key
from neuroreg.targets.sources import RecordingResponses


class NoiseResponses(NeuralBatchSource):
    """Random stimuli (RGB, 16×16, to exercise conversion) and a linear-rectified population."""

    def __init__(self, n_neurons=12, n_images=40, channels=3, size=16):
        self.num_neurons, self.n_images, self.channels, self.size = n_neurons, n_images, channels, size

    def load(self):
        rng = np.random.default_rng(0)
        x = rng.random((self.n_images, self.channels, self.size, self.size), dtype=np.float32)
        w = rng.normal(size=(x[0].size, self.num_neurons)).astype(np.float32)
        return x, np.maximum(x.reshape(len(x), -1) @ w, 0).astype(np.float32)


def _fit(model, dm, steps=2, **kw):
    trainer = pl.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=1, num_sanity_val_steps=0, **kw)
    trainer.fit(model, dm)
    return trainer


def multi_dm(batch_size=16):
    return RegularizedDataModule(
        Digits(),
        targets={"pixels": PixelTargets(1, 4), "random": RandomNetworkTargets(SmallResNet(1, [4]), seed=0)},
        neural={"monkey": NoiseResponses()},
        batch_size=batch_size,
        neural_batch_size=8,
    )


def test_batches_carry_named_aligned_targets_and_neural_batches():
    dm = multi_dm()
    dm.setup()
    assert dm.num_neurons == {"pixels": 16, "random": 4, "monkey": 12} and dm.image_size == 32
    loader = dm.train_dataloader()
    batch = next(iter(loader))
    batch = batch[0] if isinstance(batch, tuple) else batch
    assert set(batch) == {"task", "neural"}
    assert batch["task"]["targets"]["pixels"].shape == (16, 16) and batch["task"]["targets"]["random"].shape == (16, 4)
    assert batch["neural"]["monkey"]["image"].shape == (8, 1, 32, 32)  # RGB 16×16 → grey 32×32
    assert batch["neural"]["monkey"]["target"].shape == (8, 12)


def test_three_regularizers_three_sources_one_run_logs_each():
    torch.manual_seed(0)
    model = RegularizedClassifier(
        SmallResNet(1, [8, 16, 16]),
        num_neurons={"pixels": 16, "random": 4, "monkey": 12},
        regularizers={
            "pix_sim": SimilarityRegularizer(["layer1"], source="pixels"),
            "rand_cka": CKARegularizer(["layer3"], source="random"),
            "monkey_dcca": DCCARegularizer(["layer2"], dim=3, source="monkey"),
            "spectrum": SpectralRegularizer(["layer3"], tau=2, weight=0.01),
        },
        neural_bn="frozen",
    )
    trainer = _fit(model, multi_dm())
    logged = trainer.callback_metrics
    for key in ["train/pix_sim/loss", "train/rand_cka/cka", "train/monkey_dcca/rho_mean", "train/spectrum/alpha_fit",
                "train/monkey_dcca/weight"]:
        assert key in logged, key
    terms = sum(float(logged[f"train/{n}/weight"]) * float(logged[f"train/{n}/loss"])
                for n in ["pix_sim", "rand_cka", "monkey_dcca", "spectrum"])
    assert float(logged["train/loss"]) == pytest.approx(float(logged["train/task/cross_entropy"]) + terms, rel=1e-4)


def test_unknown_or_ambiguous_source_is_reported():
    with pytest.raises(ValueError, match=r"source: expected one of the data's target sources \['a'\], found 'b'"):
        RegularizedClassifier(SmallResNet(1, [8]), num_neurons={"a": 3}, image_size=32,
                              regularizers={"s": SimilarityRegularizer(["layer1"], source="b")})
    with pytest.raises(ValueError, match="name one of them"):
        RegularizedClassifier(SmallResNet(1, [8]), num_neurons={"a": 3, "c": 2}, image_size=32,
                              regularizers={"s": SimilarityRegularizer(["layer1"])})


@pytest.mark.parametrize("mode, changes", [("batch", True), ("frozen", False), ("eval", False)])
def test_batchnorm_modes_of_the_neural_pass(mode, changes):
    net = SmallResNet(1, [4]).train()
    before = net.stem[1].running_mean.clone()
    with batchnorm_mode(net, mode):
        out = net(torch.rand(8, 1, 16, 16) + 1.0)
    assert (not torch.equal(net.stem[1].running_mean, before)) == changes
    assert net.training and net.stem[1].momentum == 0.1  # restored
    if mode == "eval":
        with torch.no_grad():
            net.eval()
            ref = net(torch.rand(8, 1, 16, 16) + 1.0)
        assert out.shape == ref.shape


def test_shuffled_pixel_and_random_network_controls():
    images = Digits()
    train = images.split("train")
    pix = PixelTargets(1, 8).target_set(images)
    assert pix.targets.shape == (len(train), 64)
    np.testing.assert_allclose(pix.targets[0].reshape(8, 8), train.images_float()[0, 0].reshape(8, 4, 8, 4).mean((1, 3)), atol=1e-6)
    shuf = ShuffledTargets(PixelTargets(1, 8), seed=1).target_set(images)
    assert np.array_equal(shuf.image_keys, pix.image_keys) and not np.array_equal(shuf.targets, pix.targets)
    np.testing.assert_allclose(np.sort(shuf.targets, axis=0), np.sort(pix.targets, axis=0))
    a = RandomNetworkTargets(SmallResNet(1, [4]), seed=5).target_set(images)
    torch.manual_seed(123)  # the global RNG does not matter
    b = RandomNetworkTargets(SmallResNet(1, [4]), seed=5).target_set(images)
    c = RandomNetworkTargets(SmallResNet(1, [4]), seed=6).target_set(images)
    np.testing.assert_array_equal(a.targets, b.targets)
    assert a.key == b.key != c.key and not np.allclose(a.targets, c.targets)
    with pytest.raises(ValueError, match="channels"):
        PixelTargets(3, 8).target_set(images)


def test_recording_responses_means_and_denoised_targets(tmp_path):
    rec = make_recording(n_images=6, n_neurons=4)
    path = rec.save(tmp_path / "rec.h5")
    src = RecordingResponses(RecordingFile(str(path)), tier="train")
    stimuli, responses = src.load()
    index, mean = rec.mean_per_image("train")
    assert src.num_neurons == 4 and stimuli.shape == (4, 1, 8, 8) and stimuli.max() <= 1.0
    np.testing.assert_array_equal(responses, mean)
    denoised = TargetSet(np.full((6, 4), 7.0, np.float32), np.array([str(i) for i in rec.image_ids]), target_key("twin"))
    denoised.save(tmp_path / "den.h5")
    _, den = RecordingResponses(RecordingFile(str(path)), denoised=str(tmp_path / "den.h5")).load()
    assert (den == 7.0).all()
    _, shuffled = ShuffledResponses(src, seed=0).load()
    np.testing.assert_allclose(np.sort(shuffled, 0), np.sort(responses, 0))


def test_neural_source_with_wrong_response_shape_is_reported():
    class Bad(NoiseResponses):
        def load(self):
            x, r = super().load()
            return x, r[:, :5]

    dm = RegularizedDataModule(Digits(), neural={"bad": Bad()})
    with pytest.raises(ValueError, match=r"neural.bad: responses: expected \[40, 12\]"):
        dm.setup()


def test_spectral_only_needs_no_targets_and_checkpoint_roundtrip_rebuilds_heads(tmp_path):
    torch.manual_seed(0)
    model = RegularizedClassifier(SmallResNet(1, [8, 16]), regularizers={"spec": SpectralRegularizer(["layer2"], tau=2)})
    _fit(model, RegularizedDataModule(Digits(), None, batch_size=16), steps=1)

    dm = RegularizedDataModule(Digits(), {"px": PixelTargets(1, 4)}, batch_size=16)
    model = RegularizedClassifier(SmallResNet(1, [8, 16]), num_neurons={"px": 16},
                                  regularizers={"d": DCCARegularizer(["layer2"], dim=3), "c": CotrainingRegularizer(["layer1"])})
    trainer = _fit(model, dm, steps=1)
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    back = RegularizedClassifier.load_from_checkpoint(
        ckpt, backbone=SmallResNet(1, [8, 16]),
        regularizers={"d": DCCARegularizer(["layer2"], dim=3), "c": CotrainingRegularizer(["layer1"])},
    )
    torch.testing.assert_close(back.regularizers["d"].neural_head.weight, model.regularizers["d"].neural_head.weight)
    torch.testing.assert_close(back.regularizers["c"].readout.mu, model.regularizers["c"].readout.mu)
