"""Standalone ``neuroreg eval`` logs its scalars to the loggers the run was trained with."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from _runs import MODEL  # the same tiny classifier

from neuroreg.cli import main
from neuroreg.runs.loggers import RECORD_NAME, CsvTarget, WandbTarget, resolve_targets
from neuroreg.runs.metrics_csv import append_row

DATA = {
    "class_path": "neuroreg.data.datamodules.RegularizedDataModule",
    "init_args": {"images": {"class_path": "neuroreg.data.images.Digits", "init_args": {"size": 32}},
                  "batch_size": 32, "eval_batch_size": 64},
}


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def fit_run(tmp_path: Path, loggers: list[dict]) -> Path:
    """Fit a tiny classifier for 3 steps with ``loggers``; return its checkpoint."""
    config = tmp_path / "fit.yaml"
    config.write_text(yaml.safe_dump({
        "seed_everything": 0, "model": MODEL, "data": DATA,
        "trainer": {"max_steps": 3, "max_epochs": 1, "limit_val_batches": 1, "log_every_n_steps": 1,
                    "accelerator": "cpu", "enable_progress_bar": False, "callbacks": [], "logger": loggers,
                    "default_root_dir": str(tmp_path)},
    }))
    assert main(["fit", "--config", str(config)]) == 0
    return sorted(tmp_path.rglob("epoch=*.ckpt"))[-1]


def csv_logger(tmp_path: Path) -> dict:
    return {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": str(tmp_path / "runs"), "name": "tiny"}}


@pytest.mark.slow
def test_eval_appends_to_the_runs_csv_version_and_resumes_its_wandb_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import wandb
    from pytorch_lightning.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "disabled")
    wandb_logger = {"class_path": "pytorch_lightning.loggers.WandbLogger",
                    "init_args": {"project": "neuroreg-test", "save_dir": str(tmp_path)}}
    ckpt = fit_run(tmp_path, [csv_logger(tmp_path), wandb_logger])
    wandb.finish()  # the fit's process is over; eval runs "later"
    run = tmp_path / "runs" / "tiny" / "version_0"
    record = json.loads((run / RECORD_NAME).read_text())
    csv_entry, wandb_entry = record["loggers"]
    assert csv_entry["class_path"].endswith("CSVLogger") and csv_entry["log_dir"] == "." and csv_entry["version"] == 0
    assert wandb_entry["class_path"].endswith("WandbLogger") and wandb_entry["name"] == "neuroreg-test"
    run_id = wandb_entry["version"]
    assert isinstance(run_id, str) and len(run_id) >= 6
    before = read_csv(run / "metrics.csv")
    assert before and all("eval/clean_accuracy" not in row for row in before)

    calls = []
    monkeypatch.setattr(WandbLogger, "log_metrics",
                        lambda self, metrics, step=None: calls.append((self.version, self.name, dict(metrics), step)))
    assert main(["eval", "--ckpt", str(ckpt), "--suite", "quick", "--max-images", "8", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"logged to CSV {run / 'metrics.csv'}" in out and f"logged to wandb run {run_id}" in out

    # the run's own CSV version directory: training rows kept, one eval row appended at the checkpoint's step
    assert sorted(p.name for p in run.parent.iterdir()) == ["version_0"]
    after = read_csv(run / "metrics.csv")
    assert len(after) == len(before) + 1
    for old, new in zip(before, after):
        assert {k: v for k, v in new.items() if v != ""} == {k: v for k, v in old.items() if v != ""}
    report = json.loads((run / "eval" / "report.json").read_text())
    row = after[-1]
    assert int(row["step"]) == report["global_step"] == 3
    assert float(row["eval/clean_accuracy"]) == pytest.approx(report["clean_accuracy"])
    assert float(row["eval/decision_l2_median"]) == pytest.approx(report["decision"]["median"])
    assert [o["logged"] for o in report["run_loggers"]] == [True, True]

    # the same wandb run (id and project), the same scalars, at the same step
    ((version, project, metrics, step),) = calls
    assert version == run_id and project == "neuroreg-test" and step == 3
    assert metrics == pytest.approx({k: float(v) for k, v in row.items() if k != "step" and v != ""})

    # --no-log leaves the run's loggers alone
    assert main(["eval", "--ckpt", str(ckpt), "--max-images", "4", "--no-progress", "--no-log"]) == 0
    assert read_csv(run / "metrics.csv") == after and len(calls) == 1

    # a run from before loggers.json: the CSV version directory comes from config.yaml; wandb is named missing
    (run / RECORD_NAME).unlink()
    targets, notes = resolve_targets(run / "config.yaml")
    assert targets == [CsvTarget(run.resolve())]
    assert len(notes) == 1 and "wandb run cannot be found" in notes[0] and "config.yaml" in notes[0]
    assert main(["eval", "--ckpt", str(ckpt), "--max-images", "4", "--no-progress"]) == 0
    assert "wandb run cannot be found" in capsys.readouterr().out
    assert len(read_csv(run / "metrics.csv")) == len(after) + 1


def test_bad_record_is_an_error_before_anything_is_written(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from _runs import make_run

    ckpt = make_run(tmp_path / "run")
    (tmp_path / "run" / RECORD_NAME).write_text('{"schema": 1, "loggers": [{"name": "x"}]}')
    assert main(["eval", "--ckpt", str(ckpt), "--max-images", "4", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'run' / RECORD_NAME}: field 'loggers[0]'" in err and "--no-log" in err
    assert not (tmp_path / "run" / "eval").exists()


def test_targets_from_record_and_config(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "exp" / "version_3"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"trainer": {"logger": [
        {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": "runs", "name": "exp"}},
        {"class_path": "pytorch_lightning.loggers.WandbLogger", "init_args": {"project": "p", "id": "abc123"}},
        {"class_path": "pytorch_lightning.loggers.MLFlowLogger"},
    ]}}))
    targets, notes = resolve_targets(run / "config.yaml")
    assert targets == [CsvTarget(run.resolve()), WandbTarget("abc123", "p", None, None)]
    assert len(notes) == 1 and "MLFlowLogger is not supported" in notes[0]
    # a record beats the config; a moved run tree still resolves (log_dir is relative)
    (run / RECORD_NAME).write_text(json.dumps({"schema": 1, "loggers": [
        {"class_path": "pytorch_lightning.loggers.csv_logs.CSVLogger", "name": "exp", "version": 3, "log_dir": "."},
        {"class_path": "pytorch_lightning.loggers.wandb.WandbLogger", "name": "q", "version": "zz9", "entity": "lab",
         "save_dir": None, "log_dir": None}]}))
    assert resolve_targets(run / "config.yaml") == ([CsvTarget(run.resolve()), WandbTarget("zz9", "q", "lab", None)], [])
    logger = WandbTarget("zz9", "q", "lab", None).make_logger()
    assert logger.version == "zz9" and logger.name == "q"
    # a config whose run used Lightning's default or no logger
    for value, words in ((False, "without a logger"), (True, "not recorded")):
        (run / RECORD_NAME).unlink(missing_ok=True)
        (run / "config.yaml").write_text(yaml.safe_dump({"trainer": {"logger": value}}))
        targets, notes = resolve_targets(run / "config.yaml")
        assert targets == [] and words in notes[0]


def test_append_csv_row_unions_header_and_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,train/loss\n0,4,0.5\n0,9,0.25\n")
    append_row(path, {"step": 9, "eval/clean_accuracy": 0.75})
    assert path.read_text().splitlines() == [
        "epoch,eval/clean_accuracy,step,train/loss", "0,,4,0.5", "0,,9,0.25", ",0.75,9,"]
    plain = tmp_path / "plain"
    plain.write_text("")
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777  # not tempfile's 0600
    plain.unlink()
    import neuroreg.io as io_mod

    def crash(f, *a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(io_mod.os, "fsync", crash)
    with pytest.raises(OSError):
        append_row(path, {"step": 10, "eval/x": 1.0})
    assert path.read_text().splitlines()[-1] == ",0.75,9," and [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]
