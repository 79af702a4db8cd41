"""``<run dir>/checkpoints/last.ckpt``: the checkpoint a killed fit resumes from.

:class:`LastCheckpoint` writes it at the end of every training epoch and, optionally,
every N optimizer steps; every checkpoint written during the fit also records whether a
stop was requested and how many ``metrics.csv`` rows each CSV logger had written (under
:data:`CHECKPOINT_KEY`), so a resumed fit stops where the original would have and keeps
exactly the rows logged up to the checkpoint (:func:`~neuroreg.runs.metrics_csv.restore_rows`).

:class:`AtomicCheckpointIO` is the checkpoint writer of every ``neuroreg fit``: each
checkpoint file (``last.ckpt``, a ``ModelCheckpoint``'s) is written whole or not at all,
so a full disk leaves the previous file, never a truncated one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Checkpoint, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.plugins.io import TorchCheckpointIO

from neuroreg.io import atomic_path

from .metrics_csv import read_rows

#: the resumable checkpoint, relative to the run dir
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"
#: key of neuroreg's resume state inside a checkpoint
CHECKPOINT_KEY = "neuroreg_resume"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``torch.save`` writer, through :func:`neuroreg.io.atomic_path`: the checkpoint
    goes to a temporary file next to ``path``, is fsynced and renamed onto it.

    Raises:
        OSError: the file cannot be written (e.g. ``ENOSPC``); the message names ``path``,
            and ``path`` is left as it was.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if "://" in str(path):  # a remote file system: its own semantics
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


def use_atomic_checkpoints(trainer: pl.Trainer) -> None:
    """Make ``trainer`` write its checkpoints with :class:`AtomicCheckpointIO` (unless a
    checkpoint plugin of another kind was configured)."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()


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
                rows[i] = len(read_rows(Path(logger.experiment.metrics_file_path)))
        checkpoint[CHECKPOINT_KEY] = {"should_stop": bool(trainer.should_stop), "csv_rows": rows}

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._should_stop = bool(checkpoint.get(CHECKPOINT_KEY, {}).get("should_stop", False))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._should_stop:
            trainer.should_stop = True
            self._should_stop = False
