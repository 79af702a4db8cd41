"""TwinModule + NeuralDataModule: fitting, metrics, several recordings, bad input."""

import functools
import warnings

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from neuroreg.data.datamodules import NeuralDataModule
from neuroreg.data.recording import RecordingError
from neuroreg.data.recording_sources import RecordingFile, SimulatedRecording
from neuroreg.data.sampling import GroupedBatchSampler
from neuroreg.data.simulated import V1Population
from neuroreg.twin.cores import Stacked2dCore
from neuroreg.twin.losses import GaussianLoss, PoissonLoss
from neuroreg.twin.module import TwinModule
from neuroreg.twin.readouts import FactorizedReadout, GaussianReadout
from neuroreg.twin.transforms import StimulusTransform


def source(tmp_path, n_neurons=6, size=16, seed=0, **kw):
    pop = V1Population(n_neurons=n_neurons, image_size=size, seed=seed)
    args = {"n_train": 48, "n_validation": 16, "n_test": 8, "test_repeats": 3, "cache_dir": str(tmp_path / "rec")}
    args.update(kw)
    return SimulatedRecording(pop, **args)


def twin(num_neurons, size=16, readout=GaussianReadout, loss=None):
    return TwinModule(
        core=Stacked2dCore(1, 4, input_kernel=5, hidden_kernel=3, layers=2, gamma_input=0.1, gamma_hidden=0.01),
        readout=readout, loss=loss, transform=StimulusTransform(size=(size, size)), num_neurons=num_neurons,
        optimizer=functools.partial(torch.optim.Adam, lr=0.01),
    )


def trainer(**kw):
    args = {"max_epochs": 1, "accelerator": "cpu", "logger": False, "enable_progress_bar": False, "enable_model_summary": False,
                "enable_checkpointing": False}
    args.update(kw)
    return pl.Trainer(**args)


def test_data_module_batches_and_cache(tmp_path):
    src = source(tmp_path)
    dm = NeuralDataModule(src, batch_size=10, eval_batch_size=5)
    assert dm.num_neurons == 6
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (10, 1, 16, 16) and batch["response"].shape == (10, 6)
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0 and batch["dataset"][0] == "default"
    test = next(iter(dm.test_dataloader()))
    assert test["repeats"].shape == (5, 3, 6)
    assert len(list(dm.train_dataloader())) == 4  # 48 trials, batches of 10, last (8) dropped
    assert src.path.exists()
    again = source(tmp_path)
    assert again.fingerprint() == src.fingerprint() and again.load().n_trials == src.load().n_trials
    assert source(tmp_path, seed=1).fingerprint() != src.fingerprint()


def test_grouped_batch_sampler_never_mixes_parts():
    s = GroupedBatchSampler([5, 7], batch_size=3, shuffle=True, drop_last=False)
    batches = list(s)
    assert len(batches) == len(s) == 5
    assert sorted(i for b in batches for i in b) == list(range(12))
    assert all(max(b) < 5 or min(b) >= 5 for b in batches)


def test_fit_logs_metrics_and_test_reports_them(tmp_path):
    dm = NeuralDataModule(source(tmp_path), batch_size=16)
    model = twin(dm.num_neurons)
    t = trainer(max_epochs=2)
    t.fit(model, datamodule=dm)
    assert {"val/correlation", "val/average_correlation", "train/loss/loss", "train/core/regularizer"} <= set(t.callback_metrics)
    assert bool(model.transform.fitted) and 0 < model.transform.mean < 1
    results = t.test(model, datamodule=dm, verbose=False)[0]
    for key in ("test/correlation", "test/oracle_correlation", "test/fev", "test/fraction_oracle"):
        assert np.isfinite(results[key]), key
    out = model(torch.rand(3, 3, 40, 40))  # RGB of another size: mapped by the transform
    assert out.shape == (3, 6) and (out > 0).all()


def test_bias_initialised_from_mean_response(tmp_path):
    dm = NeuralDataModule(source(tmp_path), batch_size=16)
    model = twin(dm.num_neurons)
    t = trainer(max_epochs=0)
    t.fit(model, datamodule=dm)
    expected = PoissonLoss.nonlinearity(model.readout["default"].bias.detach())
    np.testing.assert_allclose(expected, np.maximum(dm.mean_response("default"), 1e-3), rtol=1e-4)


def test_early_stopping_on_validation_correlation(tmp_path):
    dm = NeuralDataModule(source(tmp_path), batch_size=16)
    stop = pl.callbacks.EarlyStopping("val/correlation", mode="max", patience=1, min_delta=10.0)
    t = trainer(max_epochs=20, callbacks=[stop])
    t.fit(twin(dm.num_neurons), datamodule=dm)
    assert t.current_epoch < 20 and stop.stopped_epoch > 0


def test_two_recordings_share_one_core(tmp_path):
    dm = NeuralDataModule({"mouse": source(tmp_path, 6), "monkey": source(tmp_path, 4, seed=3)}, batch_size=16)
    assert dm.num_neurons == {"mouse": 6, "monkey": 4}
    model = twin(dm.num_neurons, readout=functools.partial(FactorizedReadout, gamma_spatial=0.01))
    t = trainer()
    t.fit(model, datamodule=dm)
    assert {"val/mouse/correlation", "val/monkey/correlation", "val/correlation"} <= set(t.callback_metrics)
    assert model(torch.rand(2, 1, 16, 16)).shape == (2, 10)
    assert model(torch.rand(2, 1, 16, 16), "monkey").shape == (2, 4)


def save(rec, path):
    rec.save(path)
    return str(path)


def test_recording_without_validation_tier(tmp_path):
    rec = source(tmp_path, n_validation=0).load()
    path = save(rec, tmp_path / "noval.h5")
    with pytest.raises(RecordingError, match=r"noval\.h5: field 'trial_tier': NeuralDataModule needs a 'validation' tier.*found tiers \['train', 'test'\]"):
        _ = NeuralDataModule(path).num_neurons


def test_all_nan_neurons_dropped_with_warning_and_finite_loss(tmp_path):
    rec = source(tmp_path).load()
    rec.responses[:, [1, 4]] = np.nan
    rec.responses[::3, 0] = np.nan  # partly recorded: kept
    path = save(rec, tmp_path / "nan.h5")
    dm = NeuralDataModule(RecordingFile(path), batch_size=16)
    with pytest.warns(UserWarning, match=r"nan\.h5: dropping 2 of 6 neurons whose responses are NaN on every training trial"):
        assert dm.num_neurons == 4
    model = twin(4)
    t = trainer()
    t.fit(model, datamodule=dm)
    assert torch.isfinite(t.callback_metrics["train/loss/loss"])


def test_image_resolution_mismatch(tmp_path):
    dm = NeuralDataModule(source(tmp_path), batch_size=16)
    with pytest.raises(ValueError, match=r"sim_mouse_v1_\w+\.h5: field 'images': expected resolution 20x20 .*found 16x16"):
        trainer().fit(twin(6, size=20), datamodule=dm)


def test_poisson_on_negative_responses_is_refused(tmp_path):
    rec = source(tmp_path).load()
    rec.responses -= 1.0
    rec.response_unit = "dF/F"
    path = save(rec, tmp_path / "dff.h5")
    dm = NeuralDataModule(path, batch_size=16)
    with pytest.raises(ValueError, match=r"dff\.h5: 'responses': PoissonLoss expects non-negative.*GaussianLoss"):
        trainer().fit(twin(6), datamodule=dm)
    trainer().fit(twin(6, loss=GaussianLoss()), datamodule=NeuralDataModule(path, batch_size=16))


def test_checkpoint_with_other_neuron_count_is_refused(tmp_path):
    dm = NeuralDataModule(source(tmp_path), batch_size=16)
    t = trainer()
    t.fit(twin(6), datamodule=dm)
    ckpt = tmp_path / "six.ckpt"
    t.save_checkpoint(ckpt)
    other = NeuralDataModule(source(tmp_path, n_neurons=5), batch_size=16)
    with pytest.raises(ValueError, match=r"six\.ckpt: field 'state_dict.readout.default.bias': the recording has 5 neurons.*predicts 6"):
        trainer().test(twin(5), datamodule=other, ckpt_path=str(ckpt), verbose=False)


def test_nan_targets_in_loss_have_no_gradient():
    model = twin(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pred = model(torch.rand(4, 1, 16, 16), "default")
    target = torch.full((4, 3), float("nan"))
    target[0, 0] = 1.0
    loss = model.loss(pred, target)["loss"]
    loss.backward()
    assert torch.isfinite(loss)
