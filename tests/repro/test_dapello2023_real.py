"""The dapello2023 recipe's real scale: RSA toward the macaque IT RDM, its controls and its
evaluation (every arm's config is also fitted by tests/test_experiments.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _rdmdata import it92_environment, require_mat
from pytorch_lightning import LightningDataModule, LightningModule
from scipy.stats import spearmanr

from neuroreg.cli import NeuroregCLI
from neuroreg.data.readers.kriegeskorte2008 import read_kriegeskorte2008
from neuroreg.evaluation.suite import check_brain_layers
from neuroreg.repro.recipe import load_recipe
from neuroreg.repro.runner import plan
from neuroreg.targets.rdm import ManifestRDM, PixelRDM, RDMSource, ShuffledRDM, pixel_rdm

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT / "experiments" / "dapello2023" / "real"


def built(arm: str):
    cli = NeuroregCLI(LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                      args=["--config", str(REAL / f"{arm}.yaml")], run=False, auto_configure_optimizers=False)
    return cli.model, cli.datamodule


def test_real_scale_arms_controls_and_evaluation(tmp_path):
    recipe = load_recipe("dapello2023")
    scale = recipe.scale("real")
    assert [a.label for a in scale.arms] == ["baseline", "rsa", "shuffled", "pixels"] and scale.baseline == "baseline"
    assert scale.arm("rsa").controls == ("shuffled", "pixels")
    budget = scale.eval.make_budget()
    assert budget.rsa_rdm == "kriegeskorte2008-it92" and budget.rsa_layers == ("layer2", "layer3", "layer4")
    assert "RSA toward the IT RDM" in recipe.path.read_text()  # the substitution for CKA is stated
    stages = plan(recipe, scale, [0, 1], tmp_path / "out", progress=False)
    assert sum(s.kind == "fit" for s in stages) == 8 and sum(s.kind == "eval" for s in stages) == 8


def test_real_arms_pull_toward_it_its_shuffle_or_its_pixels(tmp_path, monkeypatch):
    it92_environment(monkeypatch, tmp_path)
    monkeypatch.chdir(tmp_path)
    it = read_kriegeskorte2008(require_mat())
    sources = {}
    for arm in ("baseline", "rsa", "shuffled", "pixels"):
        model, dm = built(arm)
        check_brain_layers(model, ("layer2", "layer3", "layer4"))  # the evaluation's RSA layers exist
        if arm == "baseline":
            assert not dm.neural and not model.regularizers
            continue
        reg = model.regularizers["rsa"]
        assert (reg.layers, reg.metric, reg.source) == (["layer4"], "correlation", "it_rdm")
        src = dm.neural["it_rdm"]
        assert isinstance(src, RDMSource)
        sources[arm] = src
    assert isinstance(sources["rsa"], ManifestRDM) and isinstance(sources["shuffled"], ShuffledRDM)
    assert isinstance(sources["pixels"], PixelRDM)
    target = sources["rsa"].load_rdm()
    np.testing.assert_array_equal(target.rdm, it.rdm)  # converted from the manifest: the IT RDM itself
    assert list(Path("data/rdms").glob("kriegeskorte2008-it92_*.h5"))
    shuffled = sources["shuffled"].load_rdm()
    np.testing.assert_allclose(np.sort(shuffled.rdm), np.sort(it.rdm))
    assert abs(spearmanr(shuffled.rdm, it.rdm).statistic) < 0.2
    pixels = sources["pixels"].load_rdm()
    np.testing.assert_allclose(pixels.rdm, pixel_rdm(it, 32))
    assert spearmanr(pixels.rdm, it.rdm).statistic == pytest.approx(0.146, abs=0.01)  # pixels explain IT poorly
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    neural = batch[0]["neural"]["it_rdm"] if isinstance(batch, tuple) else batch["neural"]["it_rdm"]
    assert neural["image"].shape == (32, 1, 32, 32) and neural["dissimilarity"].shape == (32, 32)
