"""``neuroreg repro``: recipes, content-keyed stages, resumption and the report (the launchers: test_launchers.py)."""

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from neuroreg.cli import main
from neuroreg.repro.recipe import RecipeError, list_recipes, load_recipe
from neuroreg.repro.runner import ReproError, plan
from neuroreg.repro.stages import config_digest, content_key

ROOT = Path(__file__).resolve().parents[2]

BASE = """
seed_everything: 0
trainer:
  accelerator: cpu
  devices: 1
  max_epochs: 2
  limit_train_batches: 3
  limit_val_batches: 1
  deterministic: true
  enable_model_summary: false
model:
  class_path: neuroreg.models.classifier.RegularizedClassifier
  init_args:
    backbone:
      class_path: neuroreg.models.backbones.SmallResNet
      init_args: {in_channels: 1, widths: [8, 16]}
    regularizers: {REGS}
    mean: [0.3]
    std: [0.32]
    optimizer:
      class_path: torch.optim.AdamW
      init_args: {lr: 0.003}
data:
  class_path: neuroreg.data.datamodules.RegularizedDataModule
  init_args:
    images:
      class_path: neuroreg.data.images.Digits
      init_args: {size: 16, split_seed: 0}
    targets: TARGETS
    batch_size: 64
    eval_batch_size: 256
"""

GROUND_TRUTH = """
      class_path: neuroreg.targets.sources.GroundTruthTargets
      init_args:
        population:
          class_path: neuroreg.data.simulated.V1Population
          init_args: {n_neurons: 20, preset: mouse_v1, image_size: 16, seed: 0}
        cache_dir: CACHE"""

SIMILARITY = """
      similarity:
        class_path: neuroreg.regularizers.SimilarityRegularizer
        init_args: {layers: [layer1], weight: 1.0}"""

RECIPE = """
title: "A tiny test recipe"
reference: "none"
scales:
  mini:
    description: "digits 16 px, 20 simulated neurons"
    arms:
      baseline: baseline.yaml
      similarity: {config: similarity.yaml, controls: [weak]}
      weak: {config: similarity.yaml, overrides: ["--model.init_args.regularizers.similarity.init_args.weight=0.1"]}
    baseline: baseline
    eval:
      suite: quick
      budget: {max_images: 32, corruptions: [gaussian_noise, contrast], severities: [1, 5], linf_epsilons: [0.0, 0.0156863],
               l2_epsilons: [], minimal_images: 0, square_images: 0, check_images: 16, pgd_steps: 3, noise_sigmas: [0.0, 0.2],
               robust_images: 16}
"""


@pytest.fixture
def recipe_dir(tmp_path):
    d = tmp_path / "tiny"
    d.mkdir()
    cache = tmp_path / "cache"
    (d / "baseline.yaml").write_text(BASE.replace("REGS", "").replace("TARGETS", "null"))
    (d / "similarity.yaml").write_text(
        BASE.replace(" {REGS}", SIMILARITY).replace(" TARGETS", GROUND_TRUTH.replace("CACHE", str(cache)))
    )
    (d / "recipe.yaml").write_text(RECIPE)
    return d


def test_shipped_recipes_load():
    names = list_recipes()
    for name in names:
        recipe = load_recipe(name)
        assert "mini" in recipe.scales or "full" in recipe.scales
        for scale in recipe.scales.values():
            assert scale.baseline in [a.label for a in scale.arms]
            for arm in scale.arms:
                assert arm.config.is_file()
    # the similarity arms are weighed against the controls the field asks for
    for name, scales in (("quickstart", ("mini",)), ("li2019", ("mini", "full"))):
        for scale in scales:
            arm = load_recipe(name).scale(scale).arm("similarity")
            assert arm.controls == ("shuffled", "pixels", "random_network"), (name, scale)


def test_recipe_errors_name_file_and_field(recipe_dir):
    recipe = recipe_dir / "recipe.yaml"
    good = yaml.safe_load(recipe.read_text())

    def broken(edit, match):
        raw = json.loads(json.dumps(good))
        edit(raw)
        recipe.write_text(yaml.safe_dump(raw))
        with pytest.raises(RecipeError, match=match) as info:
            load_recipe(recipe)
        assert str(recipe) in str(info.value)

    broken(lambda r: r["scales"]["mini"].update(baseline="nope"), r"scales\.mini\.baseline")
    broken(lambda r: r["scales"]["mini"]["arms"].update(extra="missing.yaml"), r"scales\.mini\.arms\.extra\.config.*not found")
    broken(lambda r: r["scales"]["mini"]["eval"].update(suite="huge"), r"scales\.mini\.eval\.suite")
    broken(lambda r: r["scales"]["mini"]["eval"]["budget"].update(max_imgs=3), r"eval\.budget\.max_imgs")
    broken(lambda r: r["scales"].update(medium=r["scales"]["mini"]), r"scales\.medium")
    broken(lambda r: r["scales"]["mini"].update(fetch=["no_such_data"]), r"scales\.mini\.fetch\[0\]")
    broken(lambda r: r.update(titel="x"), r"'titel'")
    # an arm's own baseline: another arm, not itself, and not one that is compared itself
    broken(lambda r: r["scales"]["mini"]["arms"]["weak"].update(baseline="nope"), r"scales\.mini\.arms\.weak\.baseline.*one of the arms")
    broken(lambda r: r["scales"]["mini"]["arms"]["weak"].update(baseline="weak"), r"arms\.weak\.baseline.*not compared with itself")
    broken(lambda r: r["scales"]["mini"]["arms"]["weak"].update(basline="similarity"), r"arms\.weak\.basline")

    # the budget is validated when the recipe is planned, before any fit: ranges, names, the ensemble's strength
    broken(lambda r: r["scales"]["mini"]["eval"]["budget"].update(linf_epsilons=[0.0, 4.0]),
           r"eval\.budget.*'linf_epsilons'.*\[0\.0, 1\.0\].*found 4\.0")
    broken(lambda r: r["scales"]["mini"]["eval"]["budget"].update(l2_epsilons=[-1.0]), r"eval\.budget.*'l2_epsilons'.*-1\.0")
    broken(lambda r: r["scales"]["mini"]["eval"]["budget"].update(corruptions=["fog", "smudge"]),
           r"eval\.budget.*'corruptions'.*unknown \['smudge'\]")
    broken(lambda r: r["scales"]["mini"]["eval"]["budget"].update(apgd_steps=10), r"eval\.budget.*'apgd_steps'.*>= 100")
    broken(lambda r: r["scales"]["mini"]["eval"]["budget"].update(robust_images=0), r"eval\.budget.*'robust_images'")

    def chain(r):
        r["scales"]["mini"]["arms"]["weak"].update(baseline="similarity")
        r["scales"]["mini"]["arms"]["similarity"] = {"config": "similarity.yaml", "baseline": "baseline"}

    broken(chain, r"arms\.similarity\.baseline.*baseline of \['weak'\]")
    (recipe_dir / "delta.yaml").write_text("defaults: [baseline.yaml, nope.yaml]\n")
    broken(lambda r: r["scales"]["mini"]["arms"].update(delta="delta.yaml"),
           r"scales\.mini\.arms\.delta\.config.*delta\.yaml: field 'defaults\[1\]': file not found: .*nope\.yaml")
    broken(lambda r: r["scales"]["mini"]["arms"].update(baseline={"config": "baseline.yaml", "baseline": "weak"}),
           r"arms\.baseline\.baseline.*scale's baseline")
    # an arm's controls: other arms, once each, neither baselines nor the arm itself
    similarity = {"config": "similarity.yaml"}
    broken(lambda r: r["scales"]["mini"]["arms"].update(similarity={**similarity, "controls": ["nope"]}),
           r"arms\.similarity\.controls\[0\].*one of the arms")
    broken(lambda r: r["scales"]["mini"]["arms"].update(similarity={**similarity, "controls": ["weak", "similarity"]}),
           r"arms\.similarity\.controls\[1\].*not its own control")
    broken(lambda r: r["scales"]["mini"]["arms"].update(similarity={**similarity, "controls": ["baseline"]}),
           r"arms\.similarity\.controls\[0\].*'baseline' is one")
    broken(lambda r: r["scales"]["mini"]["arms"].update(similarity={**similarity, "controls": ["weak", "weak"]}),
           r"arms\.similarity\.controls\[1\].*each control once")
    broken(lambda r: r["scales"]["mini"]["arms"].update(similarity={**similarity, "controls": "weak"}),
           r"arms\.similarity\.controls.*a list of strings")
    broken(lambda r: r["scales"]["mini"]["arms"].update(baseline={"config": "baseline.yaml", "controls": ["weak"]}),
           r"arms\.baseline\.controls.*baseline arm")
    with pytest.raises(RecipeError, match="known recipes"):
        load_recipe("no_such_recipe")
    recipe.write_text(yaml.safe_dump(good))
    with pytest.raises(RecipeError, match="'full' scale"):
        load_recipe(recipe).scale("full")


def test_config_digest_follows_referenced_yaml(tmp_path):
    inner = tmp_path / "inner.yaml"
    inner.write_text("a: 1\n")
    outer = tmp_path / "outer.yaml"
    outer.write_text(f"data:\n  config: {inner}\n")
    d1 = config_digest(outer)
    inner.write_text("a: 2\n")
    assert config_digest(outer) != d1
    assert content_key("x", 1) != content_key("x", 2)
    assert len(content_key("x")) == 12


def test_config_digest_covers_defaults(tmp_path):
    (tmp_path / "inner.yaml").write_text("a: 1\n")
    base = tmp_path / "base.yaml"
    base.write_text(f"data:\n  config: {tmp_path / 'inner.yaml'}\n")
    arm = tmp_path / "arm.yaml"
    arm.write_text("defaults: [base.yaml]\nseed_everything: 1\n")
    d1 = config_digest(arm)
    base.write_text(base.read_text() + "seed_everything: 2\n")  # a changed base
    d2 = config_digest(arm)
    (tmp_path / "inner.yaml").write_text("a: 2\n")  # a changed file the base names
    d3 = config_digest(arm)
    assert len({d1, d2, d3}) == 3
    assert config_digest(base) != d3


def test_plan_keys_follow_a_changed_base(recipe_dir, tmp_path):
    """Arms written as deltas over a base: changing the base changes every arm's fit key."""
    base = recipe_dir / "base.yaml"
    base.write_text((recipe_dir / "baseline.yaml").read_text())
    (recipe_dir / "baseline.yaml").write_text("defaults: [base.yaml]\n")
    similarity = yaml.safe_load((recipe_dir / "similarity.yaml").read_text())
    (recipe_dir / "similarity.yaml").write_text("defaults: [base.yaml]\n" + yaml.safe_dump(
        {"model": {"init_args": {"regularizers": similarity["model"]["init_args"]["regularizers"]}},
         "data": {"init_args": {"targets": similarity["data"]["init_args"]["targets"]}}}))

    def fit_keys():
        recipe = load_recipe(recipe_dir)
        return {(s.info["arm"], s.info["seed"]): s.key for s in plan(recipe, recipe.scale("mini"), [0], tmp_path / "out") if s.kind == "fit"}

    keys = fit_keys()
    base.write_text(base.read_text().replace("lr: 0.003", "lr: 0.002"))
    changed = fit_keys()
    assert set(changed) == set(keys) and all(changed[k] != keys[k] for k in keys)


def test_plan_keys_depend_on_content(recipe_dir, tmp_path):
    recipe = load_recipe(recipe_dir)
    scale = recipe.scale("mini")
    stages = plan(recipe, scale, [0, 1], tmp_path / "out", progress=False)
    kinds = [s.kind for s in stages]
    assert kinds.count("fit") == 6 and kinds.count("eval") == 6 and kinds.count("targets") == 1
    fits = {(s.info["arm"], s.info["seed"]): s for s in stages if s.kind == "fit"}
    assert len({s.key for s in fits.values()}) == 6  # seed and overrides change the key
    assert fits[("baseline", 0)].folder.parent.name == "baseline"
    again = {(s.info["arm"], s.info["seed"]): s.key for s in plan(recipe, scale, [0, 1], tmp_path / "out") if s.kind == "fit"}
    assert again == {k: s.key for k, s in fits.items()}
    # a changed config changes only its arms' keys
    sim = recipe_dir / "similarity.yaml"
    sim.write_text(sim.read_text().replace("lr: 0.003", "lr: 0.002"))
    changed = {(s.info["arm"], s.info["seed"]): s.key for s in plan(load_recipe(recipe_dir), scale, [0, 1], tmp_path / "out") if s.kind == "fit"}
    assert changed[("baseline", 0)] == fits[("baseline", 0)].key
    assert changed[("similarity", 0)] != fits[("similarity", 0)].key
    evals = [s for s in stages if s.kind == "eval"]
    non_base = [s for s in evals if s.info["arm"] != "baseline"]
    assert all(any(d.kind == "eval" and d.info["arm"] == "baseline" for d in s.deps) for s in non_base)


def test_unknown_brain_layers_are_refused_when_planned(recipe_dir, tmp_path):
    text = (recipe_dir / "recipe.yaml").read_text()
    (recipe_dir / "held_out.h5").write_bytes(b"")  # never read: the plan stops before any stage runs
    good = text.replace("      suite: quick\n", "      suite: quick\n      recording: held_out.h5\n      layers: [layer1, layer2]\n")
    (recipe_dir / "recipe.yaml").write_text(good)
    recipe = load_recipe(recipe_dir)
    assert any(s.kind == "eval" for s in plan(recipe, recipe.scale("mini"), [0], tmp_path / "out", progress=False))
    (recipe_dir / "recipe.yaml").write_text(good.replace("layers: [layer1, layer2]", "layers: [layer1, layer9]"))
    recipe = load_recipe(recipe_dir)
    with pytest.raises(ReproError, match=r"recipe.yaml: field 'scales.mini.eval.layers' \(arm 'baseline'\): .*"
                                         r"SmallResNet.*found unknown \['layer9'\]"):
        plan(recipe, recipe.scale("mini"), [0], tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


TWIN = """
      class_path: neuroreg.targets.twin.TwinTargets
      init_args:
        config: TWIN_CONFIG
        overrides: [--trainer.max_epochs=1]
        cache_dir: CACHE"""


def test_target_sources_ask_for_their_stages(recipe_dir, tmp_path):
    """The plan's twin stages come from the sources' ``prerequisites`` hook, nested ones included."""
    from neuroreg.targets.twin import TwinTargets

    twin_config = tmp_path / "twin.yaml"
    twin_config.write_text((ROOT / "experiments" / "twin" / "sim_mouse_v1.yaml").read_text())
    twin = TWIN.replace("CACHE", str(tmp_path / "cache")).replace("TWIN_CONFIG", str(twin_config))
    shuffled = "\n      class_path: neuroreg.targets.controls.ShuffledTargets\n      init_args:\n        seed: 0\n        source:" + twin.replace("\n", "\n    ")
    (recipe_dir / "similarity.yaml").write_text(BASE.replace(" {REGS}", SIMILARITY).replace(" TARGETS", twin))
    (recipe_dir / "shuffled.yaml").write_text(BASE.replace(" {REGS}", SIMILARITY).replace(" TARGETS", shuffled))
    raw = yaml.safe_load((recipe_dir / "recipe.yaml").read_text())
    raw["scales"]["mini"]["arms"] = {"baseline": "baseline.yaml", "similarity": "similarity.yaml", "shuffled": "shuffled.yaml"}
    (recipe_dir / "recipe.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    recipe = load_recipe(recipe_dir)
    stages = plan(recipe, recipe.scale("mini"), [0], tmp_path / "out", progress=False)
    twins = [s for s in stages if s.kind == "twin"]
    assert len(twins) == 1  # the same twin section, plain and nested in a control: one stage
    assert twins[0].folder == tmp_path / "out" / "stages" / f"twin-{twins[0].key}"
    targets = [s for s in stages if s.kind == "targets"]
    assert len(targets) == 2 and all(twins[0] in s.deps for s in targets)
    needs = TwinTargets.prerequisites({"config": str(twin_config), "overrides": []})
    assert [n.kind for n in needs] == ["twin"] and needs[0].depends_on == (twin_config,)
    assert TwinTargets.prerequisites({"config": None, "checkpoint": "twin.ckpt"})[0].depends_on == ("twin.ckpt",)
    # the twin stage's key follows the twin config's content
    twin_config.write_text(twin_config.read_text() + "# edited\n")
    again = [s for s in plan(recipe, recipe.scale("mini"), [0], tmp_path / "out", progress=False) if s.kind == "twin"]
    assert len(again) == 1 and again[0].key != twins[0].key


def test_arms_with_their_own_baseline_are_planned_after_it(recipe_dir, tmp_path):
    from neuroreg.repro.runner import describe

    raw = yaml.safe_load((recipe_dir / "recipe.yaml").read_text())
    arms = raw["scales"]["mini"]["arms"]
    # a second group, weak against similarity, listed before its baseline: the plan still puts similarity first
    # (similarity becomes a baseline arm, so it keeps no controls)
    raw["scales"]["mini"]["arms"] = {"weak": {**arms["weak"], "baseline": "similarity"}, "baseline": arms["baseline"],
                                     "similarity": {"config": arms["similarity"]["config"]}}
    (recipe_dir / "recipe.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    recipe = load_recipe(recipe_dir)
    scale = recipe.scale("mini")
    assert scale.baselines == ("baseline", "similarity")
    assert {a.label: scale.baseline_of(a.label) for a in scale.arms} == {"weak": "similarity", "baseline": None, "similarity": None}
    stages = plan(recipe, scale, [0, 1], tmp_path / "out", progress=False)
    order = [s.name for s in stages]
    evals = {(s.info["arm"], s.info["seed"]): s for s in stages if s.kind == "eval"}
    for seed in (0, 1):
        assert order.index(f"fit similarity seed {seed}") < order.index(f"fit weak seed {seed}")
        assert order.index(f"eval similarity seed {seed}") < order.index(f"eval weak seed {seed}")
        deps = [d for d in evals[("weak", seed)].deps if d.kind == "eval"]
        assert deps == [evals[("similarity", seed)]]  # its own baseline's evaluation, same seed
        assert evals[("weak", seed)].info["baseline"] == "similarity"
        for arm in ("baseline", "similarity"):  # baseline arms are evaluated on their own
            assert not [d for d in evals[(arm, seed)].deps if d.kind == "eval"] and evals[(arm, seed)].info["baseline"] is None
    described = describe(recipe, scale, [0, 1], stages)
    assert {a: v["baseline"] for a, v in described["arms"].items()} == {"weak": "similarity", "baseline": None, "similarity": None}
    assert {a: v["controls"] for a, v in described["arms"].items()} == {"weak": [], "baseline": [], "similarity": []}
    assert described["baseline"] == "baseline"
    # the baseline is part of the evaluation's key (its relative errors are against another report)
    raw["scales"]["mini"]["arms"]["weak"].pop("baseline")
    (recipe_dir / "recipe.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    recipe = load_recipe(recipe_dir)
    default = {(s.info["arm"], s.info["seed"]): s for s in plan(recipe, recipe.scale("mini"), [0], tmp_path / "out") if s.kind == "eval"}
    assert [d.info["arm"] for d in default[("weak", 0)].deps if d.kind == "eval"] == ["baseline"]
    assert default[("weak", 0)].key != evals[("weak", 0)].key
    assert default[("similarity", 0)].key != evals[("similarity", 0)].key  # now compared with baseline


def _fit_rows(path: Path) -> list[dict[str, str]]:
    """The rows a fit logged (not the evaluation's), without empty cells."""
    with path.open() as f:
        rows = [{k: v for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]
    return [r for r in rows if not any(k.startswith("eval/") for k in r)]


@pytest.mark.slow
def test_repro_end_to_end_is_cached_and_resumable(recipe_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    argv = ["repro", str(recipe_dir), "--seeds", "2", "--out", str(out), "--no-progress", "--jobs", "1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    report = out / "report"
    for name in ("summary.json", "summary.csv", "summary.md", "comparison.png", "comparison.md", "corruptions.png",
                 "claims.csv", "claims.md"):
        assert (report / name).is_file(), name
    summary = json.loads((report / "summary.json").read_text())
    # the claims: similarity against its baseline and its control, weak against its baseline
    pairs = list(dict.fromkeys((r["arm"], r["versus"], r["role"]) for r in summary["claims"]["rows"]))
    assert pairs == [("similarity", "baseline", "baseline"), ("similarity", "weak", "control"), ("weak", "baseline", "baseline")]
    assert {r["metric"] for r in summary["claims"]["rows"]} == {
        "eval/noise_accuracy_sigma=0.2", "eval/mean_corruption_accuracy", "eval/robust_linf_accuracy_eps=0.0157"}  # the ensemble, never the PGD diagnostic
    from neuroreg.repro.report import claims_paragraph

    assert (report / "claims.md").read_text() == claims_paragraph(summary["claims"])
    assert "## Claims" in (report / "summary.md").read_text()
    assert list(summary["arms"]) == ["baseline", "similarity", "weak"]
    clean = summary["arms"]["similarity"]["metrics"]["eval/clean_accuracy"]
    assert clean["n"] == 2 and len(clean["values"]) == 2 and 0.0 <= clean["mean"] <= 1.0
    # the CI is the t-interval of the two values
    v = np.asarray(clean["values"])
    assert clean["ci95"] == pytest.approx(12.7062047 * v.std(ddof=1) / np.sqrt(2), rel=1e-5)
    diff = summary["arms"]["similarity"]["metrics"]["eval/clean_accuracy"]["diff_vs_baseline"]
    base = summary["arms"]["baseline"]["metrics"]["eval/clean_accuracy"]["values"]
    assert diff["mean"] == pytest.approx(float(np.mean(v - np.asarray(base))))
    assert "baseline" not in summary["arms"]["baseline"]["metrics"]["eval/clean_accuracy"].get("diff_vs_baseline", {})
    assert "**similarity**" in printed and "± " in (report / "summary.md").read_text()
    assert "Epoch" not in printed and "Tip" not in printed  # Lightning's output is in the stages' logs
    assert len(printed.splitlines()) <= 30
    plan_json = json.loads((out / "repro.json").read_text())
    assert plan_json["seeds"] == [0, 1] and {s["kind"] for s in plan_json["stages"]} == {"targets", "fit", "eval"}
    # every eval used the recipe's budget and relative errors against the same seed's baseline
    evals = [s for s in plan_json["stages"] if s["kind"] == "eval"]
    rep = json.loads(Path(json.loads((Path(evals[-1]["folder"]) / "done.json").read_text())["report"]).read_text())
    assert rep["n_images"] == 32 and rep["complete"]
    assert rep["corruptions"].get("mce") is not None  # against the same seed's baseline

    # second run: everything is done, nothing is refitted
    fit_ckpts = sorted(out.glob("runs/*/*/final.ckpt"))
    mtimes = [p.stat().st_mtime_ns for p in fit_ckpts]
    assert main(argv) == 0
    assert [p.stat().st_mtime_ns for p in fit_ckpts] == mtimes
    assert "13 stages, 13 already done" in capsys.readouterr().out

    # an interrupted evaluation (done marker gone) is redone alone; a fit killed after its
    # last epoch's checkpoint (status still "running", process gone) resumes from last.ckpt
    # instead of starting over, and keeps its metrics.csv rows
    victim = Path(evals[0]["folder"])
    (victim / "done.json").unlink()
    fit_folder = victim.parents[1]
    (fit_folder / "done.json").unlink()
    status = json.loads((fit_folder / "fit_status.json").read_text())
    assert status["state"] == "complete"
    (fit_folder / "fit_status.json").write_text(json.dumps({"state": "running", "pid": os.getpid(), "host": status["host"]}))
    rows_before = _fit_rows(fit_folder / "metrics.csv")
    assert rows_before
    weights_before = torch.load(fit_folder / "final.ckpt", weights_only=False)["state_dict"]
    capsys.readouterr()
    assert main(argv) == 0
    fit_logs = sorted((out / "logs").glob(f"fit-{evals[0]['arm']}-seed-{evals[0]['seed']}-*.log"))
    assert f"resuming fit {evals[0]['arm']} seed {evals[0]['seed']}" in fit_logs[-1].read_text()
    assert (victim / "done.json").is_file() and (fit_folder / "done.json").is_file()
    assert json.loads((fit_folder / "fit_status.json").read_text())["state"] == "complete"
    weights_after = torch.load(fit_folder / "final.ckpt", weights_only=False)["state_dict"]
    assert all(torch.equal(weights_before[k], weights_after[k]) for k in weights_before)
    assert _fit_rows(fit_folder / "metrics.csv") == rows_before  # the fit's rows are kept
    assert [p.stat().st_mtime_ns for p in fit_ckpts if p.parent != fit_folder] == [
        m for p, m in zip(fit_ckpts, mtimes) if p.parent != fit_folder
    ]


def test_repro_bad_input_exits_2(tmp_path, capsys):
    assert main(["repro", "no_such_recipe"]) == 2
    assert "known recipes" in capsys.readouterr().err
    assert main(["repro", "quickstart", "--scale", "medium"]) == 2
    assert "'medium' scale" in capsys.readouterr().err
    assert main(["repro", "quickstart", "--jobs", "0"]) == 2
    assert "--jobs: expected an integer >= 1 or 'auto', found '0'" in capsys.readouterr().err
    assert main(["repro", "quickstart", "--jobs", "two"]) == 2
    assert "found 'two'" in capsys.readouterr().err


def test_summary_statistics_and_failed_sanity_checks_are_reported(tmp_path):
    from neuroreg.repro.report import summarize, tables

    accuracy = {("baseline", 0): 0.90, ("baseline", 1): 0.80, ("reg", 0): 0.95, ("reg", 1): 0.87}
    stages = []
    for (arm, seed), acc in accuracy.items():
        folder = tmp_path / f"{arm}{seed}"
        folder.mkdir()
        sanity = {"pgd_vs_fgsm": {"passed": True, "detail": "ok"},
                  "gradients": {"passed": (arm, seed) != ("reg", 1), "detail": "zero input gradients on 40 % of images"}}
        report = {"clean_accuracy": acc, "pgd_linf": {"epsilon": [0.0, 0.01], "accuracy": [acc, acc / 2]},
                  "robust_linf": {"epsilon": [0.0, 0.01], "accuracy": [acc, acc / 2], "n_images": 16,
                                  "members": {"pgd": [acc, acc / 2 + 0.1], "apgd_ce": [acc, acc / 2]}},
                  "sanity": sanity, "sanity_passed": all(c["passed"] for c in sanity.values()), "complete": True}
        (folder / "report.json").write_text(json.dumps(report))
        (folder / "done.json").write_text(json.dumps({"report": str(folder / "report.json")}))
        stages.append({"kind": "eval", "name": f"eval {arm} seed {seed}", "folder": str(folder), "arm": arm, "seed": seed})
    plan_json = {"recipe": "t", "title": "T", "scale": "mini", "baseline": "baseline", "arms": ["baseline", "reg"],
                 "seeds": [0, 1], "stages": stages}
    summary = summarize(plan_json)
    clean = summary["arms"]["reg"]["metrics"]["eval/clean_accuracy"]
    assert clean["mean"] == pytest.approx(0.91)
    assert clean["ci95"] == pytest.approx(12.7062047 * np.std([0.95, 0.87], ddof=1) / np.sqrt(2), rel=1e-6)
    assert clean["diff_vs_baseline"]["mean"] == pytest.approx(0.06)  # paired: (0.05 + 0.07) / 2
    assert clean["diff_vs_baseline"]["ci95"] == pytest.approx(12.7062047 * np.std([0.05, 0.07], ddof=1) / np.sqrt(2), rel=1e-6)
    assert summary["arms"]["reg"]["sanity_failed"] == [
        {"seed": 1, "check": "gradients", "detail": "zero input gradients on 40 % of images"}]
    assert summary["arms"]["baseline"]["sanity_failed"] == []
    md = tables(summary)
    assert "**1 FAILED**" in md and "| reg | 1 | gradients |" in md
    # the headline is the attack ensemble's robust accuracy; PGD alone is a diagnostic, not a headline row
    assert "| robust L∞ ε=0.01 | 0.425 ± " in md and "| PGD L∞ ε=0.01 |" not in md
    # the same runs without the failure: the table says so
    (tmp_path / "reg1" / "report.json").write_text(
        (tmp_path / "reg1" / "report.json").read_text().replace('"passed": false', '"passed": true'))
    assert "all passed." in tables(summarize(plan_json))
    # an unfinished evaluation is an error, not a silently smaller n
    (tmp_path / "reg1" / "done.json").unlink()
    with pytest.raises(FileNotFoundError, match="has not finished"):
        summarize(plan_json)


def _fake_evals(tmp_path: Path, accuracy: dict[tuple[str, int], float]) -> list[dict]:
    stages = []
    for (arm, seed), acc in accuracy.items():
        folder = tmp_path / f"{arm}{seed}"
        folder.mkdir()
        report = {"clean_accuracy": acc, "pgd_linf": {"epsilon": [0.0, 0.01], "accuracy": [acc, acc / 2]}, "complete": True}
        (folder / "report.json").write_text(json.dumps(report))
        (folder / "done.json").write_text(json.dumps({"report": str(folder / "report.json")}))
        stages.append({"kind": "eval", "name": f"eval {arm} seed {seed}", "folder": str(folder), "arm": arm, "seed": seed})
    return stages


def test_summary_pairs_each_arm_with_its_own_baseline(tmp_path):
    from neuroreg.repro.report import _csv, summarize, tables

    accuracy = {("baseline", 0): 0.90, ("baseline", 1): 0.80, ("reg", 0): 0.95, ("reg", 1): 0.87,
                ("color_baseline", 0): 0.60, ("color_baseline", 1): 0.70, ("color_reg", 0): 0.50, ("color_reg", 1): 0.64}
    arms = {"baseline": {"baseline": None}, "reg": {"baseline": "baseline"},
            "color_baseline": {"baseline": None}, "color_reg": {"baseline": "color_baseline"}}
    plan_json = {"recipe": "t", "title": "T", "scale": "mini", "baseline": "baseline", "arms": arms, "seeds": [0, 1],
                 "stages": _fake_evals(tmp_path, accuracy)}
    summary = summarize(plan_json)
    assert {a: e["baseline"] for a, e in summary["arms"].items()} == {a: v["baseline"] for a, v in arms.items()}
    diff = summary["arms"]["color_reg"]["metrics"]["eval/clean_accuracy"]["diff_vs_baseline"]
    assert diff["mean"] == pytest.approx(-0.08)  # paired against color_baseline: (−0.10 − 0.06) / 2
    assert diff["ci95"] == pytest.approx(12.7062047 * np.std([-0.10, -0.06], ddof=1) / np.sqrt(2), rel=1e-6)
    assert summary["arms"]["reg"]["metrics"]["eval/clean_accuracy"]["diff_vs_baseline"]["mean"] == pytest.approx(0.06)
    for base in ("baseline", "color_baseline"):  # a baseline arm is compared with nothing
        assert all("diff_vs_baseline" not in e for e in summary["arms"][base]["metrics"].values())
    md = tables(summary)
    assert "Paired difference to the baseline arm `baseline`" in md and "Paired difference to the baseline arm `color_baseline`" in md
    first, second = md.split("Paired difference to the baseline arm `color_baseline`")
    assert "| metric | reg |" in first.split("Paired difference to the baseline arm `baseline`")[1]
    assert "| metric | color_reg |" in second and "| clean_accuracy | -0.080 ± " in second
    rows = list(csv.DictReader(_csv(summary).splitlines()))
    row = next(r for r in rows if r["arm"] == "color_reg" and r["metric"] == "eval/clean_accuracy")
    assert row["baseline"] == "color_baseline" and float(row["diff_vs_baseline"]) == pytest.approx(-0.08)
    assert next(r for r in rows if r["arm"] == "color_baseline")["baseline"] == ""
    # a plan without per-arm baselines (arms as a list): every arm against the scale's baseline
    old = summarize({**plan_json, "arms": list(arms)})
    assert old["arms"]["color_reg"]["metrics"]["eval/clean_accuracy"]["diff_vs_baseline"]["mean"] == pytest.approx(-0.28)


def test_manifests_named_by_fit_and_twin_configs_get_fetch_stages(recipe_dir, tmp_path):
    """A ManifestRecording in a fit's data or in a prerequisite twin's config is fetched by a planned stage, once,
    before the stages that read it (never on first use inside a fit)."""
    neural = (" null\n    neural:\n      v4:\n        class_path: neuroreg.targets.sources.RecordingResponses\n"
              "        init_args:\n          recording:\n"
              "            class_path: neuroreg.data.recording_sources.ManifestRecording\n"
              "            init_args: {manifest: cowley2023-v4-210322}")
    (recipe_dir / "similarity.yaml").write_text(BASE.replace("REGS", "").replace(" TARGETS", neural))
    twin_config = tmp_path / "twin.yaml"
    twin_config.write_text((ROOT / "experiments" / "twin" / "cowley2023_v4_single.yaml").read_text())
    twin = TWIN.replace("CACHE", str(tmp_path / "cache")).replace("TWIN_CONFIG", str(twin_config))
    (recipe_dir / "twin_arm.yaml").write_text(BASE.replace(" {REGS}", SIMILARITY).replace(" TARGETS", twin))
    raw = yaml.safe_load((recipe_dir / "recipe.yaml").read_text())
    raw["scales"]["mini"]["arms"] = {"baseline": "baseline.yaml", "similarity": "similarity.yaml", "twin_arm": "twin_arm.yaml"}
    raw["scales"]["mini"]["fetch"] = ["kriegeskorte2008-it92"]
    (recipe_dir / "recipe.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    recipe = load_recipe(recipe_dir)
    stages = plan(recipe, recipe.scale("mini"), [0], tmp_path / "out", progress=False)
    fetches = [s for s in stages if s.kind == "fetch"]
    # the declared one first, then the fit's V4 session, then the twin config's
    assert [s.name for s in fetches] == ["fetch kriegeskorte2008-it92", "fetch cowley2023-v4-210322", "fetch cowley2023-v4-210325"]
    for stage in stages:
        if stage.kind in ("twin", "targets", "fit"):
            assert all(any(f is d for d in stage.deps) for f in fetches), stage.name
    # a session named twice (declared and in a config) is fetched by one stage
    raw["scales"]["mini"]["fetch"] = ["kriegeskorte2008-it92", "cowley2023-v4-210325"]
    (recipe_dir / "recipe.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    twice = [s.name for s in plan(load_recipe(recipe_dir), load_recipe(recipe_dir).scale("mini"), [0], tmp_path / "out",
                                  progress=False) if s.kind == "fetch"]
    assert twice == ["fetch kriegeskorte2008-it92", "fetch cowley2023-v4-210325", "fetch cowley2023-v4-210322"]
    raw["scales"]["mini"]["fetch"] = ["kriegeskorte2008-it92"]
    # the declared fetch keeps the key it had without the discovery (done stages stay done)
    raw["scales"]["mini"]["arms"] = {"baseline": "baseline.yaml"}
    (recipe_dir / "recipe.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    alone = [s for s in plan(load_recipe(recipe_dir), load_recipe(recipe_dir).scale("mini"), [0], tmp_path / "out",
                             progress=False) if s.kind == "fetch"]
    assert [(s.name, s.key) for s in alone] == [(fetches[0].name, fetches[0].key)]
