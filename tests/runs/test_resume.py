"""Interrupt-safe fits: a fit killed with SIGKILL and rerun with the same command resumes
and ends with the same weights and metrics as an uninterrupted one."""

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from pytorch_lightning.callbacks import Callback
from torch.utils.data import TensorDataset

from neuroreg.cli import run_cli
from neuroreg.data.sampling import (
    EpochSampler,
    GroupedBatchSampler,
    ResumableBatchSampler,
    ResumableLoader,
)
from neuroreg.runs.checkpoints import LAST_CHECKPOINT
from neuroreg.runs.folders import RunLayout, comparable, run_layout
from neuroreg.runs.random_state import random_state, set_random_state
from neuroreg.runs.status import read_status, write_status

TESTS = Path(__file__).resolve().parent
RESUME_LINE = "neuroreg: resuming from "


class PauseAt(Callback):
    """Test helper: the first time training reaches ``step``, write ``marker`` and sleep."""

    def __init__(self, step: int, marker: str, seconds: float = 120.0):
        self.step, self.marker, self.seconds = step, Path(marker), seconds

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step and not self.marker.exists():
            self.marker.write_text(str(trainer.current_epoch))
            time.sleep(self.seconds)


class CrashAt(Callback):
    """Test helper: the first time training reaches ``step``, write ``marker`` and raise."""

    def __init__(self, step: int, marker: str):
        self.step, self.marker = step, Path(marker)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step and not self.marker.exists():
            self.marker.write_text("crashed")
            raise RuntimeError("simulated crash")


def tiny_config(max_epochs=3, callbacks=(), **trainer):
    """SmallResNet behind a noisy VOneBlock on digits, similarity-regularized toward
    pooled pixels, StepLR: deterministic, 4 training batches per epoch."""
    return {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu", "devices": 1, "max_epochs": max_epochs, "deterministic": True,
            "limit_train_batches": 4, "limit_val_batches": 2, "log_every_n_steps": 2,
            "enable_progress_bar": False, "enable_model_summary": False,
            "logger": {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": "runs", "name": "tiny"}},
            "callbacks": list(callbacks), **trainer,
        },
        "model": {
            "class_path": "neuroreg.models.classifier.RegularizedClassifier",
            "init_args": {
                "backbone": {
                    "class_path": "neuroreg.models.vone.VOneBackbone",
                    "init_args": {
                        "vone": {"class_path": "neuroreg.models.vone.VOneBlock",
                                 "init_args": {"in_channels": 1, "out_channels": 4, "simple_channels": 4,
                                               "complex_channels": 4, "kernel_size": 7, "seed": 0}},
                        "backbone": {"class_path": "neuroreg.models.backbones.SmallResNet",
                                     "init_args": {"in_channels": 4, "widths": [8, 16]}},
                    },
                },
                "regularizers": {"similarity": {"class_path": "neuroreg.regularizers.SimilarityRegularizer",
                                                "init_args": {"layers": ["backbone.layer1"]}}},
                "mean": [0.3], "std": [0.32],
                "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.003}},
                "scheduler": {"class_path": "torch.optim.lr_scheduler.StepLR", "init_args": {"step_size": 1, "gamma": 0.7}},
            },
        },
        "data": {
            "class_path": "neuroreg.data.datamodules.RegularizedDataModule",
            "init_args": {
                "images": {"class_path": "neuroreg.data.images.Digits", "init_args": {"size": 32}},
                "targets": {"class_path": "neuroreg.targets.controls.PixelTargets", "init_args": {"channels": 1, "size": 4}},
                "batch_size": 32,
            },
        },
    }


def pause(step, marker, seconds=120.0):
    return {"class_path": "test_resume.PauseAt", "init_args": {"step": step, "marker": str(marker), "seconds": seconds}}


def crash(step, marker):
    return {"class_path": "test_resume.CrashAt", "init_args": {"step": step, "marker": str(marker)}}


def write(path: Path, cfg: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_dir(root: Path, version: int = 0) -> Path:
    return root / "runs" / "tiny" / f"version_{version}"


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / LAST_CHECKPOINT, map_location="cpu", weights_only=True)["state_dict"]


def metric_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def last_val(rows):
    return [r for r in rows if r.get("val/accuracy")][-1]


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"weights differ in {different[:5]}"


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def mark_killed(run: Path):
    """Make a run that ended by an exception look like one whose process was killed."""
    status = read_status(run)
    assert status["state"] == "running"
    write_status(run, {**status, "pid": dead_pid()})


# ------------------------------------------------------------------ sampling
def test_epoch_sampler_order_depends_only_on_seed_and_epoch():
    state = torch.get_rng_state()
    s = EpochSampler(20, seed=3)
    s.set_epoch(2)
    order = list(s)
    assert sorted(order) == list(range(20)) and order != list(range(20))
    fresh = EpochSampler(20, seed=3)
    assert list(fresh) != order  # epoch 0
    fresh.set_epoch(2)
    assert list(fresh) == order  # no matter which epochs ran before
    assert torch.equal(torch.get_rng_state(), state), "the global random state was used"
    other = EpochSampler(20, seed=4)
    other.set_epoch(2)
    assert list(other) != order
    passes = list(EpochSampler([5], seed=0, num_samples=12))  # 2 full passes + 2, each pass a permutation
    assert len(passes) == 12 and sorted(passes[:5]) == sorted(passes[5:10]) == list(range(5))
    parts = list(EpochSampler([3, 4], seed=0))
    assert sorted(parts[:3]) == [0, 1, 2] and sorted(parts[3:]) == [3, 4, 5, 6]
    assert list(EpochSampler([3, 4], shuffle=False)) == list(range(7))
    with pytest.raises(ValueError, match="num_samples"):
        EpochSampler([0], num_samples=3)


@pytest.mark.parametrize("workers", [0, 1])
def test_resumable_loader_continues_mid_epoch_without_touching_the_global_random_state(workers):
    data = TensorDataset(torch.arange(23))

    def loader():
        sampler = ResumableBatchSampler(EpochSampler(23, seed=1), 5, drop_last=True)
        return ResumableLoader(data, batch_sampler=sampler, num_workers=workers, persistent_workers=workers > 0)

    first = loader()
    first.batch_sampler.sampler.set_epoch(4)
    state = torch.get_rng_state()
    it = iter(first)
    seen = [next(it)[0].tolist() for _ in range(2)]
    assert torch.equal(torch.get_rng_state(), state)
    saved = first.state_dict()
    assert saved == {"epoch": 4, "batch": 2}
    rest = [b[0].tolist() for b in it]
    assert len(seen) + len(rest) == len(first) == 4

    again = loader()
    again.load_state_dict(saved)
    assert [b[0].tolist() for b in again] == rest
    assert again.state_dict() == {"epoch": 4, "batch": 4}
    assert len(list(again)) == 4  # the next iteration is a whole epoch again
    with pytest.raises(ValueError, match="expected a batch in"):
        again.load_state_dict({"epoch": 4, "batch": 9})
    with pytest.raises(ValueError, match="expected keys"):
        again.load_state_dict({"batch": 1})


def test_grouped_batch_sampler_is_seeded_by_epoch_and_resumable():
    s = GroupedBatchSampler([5, 7], batch_size=3, shuffle=True, drop_last=False, seed=2)
    s.sampler.set_epoch(1)
    epoch1 = list(s)
    t = GroupedBatchSampler([5, 7], batch_size=3, shuffle=True, drop_last=False, seed=2)
    assert list(t) != epoch1
    t.start_at(1, 2)
    assert list(t) == epoch1[2:]
    assert list(t) == epoch1  # whole epoch again


def test_random_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    torch.save({"state": random_state()}, tmp_path / "s.pt")
    draws = (random.random(), np.random.rand(), torch.rand(3))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_random_state(torch.load(tmp_path / "s.pt", weights_only=True)["state"])
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert draws[0] == again[0] and draws[1] == again[1] and torch.equal(draws[2], again[2])


def test_config_comparison_ignores_where_a_run_lives_and_resume_options():
    cfg = tiny_config()
    saved = {**cfg, "resume": True, "ckpt_path": None}
    saved["trainer"] = {**cfg["trainer"], "logger": {**cfg["trainer"]["logger"], "init_args": {"save_dir": "runs", "name": "tiny", "version": 3}}}
    current = {**cfg, "resume": False, "save_last_every_n_steps": 5}
    assert comparable(saved) == comparable(current)
    changed = {**current, "seed_everything": 1}
    assert comparable(saved) != comparable(changed)


def test_run_layouts(tmp_path):
    from jsonargparse import Namespace

    def trainer(logger, root=str(tmp_path)):
        return Namespace(logger=logger, default_root_dir=root)

    csv_logger = Namespace(class_path="pytorch_lightning.loggers.CSVLogger", init_args=Namespace(save_dir=str(tmp_path / "r"), name="x", version=None))
    assert run_layout(trainer(csv_logger)) == RunLayout(tmp_path / "r" / "x", versioned=True)
    fixed = Namespace(class_path="pytorch_lightning.loggers.CSVLogger", init_args=Namespace(save_dir=str(tmp_path), name="x", version="mine"))
    assert run_layout(trainer(fixed)) == RunLayout(tmp_path / "x" / "mine", versioned=False)
    assert run_layout(trainer(False)) == RunLayout(tmp_path, versioned=False)
    wandb = Namespace(class_path="pytorch_lightning.loggers.WandbLogger", init_args=Namespace(save_dir=str(tmp_path)))
    assert run_layout(trainer(wandb)) is None
    layout = run_layout(trainer(csv_logger))
    for v in (0, 2, 10):
        (layout.root / f"version_{v}").mkdir(parents=True)
    (layout.root / "version_x").mkdir()
    assert layout.versions() == [10, 2, 0] and layout.run_dir(2) == layout.root / "version_2"


# ---------------------------------------------------------- choosing a run
def cli(config: Path, *extra: str):
    return run_cli(["fit", "--config", str(config), *extra])


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(TESTS))
    return tmp_path


@pytest.mark.slow
def test_finished_runs_are_never_resumed(in_tmp, capsys):
    config = write(in_tmp / "cfg.yaml", tiny_config(max_epochs=1))
    cli(config)
    status = read_status(run_dir(in_tmp, 0))
    assert status["state"] == "complete" and status["global_step"] == 4
    assert (run_dir(in_tmp, 0) / LAST_CHECKPOINT).is_file()
    cli(config)
    assert RESUME_LINE not in capsys.readouterr().out
    assert read_status(run_dir(in_tmp, 1))["state"] == "complete"  # a new version


@pytest.mark.slow
def test_unfinished_run_resumes_unless_config_changed_resume_false_or_ckpt_path(in_tmp, capsys):
    config = write(in_tmp / "cfg.yaml", tiny_config(max_epochs=2, callbacks=[crash(6, in_tmp / "crashed")]))
    with pytest.raises(RuntimeError, match="simulated crash"):
        cli(config)
    v0 = run_dir(in_tmp, 0)
    assert torch.load(v0 / LAST_CHECKPOINT, weights_only=True)["global_step"] == 4  # end of epoch 0
    assert read_status(v0)["state"] == "running"
    capsys.readouterr()

    cli(config)  # the process that wrote "running" still runs (it is this one): not resumed
    assert RESUME_LINE not in capsys.readouterr().out and read_status(run_dir(in_tmp, 1))["state"] == "complete"

    mark_killed(v0)
    cli(config, "--trainer.max_epochs=3")  # a changed config: a new run
    assert RESUME_LINE not in capsys.readouterr().out and read_status(run_dir(in_tmp, 2))["state"] == "complete"
    cli(config, "--resume=false")
    assert RESUME_LINE not in capsys.readouterr().out and read_status(run_dir(in_tmp, 3))["state"] == "complete"
    explicit = cli(config, f"--ckpt_path={run_dir(in_tmp, 1) / LAST_CHECKPOINT}")  # wins (at max_epochs: nothing to train)
    assert RESUME_LINE not in capsys.readouterr().out
    assert explicit.trainer.global_step == 8 and Path(explicit.trainer.log_dir).resolve() == run_dir(in_tmp, 4).resolve()
    assert read_status(v0)["state"] == "running"

    resumed = cli(config)  # the same command: resumes version_0 from its last.ckpt
    assert capsys.readouterr().out.count(RESUME_LINE) == 1
    assert Path(resumed.trainer.log_dir).resolve() == v0.resolve() and not run_dir(in_tmp, 5).exists()
    status = read_status(v0)
    assert status["state"] == "complete" and status["global_step"] == 8
    assert_same_weights(weights(v0), weights(run_dir(in_tmp, 1)))  # = the run that never crashed
    assert metric_rows(v0) == metric_rows(run_dir(in_tmp, 1))


@pytest.mark.slow
def test_mid_epoch_checkpoint_in_a_fixed_folder_resumes_exactly(in_tmp, capsys):
    def config(folder, callbacks):
        cfg = tiny_config(max_epochs=2, callbacks=callbacks, logger=False, default_root_dir=str(in_tmp / folder))
        return write(in_tmp / f"{folder}.yaml", cfg)

    cli(config("reference", []), "--save_last_every_n_steps=3")
    crashing = config("fixed", [crash(7, in_tmp / "crashed")])
    with pytest.raises(RuntimeError, match="simulated crash"):
        cli(crashing, "--save_last_every_n_steps=3")
    last = in_tmp / "fixed" / LAST_CHECKPOINT
    assert torch.load(last, weights_only=True)["global_step"] == 6  # inside epoch 1 (steps 4-7)
    mark_killed(in_tmp / "fixed")
    capsys.readouterr()
    cli(crashing, "--save_last_every_n_steps=3")
    assert capsys.readouterr().out.count(f"{RESUME_LINE}{last}") == 1
    assert read_status(in_tmp / "fixed")["state"] == "complete"
    assert_same_weights(torch.load(last, weights_only=True)["state_dict"],
                        torch.load(in_tmp / "reference" / LAST_CHECKPOINT, weights_only=True)["state_dict"])


# --------------------------------------------------------- SIGKILL end to end
def neuroreg(cwd: Path, config: Path, *extra: str, background: bool = False):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_MODE": "disabled",
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, "-m", "neuroreg.cli", "fit", "--config", str(config), *extra]
    if background:
        return subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    proc = subprocess.run(args, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def kill_when_paused(proc: subprocess.Popen, marker: Path, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the fit never reached the pause (exit {proc.returncode}):\n{proc.communicate()[0]}")
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_sigkilled_fit_resumes_to_the_same_weights_and_metrics(tmp_path):
    ref = tmp_path / "reference"  # uninterrupted: 3 epochs of 4 steps
    assert RESUME_LINE not in neuroreg(ref, write(ref / "cfg.yaml", tiny_config(callbacks=[pause(10, ref / "never", seconds=0)])))
    reference = run_dir(ref)

    work = tmp_path / "killed"
    marker = work / "paused"
    config = write(work / "cfg.yaml", tiny_config(callbacks=[pause(10, marker)]))
    kill_when_paused(neuroreg(work, config, background=True), marker)
    killed = run_dir(work)
    assert marker.read_text() == "2"  # killed inside epoch 2 (steps 8-11), after its second step
    assert torch.load(killed / LAST_CHECKPOINT, weights_only=True)["global_step"] == 8  # the end of epoch 1
    assert read_status(killed)["state"] == "running"

    out = neuroreg(work, config)  # the identical command
    assert out.count(RESUME_LINE) == 1 and f"{RESUME_LINE}{Path('runs/tiny/version_0') / LAST_CHECKPOINT}" in out
    assert not run_dir(work, 1).exists() and read_status(killed)["state"] == "complete"
    assert_same_weights(weights(killed), weights(reference))
    rows, ref_rows = metric_rows(killed), metric_rows(reference)
    assert last_val(rows) == last_val(ref_rows) and float(last_val(rows)["val/accuracy"]) > 0
    assert rows == ref_rows  # the whole curve: rows logged before the checkpoint are kept, the rest re-logged
