"""Log a standalone evaluation to the loggers its run was trained with.

At the start of ``fit``, :class:`RecordLoggers` (added by ``neuroreg fit``) writes
``RUN/loggers.json`` next to the run's ``config.yaml`` (both go to ``trainer.log_dir``)::

    {"schema": 1, "loggers": [
      {"class_path": "pytorch_lightning.loggers.csv_logs.CSVLogger", "name": "quickstart",
       "version": 0, "save_dir": "/abs/runs", "log_dir": ".", "entity": null},
      {"class_path": "pytorch_lightning.loggers.wandb.WandbLogger", "name": "my-project",
       "version": "3kx9q2ab", "save_dir": "/abs/runs", "log_dir": null, "entity": "lab"}]}

``log_dir`` is relative to the record's directory (so a moved run tree still resolves);
``version`` is the CSV / TensorBoard version or the wandb run id, known only once the
fit has started (hence a record rather than the config). :func:`resolve_targets` turns
the record into targets: a CSV logger gets a row appended to its ``metrics.csv``
(:func:`~neuroreg.runs.metrics_csv.append_row`: in Lightning's layout, atomically, since
Lightning's own writer would delete an existing file), a TensorBoard logger a new event
file in its version directory, a wandb logger its run resumed by id. A run from before the record falls back to ``config.yaml``'s
``trainer.logger``: the first CSV / TensorBoard logger's version directory is the run
directory; a wandb run id is only found there if the config names it.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from neuroreg.io import atomic_write, yaml_problem

from .metrics_csv import METRICS_FILE, append_row

RECORD_NAME = "loggers.json"
SCHEMA = 1


class RunLogError(ValueError):
    """A ``loggers.json`` record or a config's ``trainer.logger`` section that cannot be read."""


# ---------------------------------------------------------------------------- record


def logger_entry(logger: Any, run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The record entry of one Lightning logger (call after ``fit`` has set the loggers up).

    Args:
        logger: a Lightning logger; its experiment must exist (wandb: the run id).
        run_dir: the directory the record goes to; ``log_dir`` is stored relative to it.

    Returns:
        ``{"class_path", "name", "version", "save_dir", "log_dir", "entity"}``.
    """
    cls = type(logger)
    log_dir = getattr(logger, "log_dir", None)
    save_dir = logger.save_dir
    experiment = getattr(logger, "experiment", None)
    entity = getattr(experiment, "entity", None)
    version = logger.version
    return {
        "class_path": f"{cls.__module__}.{cls.__qualname__}",
        "name": logger.name,
        "version": version if isinstance(version, (int, str)) or version is None else str(version),
        "save_dir": None if save_dir is None else str(Path(save_dir).resolve()),
        "log_dir": None if log_dir is None else os.path.relpath(Path(log_dir).resolve(), Path(run_dir).resolve()),
        "entity": entity if isinstance(entity, str) and entity else None,
    }


def write_logger_record(loggers: Sequence[Any], run_dir: str | os.PathLike[str]) -> Path:
    """Write ``RUN/loggers.json`` for ``loggers`` atomically (temp file + rename).

    Returns:
        The record's path.
    """
    record = {"schema": SCHEMA, "loggers": [logger_entry(lg, run_dir) for lg in loggers]}
    path = Path(run_dir) / RECORD_NAME
    atomic_write(path, lambda f: f.write(json.dumps(record, indent=2) + "\n"))
    return path


class RecordLoggers(pl.Callback):
    """Write ``loggers.json`` into the run directory (``trainer.log_dir``) when ``fit`` starts.

    Runs in the ``setup`` hook, after Lightning has created every logger's experiment (so a
    wandb run id is known); only global rank 0 writes. Nothing is written under
    ``fast_dev_run`` (Lightning then replaces the loggers by a dummy).
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Write the record for ``stage == "fit"``."""
        if stage != "fit" or trainer.fast_dev_run:
            return
        run_dir = trainer.log_dir  # collective call: every rank
        if trainer.is_global_zero and run_dir is not None:
            write_logger_record(trainer.loggers, run_dir)


def read_logger_record(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read and check a ``loggers.json``.

    Raises:
        RunLogError: unreadable JSON, another schema, or an entry without a
            ``class_path`` (the message names the file and field).
    """
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RunLogError(f"{path}: cannot read the logger record ({err})") from err
    if not isinstance(record, dict) or record.get("schema") != SCHEMA or not isinstance(record.get("loggers"), list):
        found = {k: record[k] for k in ("schema",) if k in record} if isinstance(record, dict) else type(record).__name__
        raise RunLogError(f"{path}: expected {{'schema': {SCHEMA}, 'loggers': [...]}}, found {found}")
    for i, entry in enumerate(record["loggers"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("class_path"), str):
            raise RunLogError(f"{path}: field 'loggers[{i}]': expected a mapping with a 'class_path' string, found {entry!r}")
    return record["loggers"]


# ---------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class CsvTarget:
    """A CSV logger's version directory: scalars are appended to its ``metrics.csv``."""

    log_dir: Path

    def describe(self) -> str:
        return f"CSV {self.log_dir / METRICS_FILE}"

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        if not self.log_dir.is_dir():
            raise FileNotFoundError(f"the CSV logger's version directory {self.log_dir} does not exist")
        append_row(self.log_dir / METRICS_FILE, {"step": step, **metrics})


@dataclass(frozen=True)
class TensorBoardTarget:
    """A TensorBoard logger's version directory: a new event file is written into it."""

    log_dir: Path

    def describe(self) -> str:
        return f"TensorBoard {self.log_dir}"

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        from pytorch_lightning.loggers import TensorBoardLogger

        if not self.log_dir.is_dir():
            raise FileNotFoundError(f"the TensorBoard logger's version directory {self.log_dir} does not exist")
        logger = TensorBoardLogger(save_dir=self.log_dir.parent.parent, name=self.log_dir.parent.name,
                                   version=self.log_dir.name)
        logger.log_metrics(dict(metrics), step=step)
        logger.finalize("success")


@dataclass(frozen=True)
class WandbTarget:
    """A wandb run, resumed by id (``resume="allow"``); finished again after logging."""

    run_id: str
    project: str | None
    entity: str | None
    save_dir: str | None

    def describe(self) -> str:
        return f"wandb run {self.run_id} (project {self.project})"

    def make_logger(self) -> Any:
        """The :class:`~pytorch_lightning.loggers.WandbLogger` that resumes the run."""
        from pytorch_lightning.loggers import WandbLogger

        kwargs: dict[str, Any] = {"id": self.run_id, "project": self.project}
        if self.entity:
            kwargs["entity"] = self.entity
        if self.save_dir and Path(self.save_dir).is_dir():
            kwargs["save_dir"] = self.save_dir
        return WandbLogger(**kwargs)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        import wandb

        active = wandb.run
        if active is not None and active.id != self.run_id:
            raise RuntimeError(
                f"another wandb run ({active.id}) is active in this process; finish it to log to run {self.run_id}"
            )
        logger = self.make_logger()
        logger.log_metrics(dict(metrics), step=step)
        if active is None:
            logger.experiment.finish()


def logger_class(class_path: str) -> type | None:
    """The class a ``class_path`` (``"package.module.Name"``) names; ``None`` when it cannot be imported."""
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def _target(entry: Mapping[str, Any], base: Path, where: str) -> Any:
    """The target of one record entry, or a string saying why there is none."""
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger, WandbLogger

    cls = logger_class(entry["class_path"])
    if cls is None:
        return f"{where}: cannot import logger class {entry['class_path']}"
    if issubclass(cls, (CSVLogger, TensorBoardLogger)):
        if entry.get("log_dir") is None:
            return f"{where}: {cls.__name__} entry without a log_dir"
        log_dir = (base / entry["log_dir"]).resolve()
        return CsvTarget(log_dir) if issubclass(cls, CSVLogger) else TensorBoardTarget(log_dir)
    if issubclass(cls, WandbLogger):
        if not entry.get("version"):
            return (f"{where}: the wandb run cannot be found: its id is not known (a run from before "
                    f"{RECORD_NAME} whose config names no id / version); log it by hand or pass --no-log")
        return WandbTarget(str(entry["version"]), entry.get("name"), entry.get("entity"), entry.get("save_dir"))
    return f"{where}: logging to {cls.__name__} is not supported (CSV, TensorBoard and wandb are)"


def _entries_from_config(config: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Record entries recovered from ``config.yaml``'s ``trainer.logger`` (runs without a record)."""
    import yaml
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger, WandbLogger

    try:
        cfg = yaml.safe_load(config.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise RunLogError(f"{config}: {yaml_problem(err)}") from err
    section = (cfg or {}).get("trainer", {}).get("logger") if isinstance(cfg, dict) else None
    if section is False:
        return [], [f"{config}: the run was trained without a logger (trainer.logger: false)"]
    if section is None or section is True:
        note = (f"{config}: field 'trainer.logger' is {section!r} (Lightning's default logger); which logger "
                f"ran is not recorded and there is no {RECORD_NAME}")
        return [], [note]
    items = section if isinstance(section, list) else [section]
    run_dir = config.parent
    entries, notes = [], []
    for i, item in enumerate(items):
        where = f"{config}: field 'trainer.logger[{i}]'"
        if not isinstance(item, dict) or not isinstance(item.get("class_path"), str):
            notes.append(f"{where}: expected a mapping with class_path / init_args, found {item!r}")
            continue
        init = item.get("init_args") or {}
        cls = logger_class(item["class_path"])
        if cls is not None and issubclass(cls, (CSVLogger, TensorBoardLogger)):
            name = init.get("name", "lightning_logs")
            if i != 0 or (name and run_dir.parent.name != str(name)):
                notes.append(f"{where}: the version directory of this {cls.__name__} is unknown (only the first "
                             f"logger's version directory holds config.yaml) and there is no {RECORD_NAME}")
                continue
            entries.append({"class_path": item["class_path"], "name": name, "version": run_dir.name, "log_dir": ".",
                            "where": where})
        elif cls is not None and issubclass(cls, WandbLogger):
            entries.append({"class_path": item["class_path"], "name": init.get("project"),
                            "version": init.get("id") or init.get("version"), "entity": init.get("entity"),
                            "save_dir": init.get("save_dir"), "where": where})
        else:
            entries.append({"class_path": item["class_path"], "where": where})
    return entries, notes


def resolve_targets(config: str | os.PathLike[str]) -> tuple[list[Any], list[str]]:
    """The run's loggers as log targets, from ``loggers.json`` next to ``config`` (else ``config``).

    Args:
        config: the run's ``config.yaml``.

    Returns:
        ``(targets, notes)``: objects with ``describe()`` and ``log(metrics, step)``, and a
        message for each logger that cannot be logged to (e.g. a wandb run without a known
        id).

    Raises:
        RunLogError: an unreadable ``loggers.json`` or config.
    """
    config = Path(config)
    record = config.parent / RECORD_NAME
    if record.is_file():
        entries, notes = read_logger_record(record), []
        entries = [{**e, "where": f"{record}: field 'loggers[{i}]'"} for i, e in enumerate(entries)]
    else:
        entries, notes = _entries_from_config(config)
    targets = []
    for entry in entries:
        target = _target(entry, config.parent, entry["where"])
        (notes if isinstance(target, str) else targets).append(target)
    return targets, notes


def log_to_targets(targets: Sequence[Any], metrics: Mapping[str, float], step: int) -> list[dict[str, Any]]:
    """Log ``metrics`` at ``step`` to each target; a failing target does not stop the others.

    Returns:
        One ``{"target": description, "logged": bool, "detail": str}`` per target.
    """
    out = []
    for target in targets:
        try:
            target.log(metrics, step)
            out.append({"target": target.describe(), "logged": True, "detail": f"{len(metrics)} scalars at step {step}"})
        except Exception as err:  # a logger's own failure (network, missing dir) is reported, not raised
            out.append({"target": target.describe(), "logged": False, "detail": f"{type(err).__name__}: {err}"})
    return out
