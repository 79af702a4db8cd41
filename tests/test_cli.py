"""The neuroreg command on the shipped configs (every config under experiments/ runs here)."""

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from neuroreg.cli import ConfigDefaultsError, config_chain, config_defaults, main, run_cli
from neuroreg.evaluation.callbacks import RobustnessEvaluation

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "experiments" / "quickstart.yaml"
LI2019_MINI = ROOT / "experiments" / "li2019" / "mini"


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    """Every test runs in its tmp_path: the quickstart's twin caches its simulated recording under ./data/recordings."""
    monkeypatch.chdir(tmp_path)


def isolated(tmp_path):
    """Overrides that keep every output of a run inside tmp_path."""
    return [
        f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
        f"--data.init_args.targets.init_args.cache_dir={tmp_path / 'targets'}",
    ]


def test_quickstart_fast_dev_run(tmp_path):
    cli = run_cli(["fit", "--config", str(QUICKSTART), "--trainer.fast_dev_run=true", *isolated(tmp_path)])
    (evaluation,) = [c for c in cli.trainer.callbacks if isinstance(c, RobustnessEvaluation)]
    assert 0.0 <= evaluation.report["clean_accuracy"] <= 1.0
    assert cli.model.head.out_features == 10 and cli.model.num_neurons == {"targets": 300}  # linked from the data
    assert not list(tmp_path.rglob("report.json"))  # fast_dev_run writes nothing
    assert list((tmp_path / "targets").glob("twin_*.h5")), "twin-predicted TargetSet was not cached"
    assert list((tmp_path / "targets").glob("twin_*.ckpt")), "fitted twin was not cached"
    assert list((tmp_path / "data" / "recordings").glob("sim_mouse_v1_*.h5"))


def test_print_config_shows_resolved_parts(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(QUICKSTART), "--print_config"])
    assert exit_info.value.code in (0, None)
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["init_args"]["regularizers"]["similarity"]["class_path"].endswith("SimilarityRegularizer")
    assert cfg["data"]["init_args"]["targets"]["class_path"].endswith("TwinTargets")
    assert cfg["trainer"]["max_epochs"] == 12


def printed_config(capsys, *configs, args=()) -> dict:
    """The resolved config of ``neuroreg fit --config C1 --config C2 ... --print_config``."""
    argv = ["fit"]
    for config in configs:
        argv += ["--config", str(config)]
    with pytest.raises(SystemExit) as exit_info:
        run_cli([*argv, *args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def test_defaults_apply_like_several_configs_in_order(tmp_path, capsys, monkeypatch):
    """An arm's ``defaults`` chain (shuffled -> similarity -> base) resolves exactly as
    ``--config base --config similarity --config shuffled`` with the defaults lines removed."""
    shuffled = LI2019_MINI / "shuffled.yaml"
    chain = config_chain(shuffled)
    assert [p.name for p in chain] == ["base.yaml", "similarity.yaml", "shuffled.yaml"]
    parts = []
    for i, part in enumerate(chain):
        body = config_defaults(part)[1]
        parts.append(part if body is None else tmp_path / f"{i}_{part.name}")
        if body is not None:
            assert "defaults" not in yaml.safe_load(body)
            parts[-1].write_text(body)
    composed = printed_config(capsys, shuffled)
    assert composed == printed_config(capsys, *parts)
    assert "defaults" not in composed
    targets = composed["data"]["init_args"]["targets"]
    assert targets["class_path"].endswith("ShuffledTargets")
    assert targets["init_args"]["source"]["init_args"]["config"] == "experiments/twin/sim_mouse_v1.yaml"
    assert list(composed["model"]["init_args"]["regularizers"]) == ["similarity"]  # from similarity.yaml
    assert composed["trainer"]["logger"]["init_args"]["name"] == "li2019_shuffled"
    assert composed["trainer"]["logger"]["init_args"]["save_dir"] == "runs"  # from base.yaml
    # defaults are relative to the file, not to the working directory
    monkeypatch.chdir(tmp_path)
    assert printed_config(capsys, shuffled) == composed


def test_a_later_config_replaces_dict_typed_fields_and_keeps_compatible_init_args(tmp_path, capsys):
    """jsonargparse's merge, as the arms rely on it (and neuroreg.cli documents it):
    ``regularizers: {name: Regularizer}`` is replaced whole (a base's regularizer does not
    survive in an arm that names others), so is a list, a mapping merges key by key, and
    a changed class_path keeps the init_args the new class accepts."""
    similarity = LI2019_MINI / "similarity.yaml"
    (tmp_path / "spectral.yaml").write_text(textwrap.dedent(f"""\
        defaults: [{similarity}]
        model:
          init_args:
            regularizers:
              spectrum:
                class_path: neuroreg.regularizers.SpectralRegularizer
                init_args: {{layers: [layer2]}}
        trainer:
          logger:
            init_args: {{name: spectral}}
        data:
          init_args:
            targets:
              class_path: neuroreg.targets.sources.GroundTruthTargets
              init_args:
                population:
                  class_path: neuroreg.data.simulated.V1Population
                  init_args: {{n_neurons: 30}}
        """))
    cfg = printed_config(capsys, tmp_path / "spectral.yaml")
    assert list(cfg["model"]["init_args"]["regularizers"]) == ["spectrum"]
    assert cfg["trainer"]["logger"]["init_args"] == {**printed_config(capsys, similarity)["trainer"]["logger"]["init_args"], "name": "spectral"}
    targets = cfg["data"]["init_args"]["targets"]
    assert targets["class_path"].endswith("GroundTruthTargets")
    assert targets["init_args"]["cache_dir"] == "data/targets"  # kept from the TwinTargets it replaced
    (tmp_path / "none.yaml").write_text(f"defaults: [{similarity}]\nmodel:\n  init_args:\n    regularizers: {{}}\n")
    assert printed_config(capsys, tmp_path / "none.yaml")["model"]["init_args"]["regularizers"] == {}
    (tmp_path / "callbacks.yaml").write_text(textwrap.dedent(f"""\
        defaults: [{QUICKSTART}]
        trainer:
          callbacks:
            - class_path: pytorch_lightning.callbacks.EarlyStopping
              init_args: {{monitor: val/accuracy}}
        """))
    callbacks = printed_config(capsys, tmp_path / "callbacks.yaml")["trainer"]["callbacks"]  # a list is replaced whole
    assert [c["class_path"] for c in callbacks] == ["pytorch_lightning.callbacks.EarlyStopping"]


def test_bad_defaults_are_reported_with_the_file(tmp_path, capsys):
    base = tmp_path / "base.yaml"
    base.write_text("seed_everything: 3\n")
    cases = {
        "missing.yaml": ("defaults: [base.yaml, nope.yaml]\n", r"missing\.yaml: field 'defaults\[1\]': file not found: .*nope\.yaml"),
        "string.yaml": ("defaults: base.yaml\n", r"string\.yaml: field 'defaults': expected a non-empty list of config files"),
        "empty.yaml": ("defaults: []\n", r"empty\.yaml: field 'defaults': expected a non-empty list"),
        "cycle.yaml": ("defaults: [cycle2.yaml]\n", r"field 'defaults': the configs list each other in a cycle: .*cycle\.yaml -> .*cycle2\.yaml -> .*cycle\.yaml"),
    }
    (tmp_path / "cycle2.yaml").write_text("defaults: [cycle.yaml]\n")
    for name, (text, match) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ConfigDefaultsError, match=match):
            config_chain(tmp_path / name)
        assert main(["fit", "--config", str(tmp_path / name), "--print_config"]) == 2
        err = capsys.readouterr().err
        assert str(tmp_path / name) in err or name in err, err
        assert "Traceback" not in err
    # a base that is fine, a defaults-only config, and a file applied once though listed twice
    (tmp_path / "only.yaml").write_text("# nothing of its own\ndefaults: [base.yaml, base.yaml]\n")
    assert config_chain(tmp_path / "only.yaml") == [base.resolve(), (tmp_path / "only.yaml").resolve()]
    assert printed_config(capsys, tmp_path / "only.yaml", args=["--model=neuroreg.models.classifier.RegularizedClassifier",
                          "--model.init_args.backbone=neuroreg.models.backbones.SmallResNet",
                          "--data=neuroreg.data.datamodules.RegularizedDataModule",
                          "--data.init_args.images=neuroreg.data.images.Digits"])["seed_everything"] == 3


def test_config_typo_is_reported_and_exits_nonzero(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "neuroreg.cli", "fit", "--config", str(QUICKSTART),
         "--model.init_args.regularizers.similarity.init_args.wieght=0.5", *isolated(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "wieght" in proc.stderr
    assert not list(tmp_path.rglob("report.json"))


def test_unknown_layer_is_reported_and_exits_nonzero(tmp_path):
    cfg = yaml.safe_load(QUICKSTART.read_text())
    cfg["model"]["init_args"]["regularizers"]["similarity"]["init_args"]["layers"] = ["layer1", "layer7"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "neuroreg.cli", "fit", "--config", str(bad), *isolated(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "layer 'layer7'" in proc.stderr and "SmallResNet" in proc.stderr
    assert not list(tmp_path.rglob("report.json"))


def test_wandb_logger_offline(tmp_path, monkeypatch):
    import wandb

    # wandb reads its environment once per process session: end any session an earlier
    # test started (with WANDB_MODE=disabled) so this one starts offline
    wandb.teardown()
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    main([
        "fit", "--config", str(QUICKSTART), *isolated(tmp_path)[:1], *isolated(tmp_path)[2:],
        "--trainer.logger=pytorch_lightning.loggers.WandbLogger",
        f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.logger.init_args.offline=true",
        "--trainer.max_steps=2", "--trainer.limit_val_batches=1", "--trainer.max_epochs=1",
        "--trainer.callbacks=[]",
    ])
    assert list(tmp_path.rglob("*.wandb")), "no offline wandb run was written"


@pytest.mark.slow
def test_quickstart_end_to_end_writes_report_plot_and_logs(tmp_path, capsys):
    main(["fit", "--config", str(QUICKSTART), "--trainer.max_epochs=3", *isolated(tmp_path)])
    out = capsys.readouterr().out
    report_path = next((tmp_path / "runs").rglob("report.json"))
    assert f"report written to {report_path}" in out
    report = json.loads(report_path.read_text())
    assert report["clean_accuracy"] > 0.5  # three epochs on digits already learn the task
    pgd = report["pgd_linf"]["accuracy"]
    assert pgd[0] == pytest.approx(report["clean_accuracy"])
    assert all(b <= a + 1e-9 for a, b in zip(pgd, pgd[1:])), pgd
    assert (report_path.parent / "robustness.png").stat().st_size > 10_000
    with open(report_path.parent / "metrics.csv") as f:
        columns = next(csv.reader(f))
    for key in ["train/similarity/loss", "train/similarity/layer_weight/layer1", "val/accuracy", "eval/clean_accuracy"]:
        assert key in columns, key
    assert list(report_path.parent.glob("checkpoints/*.ckpt"))


def test_help_lists_every_subcommand_one_line_each(capsys):
    from neuroreg.cli import SUBCOMMANDS, TOOLS

    assert set(SUBCOMMANDS) == {"fit", "validate", "test", "predict", *TOOLS}
    assert main(["--help"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = [line.split()[0] for line in lines if line.startswith("  ")]
    assert listed == list(SUBCOMMANDS)
    assert main([]) == 2 and "expected a subcommand" in capsys.readouterr().err


def test_fit_console_keeps_the_progress_bar_without_lightning_noise(tmp_path):
    from neuroreg.console import is_noise

    assert is_noise("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger](…)")
    assert is_noise("Experiment logs directory runs/x/version_0 exists and is not empty. Previous log files in this "
                    "directory will be deleted when the new ones are saved!")
    assert not is_noise("Checkpoint directory runs/x exists and is not empty.")
    assert not is_noise("The 'train_dataloader' does not have many workers which may be a bottleneck.")
    config = ROOT / "experiments" / "quickstart" / "mini" / "baseline.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "neuroreg.cli", "fit", "--config", str(config), "--trainer.max_epochs=1",
         "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1", f"--trainer.default_root_dir={tmp_path}",
         f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = proc.stdout + proc.stderr
    assert "Epoch 0" in console  # Lightning's progress bar stays
    for noise in ("Tip:", "litlogger", "args parameter is intended", "exists and is not empty", "LeafSpec"):
        assert noise not in console, noise
