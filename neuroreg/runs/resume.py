"""Interrupt-safe fits: a killed ``neuroreg fit`` rerun with the same command resumes.

Every fit keeps ``<run dir>/checkpoints/last.ckpt``
(:class:`~neuroreg.runs.checkpoints.LastCheckpoint`: written at the end of every training
epoch and, optionally, every N optimizer steps) and a status file
``<run dir>/fit_status.json`` (:mod:`~neuroreg.runs.status`): ``"running"`` (with the
process id and host) while it fits, ``"complete"`` once the fit has ended normally. The
run dir (:mod:`~neuroreg.runs.folders`) is
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
  and are restored when training restarts
  (:class:`~neuroreg.runs.random_state.RandomState`), so dropout, VOneBlock
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

import json
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytorch_lightning as pl
import yaml
from pytorch_lightning.loggers import CSVLogger

from ..io import load_checkpoint
from .checkpoints import CHECKPOINT_KEY, LAST_CHECKPOINT, LastCheckpoint
from .folders import resumable, run_layout
from .metrics_csv import restore_rows
from .random_state import RandomState
from .status import write_status

#: environment variable carrying rank 0's decision to the other ranks it launches
DECISION_ENV = "NEUROREG_RESUME_DECISION"


def _rank() -> int:
    """This process's rank from the launcher's environment (0 when not launched as a rank)."""
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(key) is not None:
            return int(os.environ[key])
    return 0


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
    if not any(isinstance(lg, CSVLogger) for lg in trainer.loggers):
        return
    state = load_checkpoint(checkpoint, mmap=True).get(CHECKPOINT_KEY, {})
    restore_rows(trainer.loggers, state.get("csv_rows", {}))


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
