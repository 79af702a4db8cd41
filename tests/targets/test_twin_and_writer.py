"""Streaming TargetSets: the stream itself, `neuroreg predict` with the writer, TwinTargets."""

import os
import random
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from neuroreg.cli import run_cli
from neuroreg.data.images import Digits
from neuroreg.targets.format import TargetSet, TargetSetError, TargetSetStream
from neuroreg.targets.twin import TwinTargets
from neuroreg.targets.writer import TargetSetWriter

ROOT = Path(__file__).resolve().parents[2]
TWIN = ROOT / "experiments" / "twin" / "sim_mouse_v1.yaml"
SMALL = [
    "--data.init_args.recording.init_args.population.init_args.n_neurons=7",
    "--data.init_args.recording.init_args.n_train=40",
    "--data.init_args.recording.init_args.n_validation=12",
    "--data.init_args.recording.init_args.n_test=6",
    "--model.init_args.core.init_args.hidden_channels=4",
    "--model.init_args.core.init_args.layers=1",
]


def test_stream_writes_blocks_and_commits(tmp_path):
    keys = np.array([f"k{i}" for i in range(10)])
    rows = np.random.default_rng(0).random((10, 3)).astype(np.float32)
    with TargetSetStream(tmp_path / "t.h5", keys, 3, "abc", source="test", dtype="float16", chunk_bytes=24) as out:
        for start in range(0, 10, 4):
            out.write(start, rows[start : start + 4])
        assert not (tmp_path / "t.h5").exists()  # only the temporary file until commit
    ts = TargetSet.load(tmp_path / "t.h5", expected_key="abc")
    assert ts.targets.dtype == np.float16 and ts.image_keys.tolist() == keys.tolist()
    np.testing.assert_allclose(ts.targets, rows, atol=1e-3)
    with h5py.File(tmp_path / "t.h5") as f:
        assert f["targets"].chunks == (4, 3)  # 24 bytes / (3 neurons * 2 bytes) = 4 rows per chunk


def test_stream_refuses_partial_and_bad_blocks(tmp_path):
    keys = np.array(["a", "b", "c"])
    partial = r"expected all 3 rows written, found 1 missing \(e.g. rows \[2\]\)"
    with pytest.raises(TargetSetError, match=partial), TargetSetStream(tmp_path / "p.h5", keys, 2, "k") as out:
        out.write(0, np.zeros((2, 2), np.float32))
    outside = r"expected a block \[b, 2\] inside rows 0..3, found shape \(2, 2\) at row 2"
    with pytest.raises(TargetSetError, match=outside), TargetSetStream(tmp_path / "p.h5", keys, 2, "k") as out:
        out.write(2, np.zeros((2, 2), np.float32))
    with pytest.raises(RuntimeError), TargetSetStream(tmp_path / "p.h5", keys, 2, "k"):
        raise RuntimeError("interrupted")
    assert os.listdir(tmp_path) == []  # no partial or temporary file left


def fit_small(tmp_path):
    run_cli(["fit", "--config", str(TWIN), *SMALL, "--trainer.max_epochs=1", f"--trainer.default_root_dir={tmp_path}",
             f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}"])
    (ckpt,) = [p for p in tmp_path.rglob("*.ckpt") if p.name != "last.ckpt"]  # the epoch checkpoint
    return ckpt


def predict(ckpt, out_dir, extra=()):
    return run_cli(["predict", "--config", str(TWIN), *SMALL, "--ckpt_path", str(ckpt),
                    "--data.init_args.predict_images=neuroreg.data.images.Digits", "--data.init_args.predict_splits=[validation, test]",
                    "--trainer.callbacks+=neuroreg.targets.writer.TargetSetWriter",
                    f"--trainer.callbacks.init_args.output_dir={out_dir}", *extra])


def test_predict_writes_reuses_and_refuses(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ckpt = fit_small(tmp_path)
    cli = predict(ckpt, tmp_path / "targets", ["--trainer.callbacks.init_args.dtype=float16"])
    (writer,) = [c for c in cli.trainer.callbacks if isinstance(c, TargetSetWriter)]
    assert not writer.reused and writer.path.exists()
    ts = TargetSet.load(writer.path)
    digits = Digits()
    keys = np.concatenate([digits.split("validation").keys, digits.split("test").keys])
    assert ts.targets.shape == (len(keys), 7) and ts.targets.dtype == np.float16
    assert ts.image_keys.tolist() == keys.tolist()
    model = cli.model.eval()
    with torch.no_grad():
        expected = model(torch.from_numpy(digits.split("test").images_float()[:5])).numpy()
    np.testing.assert_allclose(ts.align(keys[-len(digits.split("test").keys):][:5]), expected, rtol=2e-3, atol=2e-3)

    mtime = writer.path.stat().st_mtime_ns
    calls = []
    monkeypatch.setattr(type(cli.model), "predict_step", lambda self, *a, **k: calls.append(1))
    again = predict(ckpt, tmp_path / "targets")
    (writer2,) = [c for c in again.trainer.callbacks if isinstance(c, TargetSetWriter)]
    assert writer2.reused and writer2.path == writer.path and writer.path.stat().st_mtime_ns == mtime and not calls
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)

    with h5py.File(writer.path, "a") as f:  # same name, other content key: never silently used
        f.attrs["key"] = "0" * 64
    with pytest.raises(TargetSetError, match="attribute 'key': expected [0-9a-f]{64}, found 0{64}"):
        predict(ckpt, tmp_path / "targets")


def test_twin_targets_fit_once_then_reuse(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = TwinTargets(config=str(TWIN), overrides=[*SMALL, "--trainer.max_epochs=1"], cache_dir=str(tmp_path / "cache"))
    assert source.num_neurons == 7
    state = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    state = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    ts = source.target_set(Digits())
    assert (random.random(), np.random.rand(), torch.rand(1)) == state  # the fit left the global RNGs alone
    assert ts.targets.shape == (len(Digits().split("train")), 7) and np.isfinite(ts.targets).all()
    (ckpt,) = list((tmp_path / "cache").glob("twin_*.ckpt"))
    again = TwinTargets(config=str(TWIN), overrides=[*SMALL, "--trainer.max_epochs=1"], cache_dir=str(tmp_path / "cache"))
    monkeypatch.setattr("pytorch_lightning.Trainer.fit", lambda *a, **k: pytest.fail("refitted a cached twin"))
    ts2 = again.target_set(Digits())
    assert ts2.key == ts.key
    from_ckpt = TwinTargets(checkpoint=str(ckpt), cache_dir=str(tmp_path / "cache"))
    assert from_ckpt.num_neurons == 7 and from_ckpt.target_set(Digits()).key == ts.key
    other = TwinTargets(config=str(TWIN), overrides=[*SMALL, "--trainer.max_epochs=2"], cache_dir=str(tmp_path / "cache"))
    assert other.num_neurons == 7 and other._fit_key != again._fit_key


def test_twin_targets_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="exactly one of 'config' and 'checkpoint'"):
        TwinTargets()
    with pytest.raises(FileNotFoundError, match="'checkpoint': file not found: .*none.ckpt"):
        TwinTargets(checkpoint=str(tmp_path / "none.ckpt"))
