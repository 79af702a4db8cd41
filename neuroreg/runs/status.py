"""``<run dir>/fit_status.json`` and the probe that tells whether its process still runs.

The status is ``{"state": "running", "pid", "host", "started", "resumed_from"}`` while a
fit runs and ``{"state": "complete", "host", "finished", "epochs", "global_step",
"last_checkpoint"}`` once it has ended normally (written by
:class:`~neuroreg.runs.resume.ResumePlan`); ``neuroreg repro`` marks a dead fit
``"interrupted"``.

>>> import os, tempfile
>>> run = tempfile.mkdtemp()
>>> _ = write_status(run, {"state": "running", "pid": os.getpid(), "host": "elsewhere"})
>>> read_status(run)["state"], pid_alive(os.getpid()), process_alive(read_status(run))
('running', True, False)
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from neuroreg.io import atomic_write

#: status file in the run dir
STATUS_FILE = "fit_status.json"


def read_status(run_dir: str | os.PathLike[str]) -> dict | None:
    """The run's ``fit_status.json``, or ``None`` when absent or unreadable."""
    try:
        status = json.loads((Path(run_dir) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None


def write_status(run_dir: str | os.PathLike[str], status: dict) -> Path:
    """Write ``fit_status.json`` atomically (temp file + fsync + rename).

    Returns:
        The status file.
    """
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


def process_alive(status: dict) -> bool:
    """Whether the process that wrote ``status`` (its ``host`` and ``pid``) still runs.

    A process on another host is assumed gone (it cannot be probed from here).
    """
    if status.get("host") != socket.gethostname():
        return False
    try:
        return pid_alive(int(status.get("pid", -1)))
    except ValueError:
        return False
