"""The ``real`` scale of the recipes: the brain-similarity recording of a recipe's ``eval``
(a recording file or a data manifest), the report's brain-similarity rows (predictivity
with its ceiling, RSA against an RDM) and claims, and the neural-batch pixel control."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from _realdata import real_data_dir

from neuroreg.repro.recipe import EvalSpec, ManifestRef, RecipeError, load_recipe

ROOT = Path(__file__).resolve().parents[2]

BASE = """
seed_everything: 0
trainer: {accelerator: cpu, devices: 1, max_epochs: 1, limit_train_batches: 2, limit_val_batches: 1}
model:
  class_path: neuroreg.models.classifier.RegularizedClassifier
  init_args:
    backbone:
      class_path: neuroreg.models.backbones.SmallResNet
      init_args: {in_channels: 1, widths: [8, 16]}
    mean: [0.3]
    std: [0.32]
data:
  class_path: neuroreg.data.datamodules.RegularizedDataModule
  init_args:
    images:
      class_path: neuroreg.data.images.Digits
      init_args: {size: 16, split_seed: 0}
    batch_size: 64
"""


def _recipe(tmp_path: Path, eval_section: dict) -> Path:
    d = tmp_path / "tiny"
    d.mkdir(parents=True, exist_ok=True)
    (d / "baseline.yaml").write_text(BASE)
    raw = {"title": "tiny", "reference": "none",
           "scales": {"real": {"description": "t", "arms": {"baseline": "baseline.yaml"}, "baseline": "baseline", "eval": eval_section}}}
    (d / "recipe.yaml").write_text(yaml.safe_dump(raw))
    return d


def test_eval_references_parse(tmp_path):
    d = _recipe(tmp_path, {"recording": {"manifest": "cadena2019", "options": {"image_size": 32}}, "layers": ["layer1"]})
    spec = load_recipe(d).scale("real").eval
    assert spec.recording == ManifestRef("cadena2019", {"image_size": 32})
    assert spec.describe()["recording"] == {"manifest": "cadena2019", "options": {"image_size": 32}}
    # a path stays a path (relative to the recipe folder), as before, and describes as before
    d = _recipe(tmp_path, {"recording": "held.h5", "layers": ["layer1"]})
    spec = load_recipe(d).scale("real").eval
    assert spec.recording == (d / "held.h5").resolve() and spec.load_recording() == spec.recording
    assert spec.describe() == {"suite": "quick", "budget": {}, "layers": ["layer1"], "data": None, "recording": str(spec.recording)}


@pytest.mark.parametrize("eval_section, match", [
    ({"recording": {"manifest": "no-such-set"}, "layers": ["layer1"]}, r"field 'scales.real.eval.recording.manifest': .*no data set named 'no-such-set'"),
    ({"recording": {"manifest": "cadena2019", "options": [1]}, "layers": ["layer1"]}, r"field 'scales.real.eval.recording.options': expected a mapping"),
    ({"recording": {"manifest": "cadena2019", "tier": "test"}, "layers": ["layer1"]}, r"field 'scales.real.eval.recording.tier': expected one of \['manifest', 'options'\]"),
    ({"recording": {"options": {}}, "layers": ["layer1"]}, r"field 'scales.real.eval.recording.manifest': expected a data manifest name, found None"),
    ({"recording": 3, "layers": ["layer1"]}, r"field 'scales.real.eval.recording': expected a file path .* or \{manifest"),
    ({"layers": ["layer1"]}, r"field 'scales.real.eval.layers': expected recording and layers together"),
    ({"recording": {"manifest": "cadena2019"}}, r"field 'scales.real.eval.layers': expected recording and layers together"),
])
def test_eval_reference_errors_name_the_field(tmp_path, eval_section, match):
    d = _recipe(tmp_path, eval_section)
    with pytest.raises(RecipeError, match=match):
        load_recipe(d)


def test_eval_keys_follow_the_references(tmp_path):
    from neuroreg.repro.runner import plan

    keys = {}
    for name, section in {"none": {}, "path": {"recording": "held.h5", "layers": ["layer1"]},
                          "manifest": {"recording": {"manifest": "cadena2019"}, "layers": ["layer1"]},
                          "options": {"recording": {"manifest": "cadena2019", "options": {"image_size": 32}}, "layers": ["layer1"]}}.items():
        d = _recipe(tmp_path / name, section)
        recipe = load_recipe(d)
        stages = plan(recipe, recipe.scale("real"), [0], tmp_path / name / "out", progress=False)
        keys[name] = next(s.key for s in stages if s.kind == "eval")
        fit_key = next(s.key for s in stages if s.kind == "fit")
        keys.setdefault("fits", set()).add(fit_key)
    assert len(keys.pop("fits")) == 1  # the fit does not depend on how it is evaluated
    assert len(set(keys.values())) == 4


def _brain_section(score: float, rsa: float) -> dict:
    return {"layers": ["layer1", "layer2"], "tier": "test", "n_images": 128, "n_neurons": 50,
            "ridge": {"score": [score, score + 0.1], "raw_median_r": [score / 2, score / 2], "ceiling_median": 0.77},
            "pls": {"score": [None, score], "raw_median_r": [0.1, 0.1], "ceiling_median": 0.77},
            "rsa": [rsa, rsa], "cka": [0.3, 0.3]}


def test_report_brain_columns_and_claims(tmp_path):
    from neuroreg.repro.report import brain_table, claims_paragraph, summarize, tables

    # predictivity of layer1 per (arm, seed); the RDM RSA of layer2
    ridge = {("baseline", 0): 0.30, ("baseline", 1): 0.32, ("baseline", 2): 0.28,
             ("sim", 0): 0.40, ("sim", 1): 0.43, ("sim", 2): 0.41,
             ("shuffled", 0): 0.39, ("shuffled", 1): 0.45, ("shuffled", 2): 0.37}
    it = {("baseline", s): 0.10 + 0.01 * s for s in range(3)} | {("sim", s): 0.05 + 0.01 * s for s in range(3)} | {
        ("shuffled", s): 0.20 - 0.03 * s for s in range(3)}
    stages = []
    for (arm, seed), score in ridge.items():
        folder = tmp_path / f"{arm}{seed}"
        folder.mkdir()
        rdm = {"rdm": "data/rdms/it.h5", "species": "macaque", "area": "IT", "layers": ["layer1", "layer2"], "score": [None, it[(arm, seed)]], "n_images": 92,
               "method": "spearman", "ci_low": [None, 0.0], "ci_high": [None, 0.3], "ceiling": None,
               "ceiling_reason": "the source holds the RDM only, no repeated measurements"}
        report = {"clean_accuracy": 0.9, "brain": _brain_section(score, 0.2), "rsa_rdm": rdm, "complete": True}
        (folder / "report.json").write_text(json.dumps(report))
        (folder / "done.json").write_text(json.dumps({"report": str(folder / "report.json")}))
        stages.append({"kind": "eval", "name": f"eval {arm} seed {seed}", "folder": str(folder), "arm": arm, "seed": seed})
    arms = {"baseline": {"baseline": None, "controls": []}, "sim": {"baseline": "baseline", "controls": ["shuffled"]},
            "shuffled": {"baseline": "baseline", "controls": []}}
    plan_json = {"recipe": "t", "title": "T", "scale": "real", "baseline": "baseline", "arms": arms, "seeds": [0, 1, 2],
                 "eval": {"recording": {"manifest": "cowley2023-v4-210325", "options": {}}, "layers": ["layer1", "layer2"],
                          "budget": {"rsa_rdm": "kriegeskorte2008-it92", "rsa_layers": ["layer1", "layer2"]}},
                 "stages": stages}
    summary = summarize(plan_json)
    m = summary["arms"]["sim"]["metrics"]
    assert m["eval/brain/layer1/ridge"]["mean"] == pytest.approx(np.mean([0.40, 0.43, 0.41]))
    assert m["eval/rsa_rdm=layer2"]["values"] == pytest.approx([0.05, 0.06, 0.07])
    assert "eval/rsa_rdm=layer1" not in m  # a missing score is left out, not averaged
    assert summary["brain"]["recording"] == {"name": "cowley2023-v4-210325", "tier": "test", "n_images": 128, "n_neurons": 50,
                                             "ceiling_median": 0.77}
    assert summary["brain"]["rdm"]["noise_ceiling"] is None
    table = brain_table(summary)
    assert "median ceiling 0.770" in table and "`cowley2023-v4-210325` (tier test: 128 images, 50 neurons)" in table
    assert "no noise ceiling: the source holds the RDM only" in table
    assert "| predictivity layer1 (ridge, / ceiling) | 0.300 ± " in table and "| RSA vs RDM layer2 |" in table
    md = tables(summary)
    assert "## Brain similarity" in md and sum(line.startswith("| RSA vs RDM layer2 |") for line in md.splitlines()) == 1  # its own table only
    assert "spearman correlation of the layer's RDM with the macaque IT RDM `kriegeskorte2008-it92` over its 92 images" in table
    assert table.index("| predictivity layer1") < table.index("| RSA vs recording layer1") < table.index("| RSA vs RDM layer2")
    rows = {(r["arm"], r["versus"], r["metric"]): r for r in summary["claims"]["rows"]}
    up = rows[("sim", "baseline", "eval/brain/layer1/ridge")]
    d = np.array([0.10, 0.11, 0.13])
    assert up["mean"] == pytest.approx(d.mean()) and up["ci95"] == pytest.approx(4.30265273 * d.std(ddof=1) / np.sqrt(3), rel=1e-6)
    assert up["verdict"] == "gain" and up["label"] == "predictivity layer1 (ridge, / ceiling)"
    assert rows[("sim", "baseline", "eval/rsa_rdm=layer2")]["verdict"] == "loss"  # -0.05 every seed
    assert rows[("sim", "shuffled", "eval/brain/layer1/ridge")]["verdict"] == "no evidence"
    assert ("sim", "baseline", "eval/brain/layer1/rsa") not in rows  # the RSA vs the recording is shown, not claimed
    assert "predictivity layer1 (ridge, / ceiling) +0.113 ± " in claims_paragraph(summary["claims"])
    # without brain similarity the report has no such section
    for st in stages:
        folder = Path(st["folder"])
        report = json.loads((folder / "report.json").read_text())
        report.pop("brain")
        report.pop("rsa_rdm")
        (folder / "report.json").write_text(json.dumps(report))
    plain = summarize({**plan_json, "eval": {}})
    assert plain["brain"] == {"recording": None, "rdm": None} and brain_table(plain) == ""
    assert "Brain similarity" not in tables(plain)


def test_pixel_responses_replace_a_sources_responses_by_its_pixels():
    from neuroreg.targets.base import NeuralBatchSource
    from neuroreg.targets.controls import PixelResponses

    class Source(NeuralBatchSource):
        num_neurons = 5

        def load(self):
            rng = np.random.default_rng(0)
            return rng.random((6, 3, 8, 8)).astype(np.float32), rng.random((6, 5)).astype(np.float32)

    src = Source()
    control = PixelResponses(src, channels=1, size=2)
    assert control.num_neurons == 4
    stimuli, responses = control.load()
    expected_stimuli, _ = src.load()
    np.testing.assert_array_equal(stimuli, expected_stimuli)
    from neuroreg.imageops import to_grayscale

    grey = to_grayscale(torch.from_numpy(expected_stimuli))[:, 0].numpy()
    top_left = grey[:, :4, :4].mean(axis=(1, 2))
    assert responses.shape == (6, 4) and responses.dtype == np.float32
    np.testing.assert_allclose(responses[:, 0], top_left, rtol=1e-5)
    assert PixelResponses(src, channels=3, size=1).load()[1].shape == (6, 3)
    with pytest.raises(ValueError, match="PixelResponses: 'channels', 'size': expected 1 or 3 and >= 1, found 2, 8"):
        PixelResponses(src, channels=2)


def test_evalspec_without_a_recording_loads_nothing():
    assert EvalSpec().load_recording() is None


CUT_RECIPE = """
title: "Pirlot et al. 2022 real scale, cut to seconds"
reference: "none"
scales:
  real:
    description: "two arms of the pirlot2022 real scale, one epoch of three batches, a tiny evaluation"
    fetch: [cowley2023-v4-210325, kriegeskorte2008-it92]
    arms:
      baseline: ROOT/experiments/pirlot2022/real/baseline.yaml
      dcca: ROOT/experiments/pirlot2022/real/dcca.yaml
    baseline: baseline
    overrides: ["--trainer.max_epochs=1", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1"]
    eval:
      suite: quick
      budget: {max_images: 32, corruptions: [gaussian_noise], severities: [1], linf_epsilons: [0.0], fgsm: false,
               l2_epsilons: [], minimal_images: 0, square_images: 0, check_images: 8, pgd_steps: 2, noise_sigmas: [0.0, 0.2],
               robust_images: 8, decision_images: 0, rsa_rdm: kriegeskorte2008-it92, rsa_layers: [layer3], rsa_bootstrap: 0}
      recording: {manifest: cowley2023-v4-210325, options: {downsample: 2}}
      layers: [layer3]
"""


@pytest.fixture(scope="module")
def v4_and_it(tmp_path_factory) -> Path:
    """A data directory with V4 session 210325 and the IT RDM, fetched through the local mirror."""
    return real_data_dir(tmp_path_factory, ["cowley2023-v4-210325", "kriegeskorte2008-it92"])


@pytest.mark.slow
def test_real_scale_repro_on_the_real_bytes(tmp_path, monkeypatch, v4_and_it, capsys):
    """Two arms of a shipped real scale, cut to seconds, on the real V4 session and IT RDM
    (fetched through the local mirror, checksums verified): fit, evaluation with brain
    similarity, report with the brain table and brain claims."""
    from neuroreg.cli import main

    recipe = tmp_path / "cut"
    recipe.mkdir()
    (recipe / "recipe.yaml").write_text(CUT_RECIPE.replace("ROOT", str(ROOT)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NEUROREG_DATA_MIRROR", raising=False)
    monkeypatch.setenv("NEUROREG_DATA_DIR", str(v4_and_it))  # main() sets it from --data-dir; restored after the test
    out = tmp_path / "out"
    argv = ["repro", str(recipe), "--scale", "real", "--seeds", "1", "--out", str(out), "--no-progress", "--jobs", "1",
            "--data-dir", str(v4_and_it)]
    assert main(argv) == 0
    assert "report written to" in capsys.readouterr().out  # the console names the report; its tables are in summary.md
    assert "## Brain similarity" in (out / "report" / "summary.md").read_text()
    summary = json.loads((out / "report" / "summary.json").read_text())
    rec = summary["brain"]["recording"]
    # session 210325's test tier (by image content): 135 images, 50 neurons, median split-half ceiling 0.73
    assert (rec["name"], rec["tier"], rec["n_images"], rec["n_neurons"]) == ("cowley2023-v4-210325", "test", 135, 50)
    assert rec["ceiling_median"] == pytest.approx(0.729, abs=0.01)
    rdm = summary["brain"]["rdm"]
    assert (rdm["name"], rdm["n_images"], rdm["area"], rdm["noise_ceiling"]) == ("kriegeskorte2008-it92", 92, "IT", None)
    assert rdm["noise_ceiling_note"]
    for arm in ("baseline", "dcca"):
        m = summary["arms"][arm]["metrics"]
        assert -0.5 < m["eval/brain/layer3/ridge"]["mean"] < 1.5 and -1 <= m["eval/rsa_rdm=layer3"]["mean"] <= 1
    claimed = {(r["arm"], r["versus"], r["metric"]) for r in summary["claims"]["rows"]}
    assert {("dcca", "baseline", "eval/brain/layer3/ridge"), ("dcca", "baseline", "eval/rsa_rdm=layer3")} <= claimed
    # the DCCA arm's neural batches are the 50 recorded V4 neurons, the eval reference the same session's held-out images
    plan_json = json.loads((out / "repro.json").read_text())
    targets = [json.loads((Path(s["folder"]) / "done.json").read_text()) for s in plan_json["stages"] if s["kind"] == "targets"]
    assert [t["num_neurons"] for t in targets] == [{"v4": 50}]
    assert plan_json["eval"]["recording"] == {"manifest": "cowley2023-v4-210325", "options": {"downsample": 2}}


REAL_SCALES = {  # recipe -> (the regularized arm, its controls, brain-similarity layers)
    "quickstart": ("similarity", ("shuffled", "pixels", "random_network"), ("layer3",)),
    "federer2020": ("rsa", ("shuffled", "pixels"), ("layer2", "layer3")),
    "pirlot2022": ("dcca", ("shuffled", "pixels"), ("layer2", "layer3")),
    "safarani2021": ("cotraining", ("shuffled", "pixels"), ("layer2", "layer3")),
}


@pytest.mark.parametrize("name", sorted(REAL_SCALES))
def test_shipped_real_scales(name, tmp_path):
    """Each real scale: its arms and controls, an evaluation against V4 session 210325 and
    the IT RDM, manifests fetched first, controls that differ from the arm only in their
    data, and a plan (twin stage included where a twin makes the targets)."""
    from neuroreg.repro.runner import plan, resolved_config

    arm, controls, layers = REAL_SCALES[name]
    recipe = load_recipe(name)
    scale = recipe.scale("real")
    assert [a.label for a in scale.arms] == ["baseline", arm, *controls] and scale.baseline == "baseline"
    assert scale.arm(arm).controls == controls
    assert scale.eval.recording == ManifestRef("cowley2023-v4-210325", {"downsample": 2}) and scale.eval.layers == layers
    budget = scale.eval.make_budget()
    assert budget.rsa_rdm == "kriegeskorte2008-it92" and budget.rsa_layers == layers
    assert set(scale.fetch) == {"cowley2023-v4-210325", "kriegeskorte2008-it92"}
    assert "V4" in scale.description and "stand" in scale.description  # the substitution is stated
    regularized = resolved_config(scale.arm(arm).config, [])
    for control in controls:
        cfg = resolved_config(scale.arm(control).config, [])
        assert cfg["model"] == regularized["model"], f"{name}: {control} differs from {arm} in its model"
        rest = lambda c: {k: v for k, v in c["data"]["init_args"].items() if k not in ("targets", "neural")}
        assert rest(cfg) == rest(regularized) and cfg["data"] != regularized["data"]
        assert {k: v for k, v in cfg["trainer"].items() if k not in ("logger", "default_root_dir")} == {
            k: v for k, v in regularized["trainer"].items() if k not in ("logger", "default_root_dir")}
    stages = plan(recipe, scale, [0, 1, 2], tmp_path / "out", progress=False)
    n_arms = 2 + len(controls)
    assert sum(s.kind == "fit" for s in stages) == 3 * n_arms and sum(s.kind == "eval" for s in stages) == 3 * n_arms
    assert sum(s.kind == "twin" for s in stages) == (1 if name == "quickstart" else 0)  # one twin for the arm and its shuffle


def test_neural_batch_controls_on_the_real_v4_session(tmp_path, monkeypatch, v4_and_it):
    """The federer2020 real arms' neural batches: the recorded V4 train tier, the same
    responses permuted across its stimuli, and those stimuli's pooled pixels."""
    from pytorch_lightning import LightningDataModule, LightningModule

    from neuroreg.cli import NeuroregCLI

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NEUROREG_DATA_DIR", str(v4_and_it))
    monkeypatch.delenv("NEUROREG_DATA_MIRROR", raising=False)
    loaded = {}
    for arm in ("rsa", "shuffled", "pixels"):
        cli = NeuroregCLI(LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                          args=["--config", str(ROOT / "experiments" / "federer2020" / "real" / f"{arm}.yaml")], run=False,
                          auto_configure_optimizers=False)
        loaded[arm] = cli.datamodule.neural["v4"].load()
    stimuli, responses = loaded["rsa"]
    # 452 train-tier images of session 210325 (by content), 56x56 RGB after the 2x downsampling, 50 neurons
    assert stimuli.shape == (452, 3, 56, 56) and responses.shape == (452, 50)
    assert np.all(np.isfinite(responses)) and responses.min() >= 0
    s_stim, s_resp = loaded["shuffled"]
    np.testing.assert_array_equal(s_stim, stimuli)
    assert not np.array_equal(s_resp, responses)
    np.testing.assert_array_equal(np.sort(s_resp, axis=0), np.sort(responses, axis=0))  # a permutation of the rows
    p_stim, p_resp = loaded["pixels"]
    np.testing.assert_array_equal(p_stim, stimuli)
    assert p_resp.shape == (452, 64)
    from neuroreg.imageops import to_grayscale

    grey = to_grayscale(torch.from_numpy(stimuli))[:, 0].numpy()
    np.testing.assert_allclose(p_resp[:, 0], grey[:, :7, :7].mean(axis=(1, 2)), rtol=1e-5)
