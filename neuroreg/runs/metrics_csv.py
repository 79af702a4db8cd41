"""A run's ``metrics.csv`` (Lightning's CSV logger layout): the one place that rewrites it.

Two things rewrite the file after Lightning has written it:

- a resumed fit keeps the rows logged up to its checkpoint (:func:`restore_rows`; a CSV
  logger empties the file when it starts, so the rows are logged again through it);
- a standalone evaluation appends its scalars as one row (:func:`append_row`).

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "metrics.csv"
>>> append_row(path, {"step": 3, "val/loss": 0.5})
>>> append_row(path, {"step": 4, "eval/accuracy": 0.75})
>>> path.read_text().splitlines()
['eval/accuracy,step,val/loss', ',3,0.5', '0.75,4,']
>>> read_rows(path)[1]["eval/accuracy"]
'0.75'
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger

from neuroreg.io import atomic_write

#: the file a CSV logger writes into its version directory
METRICS_FILE = "metrics.csv"


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    if not path.is_file():
        return [], []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def read_rows(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The rows of a ``metrics.csv`` as written (strings; ``""`` where blank); ``[]`` when absent."""
    return _read(Path(path))[1]


def append_row(path: str | os.PathLike[str], row: Mapping[str, Any]) -> None:
    """Append ``row`` to a Lightning-style ``metrics.csv`` atomically.

    The header becomes the sorted union of the old header and ``row``'s keys (as
    Lightning's CSV writer does); old rows keep their values, blank in new columns. The
    file is rewritten to a temporary file and renamed over the old one
    (:func:`neuroreg.io.atomic_write`).
    """
    path = Path(path)
    fields, rows = _read(path)
    fields = sorted(set(fields) | set(row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, restval="")
    writer.writeheader()
    writer.writerows(rows)
    writer.writerow(dict(row))
    atomic_write(path, lambda f: f.write(buf.getvalue()), mode="w")


def restore_rows(loggers: Sequence[Any], counts: Mapping[int, int]) -> None:
    """Keep the first ``counts[i]`` rows of the ``metrics.csv`` of each CSV logger ``loggers[i]``.

    Call before the logger's experiment exists: creating it removes the old file, and the
    kept rows are logged again through it (the values as written, strings), so the file
    and the logger's own record of its columns continue as in an uninterrupted run.

    Args:
        loggers: the trainer's loggers (others than CSV loggers are skipped).
        counts: rows to keep per logger index (missing: none).
    """
    for i, logger in enumerate(loggers):
        if not isinstance(logger, CSVLogger):
            continue
        rows = read_rows(Path(logger.log_dir) / METRICS_FILE)[: int(counts.get(i, 0))]
        experiment = logger.experiment  # created now: it removes the old file
        for row in rows:
            step = int(float(row.pop("step"))) if row.get("step") not in (None, "") else None
            experiment.log_metrics({k: v for k, v in row.items() if v not in (None, "")}, step)
        experiment.save()
