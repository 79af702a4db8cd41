"""Where the runs of a fit config live, and which earlier run of it can be resumed.

The run dir is the trainer's log dir: ``save_dir/name/version_N`` of a CSV or
TensorBoard logger, or ``default_root_dir`` without a logger (:func:`run_layout`). A run
is resumable when its saved ``config.yaml`` equals the current config up to the keys
that do not change what the fit computes (:func:`comparable`), it is not complete, its
process is gone, and it holds ``last.ckpt`` (:func:`resumable`).

>>> comparable({"resume": False, "model": 1, "trainer": {"enable_progress_bar": True}})
{'model': 1, 'trainer': {}}
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from .checkpoints import LAST_CHECKPOINT
from .loggers import logger_class
from .status import process_alive, read_status

#: config keys that do not change what a fit computes (ignored when configs are compared)
NOT_COMPARED = ("resume", "save_last_every_n_steps", "ckpt_path")


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
    cls = logger_class(str(logger["class_path"]))
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


def resumable(run_dir: str | os.PathLike[str], config: dict, check_alive: bool = True) -> Path | None:
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
    if status.get("state") == "complete" or (check_alive and status.get("state") == "running" and process_alive(status)):
        return None
    try:
        previous = yaml.safe_load(saved.read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(previous, dict) or comparable(previous) != comparable(config):
        return None
    return last
