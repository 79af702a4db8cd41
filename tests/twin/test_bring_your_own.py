"""The README's "Bring your own data" commands, run as written: convert local files, fit a twin,
predict the recording's own test images, and compare the prediction file with `neuroreg test`;
predict_tier's arguments; oracle metrics of a tier without repeats."""

import contextlib
import functools
import io
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from neuroreg.cli import main, run_cli
from neuroreg.data.datamodules import NeuralDataModule
from neuroreg.data.recording import NeuralRecording
from neuroreg.data.recording_sources import SimulatedRecording
from neuroreg.data.simulated import V1Population
from neuroreg.targets.writer import TargetSetWriter
from neuroreg.twin.cores import Stacked2dCore
from neuroreg.twin.metrics import NoRepeatsWarning
from neuroreg.twin.module import TwinModule
from neuroreg.twin.transforms import StimulusTransform

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--trainer.max_epochs=2", "--model.init_args.core.init_args.hidden_channels=4",
         "--model.init_args.core.init_args.layers=1"]


def readme_blocks():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Bring your own data", 1)[1].split("\n## ", 1)[0]
    bash = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    python = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    return [line for line in bash.splitlines() if line.strip()], python


def user_files(folder: Path) -> NeuralRecording:
    """What the README describes: R.npy [images, neurons] one trial each, I.npy flattened [images, 256];
    R_test.npy [repeats, images, neurons], I_test.npy [images, 16, 16]."""
    rec = SimulatedRecording(V1Population(n_neurons=8, image_size=16, seed=0), n_train=60, n_validation=20, n_test=10,
                             test_repeats=4, cache_dir=str(folder / "sim")).load()
    held = rec.trial_tier == "test"
    np.save(folder / "R.npy", rec.responses[~held])
    np.save(folder / "I.npy", rec.images[rec.trial_image[~held], 0].reshape(int((~held).sum()), -1))
    index, reps = rec.repeats("test")
    np.save(folder / "R_test.npy", reps.transpose(1, 0, 2))
    np.save(folder / "I_test.npy", rec.images[index, 0])
    return rec


def test_readme_bring_your_own_data(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    sim = user_files(tmp_path)
    (convert, fit, predict), snippet = readme_blocks()
    convert, fit = shlex.split(convert), shlex.split(fit)
    assert convert[:3] == ["neuroreg", "data", "convert"] and fit[1] == "fit" and predict.startswith("neuroreg predict ")
    assert main(convert[1:]) == 0
    out = capsys.readouterr().out
    assert "test           10 images       40 trials" in out and "split validation=0.25 (seed 0)" in out
    rec = NeuralRecording.load("rec.h5")
    np.testing.assert_array_equal(rec.repeats("test")[1], sim.repeats("test")[1])

    def local(cmd):  # the config path from the repository root; a smaller twin, for speed
        return [a.replace("experiments/", f"{ROOT}/experiments/") for a in cmd[1:]] + SMALL

    assert main(local(fit)) == 0
    (ckpt,) = list(tmp_path.rglob("epoch*.ckpt"))
    assert "<best .ckpt>" in predict
    predict = shlex.split(predict.replace("<best .ckpt>", shlex.quote(str(ckpt))))
    cli = run_cli(local(predict))
    (writer,) = [c for c in cli.trainer.callbacks if isinstance(c, TargetSetWriter)]
    assert writer.path.resolve().parent == tmp_path / "data" / "targets" and not writer.reused
    dm = cli.datamodule
    assert isinstance(dm, NeuralDataModule) and dm.predict_tier == "test"
    index = rec.repeats("test")[0]
    assert dm.predict_keys().tolist() == [str(i) for i in rec.image_ids[index]]

    # the README's comparison, with the file just written
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(snippet.replace("data/targets/twin_<key>.h5", str(writer.path)), {})
    summary = eval(printed.getvalue(), {"nan": float("nan")})
    test = run_cli(["test", *local(predict)[1:]]).trainer.callback_metrics  # same model and data, `neuroreg test`
    for name in ("correlation", "average_correlation", "oracle_correlation", "fev", "fraction_oracle"):
        assert summary[name] == pytest.approx(float(test[f"test/{name}"]), abs=1e-4), name
    assert float(test["test/oracle_images"]) == 10


def test_predict_tier_arguments(tmp_path):
    src = SimulatedRecording(V1Population(n_neurons=3, image_size=8, seed=0), n_train=10, n_validation=4, n_test=2,
                             cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="'predict_tier': expected one of \\['train', 'validation', 'test', 'final_test'\\]"):
        NeuralDataModule(src, predict_tier="held_out")
    with pytest.raises(ValueError, match="expected one image source to predict, found both"):
        NeuralDataModule(src, predict_tier="test", predict_images=object())
    with pytest.raises(ValueError, match="predict_tier=test"):
        NeuralDataModule(src).predict_keys()
    dm = NeuralDataModule({"a": src, "b": src}, predict_tier="validation", eval_batch_size=3)
    rec = dm.recordings["a"]
    ids = rec.image_ids[np.unique(rec.trial_image[rec.trial_tier == "validation"])]
    assert dm.predict_keys().tolist() == [f"a/{i}" for i in ids] + [f"b/{i}" for i in ids]
    batches = list(dm.predict_dataloader())
    assert [b["index"].tolist() for b in batches] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    first = rec.images[np.unique(rec.trial_image[rec.trial_tier == "validation"])[0]].astype(np.float32) / 255
    np.testing.assert_allclose(batches[0]["image"][0].numpy(), first)
    assert dm.predict_fingerprint() != NeuralDataModule({"a": src, "b": src}, predict_tier="test").predict_fingerprint()
    with pytest.raises(Exception, match="expected a 'final_test' tier to predict"):
        NeuralDataModule(src, predict_tier="final_test").predict_keys()


def test_no_repeats_is_said_and_recorded(tmp_path):
    src = SimulatedRecording(V1Population(n_neurons=4, image_size=16, seed=0), n_train=32, n_validation=8, n_test=8,
                             test_repeats=3, cache_dir=str(tmp_path))  # validation: 1 trial per image; test: 3
    dm = NeuralDataModule(src, batch_size=16)
    twin = TwinModule(core=Stacked2dCore(1, 4, input_kernel=5, hidden_kernel=3, layers=1), transform=StimulusTransform(size=(16, 16)),
                      num_neurons=4, optimizer=functools.partial(torch.optim.Adam, lr=0.01))
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, num_sanity_val_steps=0)
    with pytest.warns(NoRepeatsWarning, match="val metrics of dataset 'default': no image of the 8 evaluated has >= 2"):
        trainer.fit(twin, dm)
    assert float(trainer.callback_metrics["val/oracle_images"]) == 0 and "val/fev" not in trainer.callback_metrics
    assert list(twin.metric_notes) == ["val/default"] and "fraction_oracle" in twin.metric_notes["val/default"]
    trainer.test(twin, dm)
    assert float(trainer.callback_metrics["test/oracle_images"]) == 8 and "test/fev" in trainer.callback_metrics
    assert "test/default" not in twin.metric_notes
