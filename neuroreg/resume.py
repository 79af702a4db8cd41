"""Interrupt-safe fits: a killed ``neuroreg fit`` rerun with the same command resumes.

Every fit keeps ``<run dir>/checkpoints/last.ckpt`` (:class:`LastCheckpoint`: written
at the end of every training epoch and, optionally, every N optimizer steps) and a
status file ``<run dir>/fit_status.json``: ``"running"`` (with the process id and
host) while it fits, ``"complete"`` once the fit has ended normally. The run dir is
the trainer's log dir: ``save_dir/name/version_N`` of a CSV or TensorBoard logger, or
``default_root_dir`` without a logger.

When ``fit`` is started without ``--ckpt_path`` (and with ``--resume=true``, the
default), :func:`plan_resume` looks for an earlier run of the same logger (same
``save_dir`` and ``name``; or the fixed ``version`` / the ``default_root_dir``
without a logger) whose saved ``config.yaml`` equals the current config, whose status
is not complete and whose process is gone, and that holds ``last.ckpt``. The newest
such run is reused: its version is given to the logger (logs, checkpoints and
``metrics.csv`` continue there; the ``metrics.csv`` rows logged up to the checkpoint
are kept) and the fit resumes from its ``last.ckpt``, printing one line
``neuroreg: resuming from <path>``. A finished run is never resumed (a rerun starts a
new version) and neither is a run of a changed config.

What makes the resumed fit equal to an uninterrupted one (``deterministic: true``):

- the model, optimizer, scheduler, loop counters and callback states are in the
  checkpoint (Lightning);
- the global random states (python, numpy, torch, CUDA) are in every checkpoint too
  and are restored when training restarts (:class:`RandomState`), so dropout, VOneBlock
  noise etc. continue identically; so is a stop requested by early stopping;
- the training order depends only on ``(seed, epoch)`` and the training loaders
  record their position within an epoch (:mod:`neuroreg.data.sampling`), so a
  restart from a mid-epoch ``last.ckpt`` (``--save_last_every_n_steps``) continues
  with exactly the batches not trained on yet; without it the fit restarts from the
  end of the last completed epoch and repeats the partial epoch identically.

Limits: the random state restored is that of the process that wrote the checkpoint
(rank 0), so under DDP only single-process fits resume bit-exactly; randomness inside
DataLoader worker processes (none in neuroreg's datasets) does not follow a
mid-epoch restart; Lightning logs a step's training metrics after the checkpoint
hooks, so after a restart from a mid-epoch ``last.ckpt`` that step's training row is
missing from ``metrics.csv`` (everything else is logged as in an uninterrupted run); a
logger other than CSV/TensorBoard has no run folder to find again (pass
``--ckpt_path``).
"""

from __future__ import annotations

import csv
import importlib
import json
import os
import random
import socket
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.callbacks import Callback, Checkpoint, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

#: status file in the run dir
STATUS_FILE = "fit_status.json"
#: the resumable checkpoint, relative to the run dir
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"
#: key of neuroreg's resume state inside a checkpoint
CHECKPOINT_KEY = "neuroreg_resume"
#: environment variable carrying rank 0's decision to the other ranks it launches
DECISION_ENV = "NEUROREG_RESUME_DECISION"
#: config keys that do not change what a fit computes (ignored when configs are compared)
NOT_COMPARED = ("resume", "save_last_every_n_steps", "ckpt_path")


# --------------------------------------------------------------- random state
def random_state() -> dict[str, Any]:
    """The global random states of python, numpy, torch (and CUDA when initialised).

    Returns:
        ``{"python", "numpy", "torch", "cuda"}`` made of tensors, ints, floats and
        strings only (loadable with ``torch.load(weights_only=True)``).
    """
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
    }


def set_random_state(state: dict[str, Any]) -> None:
    """Restore what :func:`random_state` returned.

    Args:
        state: the saved states.

    Raises:
        KeyError: a state is missing.
    """
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    nps = state["numpy"]
    np.random.set_state((nps["name"], nps["keys"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"], nps["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    cuda = list(state.get("cuda", []))
    if cuda and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            warnings.warn(f"checkpoint holds the random state of {len(cuda)} CUDA devices, found {torch.cuda.device_count()}; not restored",
                          stacklevel=2)


class RandomState(Callback):
    """Carries the global random states through checkpoints.

    Every checkpoint stores the states at the moment it is written; when training
    restarts from a checkpoint they are restored at ``on_train_start`` (after the
    sanity check, which an uninterrupted run did not run at that point).
    """

    def __init__(self):
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return random_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending is not None:
            set_random_state(self._pending)
            self._pending = None


# ------------------------------------------------------------- last checkpoint
def _csv_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class LastCheckpoint(Checkpoint):
    """Keeps ``<run dir>/checkpoints/last.ckpt`` of a fit.

    Written at the end of every training epoch (after validation, early stopping and
    the other checkpoint callbacks) and, with ``every_n_train_steps``, every that many
    optimizer steps within an epoch. Every checkpoint written during the fit also
    stores whether a stop was requested and how many rows each CSV logger had written
    (under ``neuroreg_resume``), restored on resume. A ``ModelCheckpoint`` whose own
    ``save_last`` would write into the same folder is told not to (the two files would
    collide).

    Args:
        every_n_train_steps: also write within epochs, every this many steps
            (``None``: at epoch ends only).

    Raises:
        ValueError: ``every_n_train_steps`` < 1.
    """

    def __init__(self, every_n_train_steps: int | None = None):
        if every_n_train_steps is not None and every_n_train_steps < 1:
            raise ValueError(f"save_last_every_n_steps: expected >= 1 or null, found {every_n_train_steps}")
        self.every_n_train_steps = every_n_train_steps
        self.path: Path | None = None
        self._step_saved = -1
        self._should_stop = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self.path = Path(trainer.log_dir or trainer.default_root_dir) / LAST_CHECKPOINT
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.save_last and cb.dirpath and Path(cb.dirpath).resolve() == self.path.parent.resolve():
                cb.save_last = False

    def _save(self, trainer: pl.Trainer) -> None:
        if self.path is None or trainer.sanity_checking or trainer.fast_dev_run:
            return
        trainer.save_checkpoint(self.path, weights_only=False)
        self._step_saved = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int) -> None:
        n = self.every_n_train_steps
        if not n or trainer.global_step % n or trainer.global_step == self._step_saved:
            return
        if (batch_idx + 1) % trainer.accumulate_grad_batches:
            return  # never between the batches of one accumulated step
        self._save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        rows = {}
        for i, logger in enumerate(trainer.loggers):
            if isinstance(logger, CSVLogger) and trainer.is_global_zero:
                logger.save()  # flush, so the file holds everything logged so far
                rows[i] = len(_csv_rows(Path(logger.experiment.metrics_file_path)))
        checkpoint[CHECKPOINT_KEY] = {"should_stop": bool(trainer.should_stop), "csv_rows": rows}

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._should_stop = bool(checkpoint.get(CHECKPOINT_KEY, {}).get("should_stop", False))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._should_stop:
            trainer.should_stop = True
            self._should_stop = False


# ------------------------------------------------------------ run directories
def _rank() -> int:
    """This process's rank from the launcher's environment (0 when not launched as a rank)."""
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(key) is not None:
            return int(os.environ[key])
    return 0


@dataclass(frozen=True)
class RunLayout:
    """Where the runs of a config live.

    Attributes:
        root: the folder of ``version_N`` runs (``versioned``), else the run dir itself.
        versioned: runs get the next free ``version_N``.
        sub_dir: a TensorBoard ``sub_dir`` inside each version.
    """

    root: Path
    versioned: bool
    sub_dir: str | None = None

    def run_dir(self, version: int | str | None) -> Path:
        """The run dir of ``version`` (ignored when not versioned)."""
        if not self.versioned:
            return self.root
        path = self.root / (version if isinstance(version, str) else f"version_{version}")
        return path / self.sub_dir if self.sub_dir else path

    def versions(self) -> list[int]:
        """Existing ``version_N`` numbers, newest first."""
        if not self.versioned or not self.root.is_dir():
            return []
        found = [int(p.name[8:]) for p in self.root.iterdir() if p.is_dir() and p.name.startswith("version_") and p.name[8:].isdigit()]
        return sorted(found, reverse=True)


def run_layout(trainer_cfg) -> RunLayout | None:
    """The run layout of a ``trainer`` config, or ``None`` when its runs cannot be found again.

    Args:
        trainer_cfg: the ``trainer`` section of a parsed fit config.

    Returns:
        A fixed run dir for no logger (``default_root_dir``) or a CSV/TensorBoard logger
        with a fixed ``version``; ``version_N`` folders for one without; for a list of
        loggers, the first one's fixed run dir (the trainer logs there); ``None`` for
        other loggers and for lists whose first logger has no fixed version.
    """
    from jsonargparse import Namespace

    logger = trainer_cfg.get("logger")
    default_root = Path(trainer_cfg.get("default_root_dir") or os.getcwd())
    if logger is False or logger is None:
        return RunLayout(default_root, versioned=False)
    if isinstance(logger, list) and logger:
        # several loggers: the trainer's log dir is the first one's; found again only when fixed
        first = run_layout({"logger": logger[0], "default_root_dir": trainer_cfg.get("default_root_dir")})
        return first if first is not None and not first.versioned else None
    if not isinstance(logger, Namespace) or "class_path" not in logger:
        return None
    module, _, attr = str(logger["class_path"]).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError):
        return None
    if not (isinstance(cls, type) and issubclass(cls, (CSVLogger, TensorBoardLogger))):
        return None
    args = logger.get("init_args") or Namespace()
    save_dir = Path(args.get("save_dir") or default_root)
    name = args.get("name", "lightning_logs")
    root = save_dir / name if name else save_dir
    version = args.get("version")
    sub_dir = args.get("sub_dir") if issubclass(cls, TensorBoardLogger) else None
    if version is None:
        return RunLayout(root, versioned=True, sub_dir=sub_dir)
    fixed = root / (version if isinstance(version, str) else f"version_{version}")
    return RunLayout(fixed / sub_dir if sub_dir else fixed, versioned=False)


def comparable(config: dict) -> dict:
    """A fit config without the keys that do not change what the fit computes.

    Drops ``resume``, ``save_last_every_n_steps``, ``ckpt_path``, ``trainer.enable_progress_bar``
    and the logger's ``version`` (the version is where a run lives, set by resuming).
    """
    out = {k: v for k, v in config.items() if k not in NOT_COMPARED}
    trainer = dict(out.get("trainer") or {})
    logger = trainer.get("logger")
    if isinstance(logger, dict) and isinstance(logger.get("init_args"), dict):
        trainer["logger"] = {**logger, "init_args": {k: v for k, v in logger["init_args"].items() if k != "version"}}
    trainer.pop("enable_progress_bar", None)
    out["trainer"] = trainer
    return out


def read_status(run_dir: Path) -> dict | None:
    """The run's ``fit_status.json``, or ``None`` when absent or unreadable."""
    try:
        status = json.loads((Path(run_dir) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None


def write_status(run_dir: Path, status: dict) -> Path:
    """Write ``fit_status.json`` atomically (temp file + fsync + rename).

    Returns:
        The status file.
    """
    from neuroreg.io import atomic_write

    path = Path(run_dir) / STATUS_FILE
    atomic_write(path, lambda f: json.dump(status, f, indent=2))
    return path


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a process of another user counts)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


def _alive(status: dict) -> bool:
    """Whether the process that wrote a "running" status still runs (on this host; another host: assumed gone)."""
    if status.get("host") != socket.gethostname():
        return False
    try:
        return pid_alive(int(status.get("pid", -1)))
    except ValueError:
        return False


def resumable(run_dir: Path, config: dict, check_alive: bool = True) -> Path | None:
    """``run_dir``'s ``last.ckpt`` when that run is an unfinished run of ``config``, else ``None``.

    Args:
        run_dir: a run dir.
        config: the current fit config (as saved to ``config.yaml``).
        check_alive: skip a run whose process still runs.
    """
    run_dir = Path(run_dir)
    last = run_dir / LAST_CHECKPOINT
    saved = run_dir / "config.yaml"
    if not last.is_file() or not saved.is_file():
        return None
    status = read_status(run_dir) or {}
    if status.get("state") == "complete" or (check_alive and status.get("state") == "running" and _alive(status)):
        return None
    try:
        previous = yaml.safe_load(saved.read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(previous, dict) or comparable(previous) != comparable(config):
        return None
    return last


@dataclass
class ResumePlan:
    """What :func:`plan_resume` decided for one fit.

    Attributes:
        checkpoint: the ``last.ckpt`` to resume from (``None``: a fresh fit).
        version: the logger version of the resumed run (``None``: unchanged).
        every_n_steps: ``--save_last_every_n_steps``.
        run_dir: the run dir, once ``before_fit`` has run (``None``: no resume bookkeeping).
    """

    checkpoint: Path | None = None
    version: int | str | None = None
    every_n_steps: int | None = None
    run_dir: Path | None = None

    def before_fit(self, trainer: pl.Trainer, fit_args) -> None:
        """Add the callbacks, mark the run as running, and point ``fit`` at the checkpoint.

        Nothing is added to a ``fast_dev_run``; without checkpointing
        (``enable_checkpointing: false``) only :class:`RandomState` is.

        Args:
            trainer: the instantiated trainer.
            fit_args: the instantiated ``fit`` arguments (their ``ckpt_path`` is set).
        """
        if trainer.fast_dev_run:
            return
        trainer.callbacks.append(RandomState())
        if not trainer.checkpoint_callbacks:
            return  # enable_checkpointing: false
        trainer.callbacks.append(LastCheckpoint(self.every_n_steps))
        self.run_dir = run_dir = Path(trainer.log_dir or trainer.default_root_dir)  # no process group yet: no collective call
        if self.checkpoint is not None:
            fit_args["ckpt_path"] = str(self.checkpoint)
            if _rank() == 0:
                _keep_csv_rows(trainer, self.checkpoint)
                print(f"neuroreg: resuming from {self.checkpoint}", flush=True)
        if _rank() == 0:
            os.environ[DECISION_ENV] = json.dumps({"checkpoint": None if self.checkpoint is None else str(self.checkpoint),
                                                   "version": self.version})
            write_status(run_dir, {"state": "running", "pid": os.getpid(), "host": socket.gethostname(),
                                   "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                   "resumed_from": None if self.checkpoint is None else str(self.checkpoint)})

    def after_fit(self, trainer: pl.Trainer) -> None:
        """Mark the run complete when the fit ended normally (rank 0)."""
        os.environ.pop(DECISION_ENV, None)
        from pytorch_lightning.trainer.states import TrainerStatus

        if self.run_dir is None or not trainer.is_global_zero:
            return
        if trainer.state.status != TrainerStatus.FINISHED or trainer.interrupted:
            return
        run_dir = self.run_dir
        last = run_dir / LAST_CHECKPOINT
        write_status(run_dir, {
            "state": "complete", "host": socket.gethostname(),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "epochs": trainer.current_epoch, "global_step": trainer.global_step,
            "last_checkpoint": str(last) if last.is_file() else None,
        })


def _keep_csv_rows(trainer: pl.Trainer, checkpoint: Path) -> None:
    """Keep the ``metrics.csv`` rows logged up to ``checkpoint`` (a CSV logger empties the file when it starts)."""
    loggers = [(i, lg) for i, lg in enumerate(trainer.loggers) if isinstance(lg, CSVLogger)]
    if not loggers:
        return
    state = torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True).get(CHECKPOINT_KEY, {})
    counts = state.get("csv_rows", {})
    for i, logger in loggers:
        path = Path(logger.log_dir) / "metrics.csv"
        rows = _csv_rows(path)[: int(counts.get(i, 0))]
        experiment = logger.experiment  # created now: it removes the old file
        for row in rows:  # the values as written (strings), so the file is unchanged
            step = int(float(row.pop("step"))) if row.get("step") not in (None, "") else None
            experiment.log_metrics({k: v for k, v in row.items() if v not in (None, "")}, step)
        experiment.save()


def plan_resume(parser, fit_cfg) -> ResumePlan:
    """Decide whether a ``fit`` resumes an earlier run; set the logger version when it does.

    Args:
        parser: the ``fit`` subcommand's parser (dumps the config like the saved ``config.yaml``).
        fit_cfg: the parsed ``fit`` config (its ``trainer.logger.init_args.version`` is
            set to the resumed run's version).

    Returns:
        The plan; its ``before_fit`` / ``after_fit`` run around ``trainer.fit``.
    """
    plan = ResumePlan(every_n_steps=fit_cfg.get("save_last_every_n_steps"))
    trainer_cfg = fit_cfg["trainer"]
    if not fit_cfg.get("resume", True) or fit_cfg.get("ckpt_path") or trainer_cfg.get("fast_dev_run") or trainer_cfg.get("enable_checkpointing") is False:
        return plan
    layout = run_layout(trainer_cfg)
    if layout is None:
        return plan
    if _rank() != 0 and DECISION_ENV in os.environ:  # a rank launched by rank 0 follows its decision
        decision = json.loads(os.environ[DECISION_ENV])
        if decision.get("checkpoint") is not None:
            plan.checkpoint = Path(decision["checkpoint"])
            plan.version = decision.get("version")
            if plan.version is not None:
                fit_cfg["trainer.logger.init_args.version"] = plan.version
        return plan
    config = yaml.safe_load(parser.dump(fit_cfg, skip_none=False))
    check_alive = _rank() == 0
    if not layout.versioned:
        plan.checkpoint = resumable(layout.root, config, check_alive)
        return plan
    for version in layout.versions():
        last = resumable(layout.run_dir(version), config, check_alive)
        if last is not None:
            plan.checkpoint, plan.version = last, version
            fit_cfg["trainer.logger.init_args.version"] = version
            break
    return plan
