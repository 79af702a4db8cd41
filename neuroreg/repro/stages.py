"""Stages of a reproduction: content keys and completion markers.

A stage owns one folder. It is *done* when ``done.json`` exists there (written
atomically, last), so running a stage again is a no-op and an interrupted one is
simply run again. Which process runs a stage, and when, is the launcher's business
(:mod:`neuroreg.repro.launchers`: a job scheduler, submitit's local executor or
SLURM); a stage's folder is written by one job at a time. A stage that raised leaves
``failed.json`` (the error and traceback, for the console and the logs); the next run
of the stage removes it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from neuroreg.io import atomic_write

DONE = "done.json"
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
        """Every stage it needs is done."""
        return all(d.done() for d in self.deps)
