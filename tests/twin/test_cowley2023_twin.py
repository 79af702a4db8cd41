"""The Cowley 2023 V4 twin configs on the real sessions, cut to a tiny fit."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from neuroreg.cli import run_cli
from neuroreg.data.readers.cowley2023 import read_cowley2023, session_files
from neuroreg.data.recording import NeuralRecording

ROOT = Path(__file__).resolve().parents[2]
MULTI = ROOT / "experiments" / "twin" / "cowley2023_v4.yaml"
SINGLE = ROOT / "experiments" / "twin" / "cowley2023_v4_single.yaml"


def _data_dir() -> Path | None:
    env = os.environ.get("NEUROREG_TEST_DATA")
    for base in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data"]:
        if (base / "cowley2023_v4" / "data_V4_responses").is_dir():
            return base / "cowley2023_v4" / "data_V4_responses"
    return None


DATA = _data_dir()
real = pytest.mark.skipif(DATA is None, reason="Cowley 2023 files not found (set NEUROREG_TEST_DATA to the shared data folder)")


def _h5(tmp_path: Path, session: str) -> Path:
    files = session_files(DATA, session)
    rec = read_cowley2023(
        files["images"],
        files["responses"],
        files["raw_responses"] if files["raw_responses"].exists() else None,
        session=session,
        pixels_per_degree=20.0,
    )
    return rec.save(tmp_path / f"{session}.h5")


def _with_recordings(config: Path, recording, out: Path) -> Path:
    """``config`` with its manifest recordings replaced by local ``.h5`` files (a copy in ``out``)."""
    cfg = yaml.safe_load(config.read_text())
    cfg["data"]["init_args"]["recording"] = recording
    path = out / config.name
    path.write_text(yaml.safe_dump(cfg))
    return path


def _median_r(pred: np.ndarray, target: np.ndarray) -> float:
    p, t = pred - pred.mean(0), target - target.mean(0)
    return float(np.nanmedian((p * t).sum(0) / np.sqrt((p * p).sum(0) * (t * t).sum(0))))


def test_configs_share_one_model_and_list_the_sessions():
    multi = yaml.safe_load(MULTI.read_text())
    single = yaml.safe_load(SINGLE.read_text())
    recs = multi["data"]["init_args"]["recording"]
    assert len(recs) == 9 and all(v["class_path"].endswith("ManifestRecording") for v in recs.values())
    assert {v["init_args"]["manifest"] for v in recs.values()} == {f"cowley2023-v4-{k[1:]}" for k in recs}
    assert single["data"]["init_args"]["recording"]["init_args"]["manifest"] == "cowley2023-v4-210325"
    assert multi["model"] == single["model"]
    assert multi["model"]["init_args"]["loss"]["class_path"].endswith("PoissonLoss")


@real
@pytest.mark.slow
def test_multi_session_twin_learns_held_out_images(tmp_path, monkeypatch):
    """Two sessions (one trial-level, one averaged), a few dozen steps: held-out r above a shuffled null."""
    paths = {f"s{s}": str(_h5(tmp_path, s)) for s in ("190925", "210325")}
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    cli = run_cli([
        "fit", "--config", str(_with_recordings(MULTI, paths, tmp_path)),
        "--trainer.max_epochs=1", "--trainer.limit_train_batches=15", "--trainer.limit_val_batches=0", "--trainer.callbacks=null",
        "--trainer.enable_checkpointing=false", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
    ])
    model = cli.model.eval()
    assert set(model.datasets) == set(paths) and model.num_neurons == {"s190925": 36, "s210325": 50}
    rng = np.random.default_rng(0)
    for name, path in paths.items():
        rec = NeuralRecording.load(path)
        index, mean = rec.mean_per_image("test")
        with torch.no_grad():
            pred = model(torch.as_tensor(rec.images_float()[index]), name).numpy()
        r = _median_r(pred, mean)
        r_null = _median_r(pred, mean[rng.permutation(len(mean))])
        print(name, round(r, 3), round(r_null, 3))
        assert r > 0.1 and r > r_null + 0.1, (name, r, r_null)


@pytest.mark.slow
def test_multi_session_config_through_manifests(tmp_path, monkeypatch):
    """The config as shipped: recordings fetched through the manifests (a local mirror) and converted."""
    import _realdata as realdata

    if realdata.shared_data_dir() is None:
        pytest.skip("no copy of the real data")
    with realdata.data_mirror() as mirror:
        monkeypatch.setenv("NEUROREG_DATA_MIRROR", mirror.url)
        monkeypatch.setenv("NEUROREG_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.setenv("NEUROREG_MANIFEST_DIR", str(ROOT / "data_manifests"))
        monkeypatch.chdir(tmp_path)
        cli = run_cli([
            "fit", "--config", str(SINGLE),
            "--trainer.max_epochs=1", "--trainer.limit_train_batches=5", "--trainer.limit_val_batches=1",
            "--trainer.callbacks=null", "--trainer.enable_checkpointing=false", "--trainer.logger=false",
        ])
    assert cli.trainer.state.finished
    assert cli.datamodule.recordings["default"].area == "V4"
