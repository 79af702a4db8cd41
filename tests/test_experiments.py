"""Every config under experiments/ is exercised here.

Configs that run on the embedded data get a ``fast_dev_run`` fit (in a temporary
working directory, so their relative output paths land there). Configs that need
downloaded data or a GPU say so with a line ``# requires: download`` near the top;
they are parsed and validated with ``--print_config`` (every class path resolves,
every argument exists) but not run. Recipe files (``experiments/<recipe>/recipe.yaml``)
are not LightningCLI configs: their arms must point at configs that exist.

Bases are the files named ``base.yaml``: the shared part of a recipe scale (or of the
regularizer examples) that the configs beside it start from (``defaults: [base.yaml]``,
see :mod:`neuroreg.cli`). A base is not run on its own; it is exercised by every config
built on it, and each base must be used by at least one.

All fits share one ``data/`` folder for the session, so twins, simulated recordings and
target sets (cached by content key) are built once, however many configs use them.

Configs of a recipe's ``real`` scale (``experiments/<recipe>/real/``), and others that read
small real data sets through their manifests, run their ``fast_dev_run`` fits with
``$NEUROREG_DATA_DIR`` pointing at the real data sets, fetched through a local mirror of
the shared copies (``tests/_realdata.py``; checksums verified). Those of a real scale that
fit a digital twin first are marked slow.
"""

from pathlib import Path

import pytest
import torch
import yaml

from _realdata import real_data  # noqa: F401  (a fixture)
from neuroreg.cli import config_chain, run_cli

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "experiments").glob("*/recipe.yaml"))
YAMLS = sorted(p for p in (ROOT / "experiments").rglob("*.yaml") if "sweeps" not in p.parts and p.name != "recipe.yaml")
BASES = [p for p in YAMLS if p.name == "base.yaml"]
CONFIGS = [p for p in YAMLS if p.name != "base.yaml"]


def needs_download(path: Path) -> bool:
    head = path.read_text().splitlines()[:15]
    return any(line.strip().startswith("# requires: download") for line in head)


@pytest.fixture(scope="session")
def shared_data(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


def test_configs_exist():
    assert (ROOT / "experiments" / "quickstart.yaml") in CONFIGS
    assert (ROOT / "experiments" / "quickstart" / "recipe.yaml") in RECIPES
    assert not any(p.name == "recipe.yaml" for p in CONFIGS)
    assert (ROOT / "experiments" / "li2019" / "mini" / "base.yaml") in BASES


@pytest.mark.parametrize("base", BASES, ids=lambda p: str(p.relative_to(ROOT)))
def test_base_is_built_on(base):
    users = [c for c in CONFIGS if base in config_chain(c)[:-1]]
    assert users, f"{base}: no config under experiments/ lists it in its defaults (directly or through another config)"
    # a scale's base serves its own arms; experiments/cluster/ holds cluster layouts of existing arms (their defaults: the arm)
    assert all(u.parent == base.parent or u.parent.parent == base.parent or u.parent.name == "cluster" for u in users), (
        f"{base}: used from afar by {users}")
    assert needs_download(base) == any(needs_download(u) for u in users), (
        f"{base}: '# requires: download' must be on a base exactly when the configs built on it need downloads"
    )


def test_every_default_is_a_shipped_config_or_base():
    for config in YAMLS:
        for part in config_chain(config):
            assert part in YAMLS, f"{config}: its defaults reach {part}, outside experiments/ (or in sweeps/)"


def real_scale(path: Path) -> bool:
    """Whether ``path`` reads real data sets through their manifests: an arm of a recipe's
    ``real`` scale (``experiments/<recipe>/real/...``), or a config that names a manifest
    source (e.g. ``regularizers/multi_species_real.yaml``)."""
    parts = path.relative_to(ROOT / "experiments").parts
    if len(parts) >= 3 and parts[1] == "real":
        return True
    return any(src in part.read_text() for part in config_chain(path) for src in ("ManifestRecording", "ManifestRDM"))


def _fast_dev_params() -> list:
    params = []
    for c in CONFIGS:
        if needs_download(c):
            continue
        twin = real_scale(c) and any("neuroreg.targets.twin.TwinTargets" in part.read_text() for part in config_chain(c))
        params.append(pytest.param(c, marks=pytest.mark.slow) if twin else c)
    return params


@pytest.mark.parametrize("config", _fast_dev_params(), ids=lambda p: str(p.relative_to(ROOT)))
def test_config_fast_dev_run(config, tmp_path, monkeypatch, shared_data, request):
    (tmp_path / "data").symlink_to(shared_data, target_is_directory=True)
    if real_scale(config):  # every copied real data set (V4 sessions, the IT RDM), with the shipped manifests
        monkeypatch.setenv("NEUROREG_DATA_DIR", str(request.getfixturevalue("real_data")))
        monkeypatch.delenv("NEUROREG_DATA_MIRROR", raising=False)
        monkeypatch.delenv("NEUROREG_MANIFEST_DIR", raising=False)
    elif any("kriegeskorte2008-it92" in part.read_text() for part in config_chain(config)):
        from _rdmdata import it92_environment  # the real 92-image IT RDM, from the shared data

        it92_environment(monkeypatch, tmp_path)
    monkeypatch.chdir(tmp_path)
    cli = run_cli(["fit", "--config", str(config), "--trainer.fast_dev_run=true"])
    assert cli.trainer.state.finished


@pytest.mark.parametrize("config", [c for c in CONFIGS if needs_download(c)] or [None], ids=lambda p: "none" if p is None else str(p.relative_to(ROOT)))
def test_full_scale_config_parses(config, capsys):
    if config is None:
        pytest.skip("no full-scale configs yet")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    assert "class_path" in capsys.readouterr().out


def _arm_configs(recipe: Path, scale: str, arms: dict) -> list[Path]:
    paths = []
    for label, spec in arms.items():
        config = spec if isinstance(spec, str) else spec.get("config")
        assert isinstance(config, str), f"{recipe}: scales.{scale}.arms.{label}: expected a config path, found {spec!r}"
        paths.append((recipe.parent / config).resolve())
    return paths


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.parent.name)
def test_recipe_arms_point_at_configs(recipe):
    raw = yaml.safe_load(recipe.read_text())
    assert set(raw) == {"title", "reference", "scales"}, f"{recipe}: top-level fields {sorted(raw)}"
    assert set(raw["scales"]) <= {"mini", "real", "full"} and "mini" in raw["scales"]
    for scale, spec in raw["scales"].items():
        paths = _arm_configs(recipe, scale, spec["arms"])
        missing = [str(p) for p in paths if not p.is_file()]
        assert not missing, f"{recipe}: scales.{scale}.arms: configs not found: {missing}"
        assert spec["baseline"] in spec["arms"], f"{recipe}: scales.{scale}.baseline {spec['baseline']!r} is not an arm"
        for label, arm in spec["arms"].items():  # an arm's own baseline, when it names one, is another arm
            own = arm.get("baseline") if isinstance(arm, dict) else None
            assert own is None or (own in spec["arms"] and own != label), f"{recipe}: scales.{scale}.arms.{label}.baseline {own!r}"
        for p in paths:  # arms of a scale live in that scale's folder and run at that scale
            assert p.parent == (recipe.parent / scale).resolve(), f"{recipe}: scales.{scale}: {p} is outside {scale}/"
            assert needs_download(p) == (scale == "full"), f"{p}: '# requires: download' must mark exactly the full-scale arms"
            for part in config_chain(p):  # the arm and the configs it starts from
                assert "RobustnessEvaluation" not in part.read_text(), f"{part}: arms are evaluated by the recipe, not by a callback"


FULL_BASES = sorted((ROOT / "experiments").glob("*/full/base.yaml"))
GPU_SETTINGS = {("trainer", "precision"): "bf16-mixed", ("model", "init_args", "channels_last"): True,
                ("data", "init_args", "num_workers"): 4}


def test_full_scales_are_gpu_ready():
    """Every full scale trains in bf16 autocast, channels-last, with loader workers (the GPU settings)."""
    assert FULL_BASES
    for base in FULL_BASES:
        raw = yaml.safe_load(base.read_text())
        for keys, value in GPU_SETTINGS.items():
            node = raw
            for k in keys:
                node = node.get(k) if isinstance(node, dict) else None
            assert node == value, f"{base}: field '{'.'.join(keys)}': expected {value!r}, found {node!r}"


@pytest.mark.slow
@pytest.mark.parametrize("arm", ["dcca.yaml", "spectral.yaml"])
def test_the_gpu_settings_run_on_cpu(arm, tmp_path, monkeypatch, shared_data):
    """The full scales' GPU settings, on a CPU fit of the embedded digits with an eigh-based and a spectral regularizer."""
    (tmp_path / "data").symlink_to(shared_data, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    overrides = [f"--{'.'.join(keys)}={str(value).lower() if isinstance(value, bool) else value}" for keys, value in GPU_SETTINGS.items()]
    cli = run_cli(["fit", "--config", str(ROOT / "experiments" / "regularizers" / arm), "--trainer.fast_dev_run=2",
                   "--trainer.accelerator=cpu", *overrides])
    assert cli.trainer.state.finished
    assert cli.trainer.precision == "bf16-mixed" and cli.model.channels_last
    assert cli.datamodule.num_workers == 4
    metrics = cli.trainer.callback_metrics
    regularizer_terms = [k for k in metrics if k.startswith("train/") and k.endswith("/loss") and k != "train/loss"]
    assert regularizer_terms and all(bool(torch.isfinite(metrics[k])) for k in [*regularizer_terms, "train/loss"])
