"""The neuroreg command on the shipped configs (every config under experiments/ runs here)."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from neuroreg.cli import main, run_cli
from neuroreg.evaluation.callbacks import RobustnessEvaluation

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "experiments" / "quickstart.yaml"


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


def test_print_config_shows_resolved_parts(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(QUICKSTART), "--print_config"])
    assert exit_info.value.code in (0, None)
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["init_args"]["regularizers"]["similarity"]["class_path"].endswith("SimilarityRegularizer")
    assert cfg["data"]["init_args"]["targets"]["class_path"].endswith("TwinTargets")
    assert cfg["trainer"]["max_epochs"] == 12


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
