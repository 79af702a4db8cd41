"""Stages of a reproduction: content keys, claims (locks) and completion markers.

A stage owns one folder. It is *done* when ``done.json`` exists there (written
atomically, last). Before running, a process *claims* the stage by creating
``.claim`` with ``O_CREAT | O_EXCL`` — on a local or shared (NFS, SMB) output folder
this lets several processes, on one machine or many, split the stages between them.
The claiming process refreshes the claim's modification time while it works; a claim
whose process is gone (same host) or that has not been refreshed for ``stale_after``
seconds (any host) is taken over. A stage that raised leaves ``failed.json`` (with the
error) so other processes do not retry it in the same session; a new ``neuroreg repro``
invocation clears failure markers and retries.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from neuroreg.io import atomic_write

DONE = "done.json"
CLAIM = ".claim"
FAILED = "failed.json"


def write_json(path: Path, payload: Any) -> Path:
    """Write ``payload`` as JSON to ``path`` atomically (temp file + fsync + rename)."""
    atomic_write(path, lambda f: json.dump(payload, f, indent=2, sort_keys=True, default=str))
    return path


def _referenced_files(value: Any, base: Path, seen: set[Path]) -> Iterable[Path]:
    """YAML files named by string values inside a parsed config (e.g. a twin config)."""
    if isinstance(value, dict):
        for v in value.values():
            yield from _referenced_files(v, base, seen)
    elif isinstance(value, list):
        for v in value:
            yield from _referenced_files(v, base, seen)
    elif isinstance(value, str) and value.endswith((".yaml", ".yml")):
        from neuroreg.targets.twin import locate_config

        p = locate_config(value)
        if p.is_file() and p.resolve() not in seen:
            seen.add(p.resolve())
            yield p.resolve()
            try:
                yield from _referenced_files(yaml.safe_load(p.read_text()), p.parent, seen)
            except yaml.YAMLError:
                return


def config_digest(config: Path) -> str:
    """sha256 over a config's bytes, those of the configs its ``defaults`` list (recursively,
    see :func:`neuroreg.cli.config_chain`) and those of every YAML file any of them names,
    recursively. A config without ``defaults`` hashes as its bytes and its references."""
    from neuroreg.cli import DEFAULTS, config_chain

    h = hashlib.sha256()
    config = Path(config).resolve()
    chain = config_chain(config)  # its bases, then config itself
    h.update(config.read_bytes())
    for base in chain[:-1]:
        h.update(f"{DEFAULTS}:{base.name}".encode())
        h.update(base.read_bytes())
    seen = set(chain)
    refs: list[Path] = []
    for path in chain:
        loaded = yaml.safe_load(path.read_text())
        if isinstance(loaded, dict):
            loaded = {k: v for k, v in loaded.items() if k != DEFAULTS}
        refs.extend(_referenced_files(loaded, path.parent, seen))
    for ref in sorted(refs):
        h.update(ref.name.encode())
        h.update(ref.read_bytes())
    return h.hexdigest()


def content_key(*parts: Any) -> str:
    """sha256 of the JSON of ``parts`` and neuroreg's version (first 12 hex digits)."""
    from neuroreg import __version__

    text = json.dumps([__version__, *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class Stage:
    """One unit of work with a folder, dependencies and a function that does it.

    ``run(stage)`` does the work and returns a JSON-able dict, stored in ``done.json``
    together with the key and the wall time.
    """

    name: str
    kind: str
    key: str
    folder: Path
    run: Callable[[Stage], dict[str, Any]]
    deps: Sequence[Stage] = field(default_factory=tuple)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def done_path(self) -> Path:
        return self.folder / DONE

    def done(self) -> bool:
        return self.done_path.is_file()

    def failed(self) -> bool:
        return (self.folder / FAILED).is_file()

    def result(self) -> dict[str, Any]:
        """The ``done.json`` payload."""
        return json.loads(self.done_path.read_text())

    def ready(self) -> bool:
        return all(d.done() for d in self.deps)

    def blocked(self) -> bool:
        """A dependency failed, so this stage cannot run in this session."""
        return any(d.failed() or d.blocked() for d in self.deps)

    # ----------------------------------------------------------------- claims
    def _claim_path(self) -> Path:
        return self.folder / CLAIM

    def claimed_by_other(self, stale_after: float) -> bool:
        claim = self._claim_path()
        try:
            info = json.loads(claim.read_text())
            age = time.time() - claim.stat().st_mtime
        except (OSError, ValueError):
            return False
        if age > stale_after:
            return False
        from neuroreg.runs.status import pid_alive

        if info.get("host") == socket.gethostname() and not pid_alive(int(info.get("pid", -1))):
            return False
        return True

    def try_claim(self, stale_after: float) -> bool:
        """Create the claim; take over a stale one. True when this process owns the stage."""
        self.folder.mkdir(parents=True, exist_ok=True)
        claim = self._claim_path()
        me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
        for _ in range(2):
            try:
                fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if self.claimed_by_other(stale_after):
                    return False
                try:  # stale: remove and retry once
                    claim.unlink()
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            return not self.done()
        return False

    def release(self) -> None:
        try:
            self._claim_path().unlink()
        except FileNotFoundError:
            pass


class Heartbeat:
    """Touches a claim file every ``period`` seconds while the stage runs."""

    def __init__(self, path: Path, period: float):
        self.path, self.period = path, period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.period):
            try:
                os.utime(self.path)
            except OSError:
                return

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
