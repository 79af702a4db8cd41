"""Data set manifests: one YAML file per public data set under ``data_manifests/``.

Schema (every key is checked by :func:`load_manifest`)::

    name: sensorium2022-21067-10-18      # must equal the file's stem
    title: free text
    kind: neural | images                # images: a classification image set (no reader)
    species: mouse | macaque | none
    area: V1                             # free text (V1, V4, IT, VISp, ...; "none" for images)
    modality: two-photon | electrophysiology | images
    files:                               # at least one
      - name: local file name (no path separators)
        role: data                       # the reader's keyword argument receiving the path
        url: https://...
        sha256: 64 hex digits | null
        sha256_status: confirmed | unconfirmed
        md5: 32 hex digits               # optional, published by the source
        sha1: 40 hex digits              # optional, published by the source
        git_blob: 40 hex digits          # optional, git blob id at the source's commit (see below)
        size: bytes | null
        optional: true                   # optional (default false): the reader works without it
        format: sensorium-zip | static-hdf5 | pickle | zip | nwb1 | nwb2 | netcdf4 | csv | tar.gz | npz
        note: free text                  # optional
    license: {id: CC-BY-NC-ND-4.0, url: ..., non_commercial: true | false | null (unconfirmed)}
    citation: free text
    reader:                              # null for kind: images
      function: neuroreg.data.readers.<module>.<function>
      options: {...}                     # keyword arguments of that function
    split: free text describing the split convention

``sha256: null`` must come with ``sha256_status: unconfirmed``: fetching such a file
checks it against a published md5 / sha1 / git blob id when there is one, records the
sha256 it saw (see :mod:`neuroreg.data.fetch`) and warns. ``git_blob`` is what a git host
knows of every file of a repository: ``sha1(b"blob <size>\0" + bytes)``
(:func:`neuroreg.io.git_blob_id`), so a file taken from a pinned commit can be verified
even where nobody published its sha256.

A file marked ``optional: true`` may be missing: ``convert`` leaves its reader argument
out, and ``fetch`` skips it (with a warning) when its URL answers 404 (e.g. a mirror that
holds only part of a data set).
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

KINDS = ("neural", "images")
SPECIES = ("mouse", "macaque", "none")
MODALITIES = ("two-photon", "electrophysiology", "images")
FORMATS = (
    "sensorium-zip",
    "static-hdf5",
    "pickle",
    "zip",
    "nwb1",
    "nwb2",
    "netcdf4",
    "csv",
    "tar.gz",
    "npz",
    "npy",
    "mat",
)
SHA256_STATUS = ("confirmed", "unconfirmed")
READER_PREFIX = "neuroreg.data.readers."
_HEX = {"sha256": 64, "md5": 32, "sha1": 40, "git_blob": 40}
_TOP_KEYS = {"name", "title", "kind", "species", "area", "modality", "files", "license", "citation", "reader", "split"}
_FILE_KEYS = {
    "name", "role", "url", "sha256", "sha256_status", "md5", "sha1", "git_blob", "size", "format", "note", "optional",
}


class ManifestError(ValueError):
    """A manifest file breaks the schema; the message names the file and the field."""


@dataclass(frozen=True)
class ManifestFile:
    """One downloadable file of a data set.

    Attributes:
        name: local file name inside the data set's folder.
        role: the reader keyword argument that receives this file's path.
        url: where to download it.
        sha256: expected sha256 (hex) or ``None`` when unconfirmed.
        sha256_status: ``"confirmed"`` or ``"unconfirmed"``.
        md5, sha1: hashes published by the source (hex) or ``None``.
        git_blob: git blob id of the file at the source's commit (hex) or ``None``.
        size: expected size in bytes or ``None``.
        format: file format tag (see ``FORMATS``).
        note: free text.
        optional: the reader works without this file (it may be missing).
    """

    name: str
    role: str
    url: str
    sha256: str | None
    sha256_status: str
    format: str
    md5: str | None = None
    sha1: str | None = None
    size: int | None = None
    note: str = ""
    git_blob: str | None = None
    optional: bool = False


@dataclass(frozen=True)
class Manifest:
    """A validated data set manifest (see the module docstring for the schema)."""

    name: str
    title: str
    kind: str
    species: str
    area: str
    modality: str
    files: tuple[ManifestFile, ...]
    license_id: str
    license_url: str
    non_commercial: bool | None
    citation: str
    reader_function: str | None
    reader_options: dict[str, Any] = field(default_factory=dict)
    split: str = ""
    path: str = ""

    def reader(self) -> Callable:
        """Import and return the reader function named by ``reader.function``."""
        if self.reader_function is None:
            raise ManifestError(f"{self.path}: field 'reader': data set {self.name!r} is an image set and has no reader")
        module_name, _, func_name = self.reader_function.rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ManifestError(f"{self.path}: field 'reader.function': cannot import {module_name!r} ({err})") from err
        func = getattr(module, func_name, None)
        if not callable(func):
            raise ManifestError(f"{self.path}: field 'reader.function': {module_name!r} has no function {func_name!r}")
        return func

    @property
    def checksum_status(self) -> str:
        """How the files are verified: ``"confirmed"`` (every file has a confirmed sha256),
        ``"verified by git blob id"`` (the others have a git blob id) or ``"unconfirmed"``."""
        rest = [f for f in self.files if f.sha256 is None]
        if not rest:
            return "confirmed"
        if all(f.git_blob for f in rest):
            return "verified by git blob id"
        return "unconfirmed"

    def file(self, name: str) -> ManifestFile:
        for f in self.files:
            if f.name == name:
                return f
        raise ManifestError(f"{self.path}: no file named {name!r}; files are {[f.name for f in self.files]}")


def _fail(path, field_name: str, expected: str, found) -> None:
    raise ManifestError(f"{path}: field '{field_name}': expected {expected}, found {found!r}")


def _str(raw: dict, key: str, path, where: str = "", allowed=None, optional=False) -> str | None:
    label = f"{where}{key}"
    if key not in raw:
        if optional:
            return None
        _fail(path, label, "a value (required)", "nothing")
    value = raw[key]
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        _fail(path, label, "a non-empty string", value)
    if allowed is not None and value not in allowed:
        _fail(path, label, f"one of {list(allowed)}", value)
    return value


def _parse_file(raw, path, i: int) -> ManifestFile:
    where = f"files[{i}]."
    if not isinstance(raw, dict):
        _fail(path, f"files[{i}]", "a mapping", raw)
    unknown = sorted(set(raw) - _FILE_KEYS)
    if unknown:
        _fail(path, f"files[{i}]", f"keys among {sorted(_FILE_KEYS)}", f"unknown keys {unknown}")
    name = _str(raw, "name", path, where)
    if "/" in name or "\\" in name or name in (".", ".."):
        _fail(path, where + "name", "a plain file name without path separators", name)
    url = _str(raw, "url", path, where)
    if not re.match(r"^(https?|ftp)://", url):
        _fail(path, where + "url", "an http(s) or ftp URL", url)
    hashes: dict[str, str | None] = {}
    for algo, length in _HEX.items():
        value = raw.get(algo)
        if value is None:
            hashes[algo] = None
            continue
        if not isinstance(value, str) or not re.fullmatch(rf"[0-9a-f]{{{length}}}", value):
            _fail(path, where + algo, f"{length} lower-case hex digits or null", value)
        hashes[algo] = value
    if "sha256" not in raw:
        _fail(path, where + "sha256", "a value (64 hex digits, or null with sha256_status: unconfirmed)", "nothing")
    status = _str(raw, "sha256_status", path, where, allowed=SHA256_STATUS)
    if hashes["sha256"] is None and status != "unconfirmed":
        _fail(path, where + "sha256_status", "'unconfirmed' when sha256 is null", status)
    if hashes["sha256"] is not None and status != "confirmed":
        _fail(path, where + "sha256_status", "'confirmed' when a sha256 is given", status)
    size = raw.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        _fail(path, where + "size", "a positive integer (bytes) or null", size)
    note = raw.get("note", "") or ""
    if not isinstance(note, str):
        _fail(path, where + "note", "a string", note)
    optional = raw.get("optional", False)
    if not isinstance(optional, bool):
        _fail(path, where + "optional", "true or false", optional)
    return ManifestFile(
        name=name,
        role=_str(raw, "role", path, where) if "role" in raw else "path",
        url=url,
        sha256=hashes["sha256"],
        sha256_status=status,
        md5=hashes["md5"],
        sha1=hashes["sha1"],
        git_blob=hashes["git_blob"],
        size=size,
        format=_str(raw, "format", path, where, allowed=FORMATS),
        note=note,
        optional=optional,
    )


def parse_manifest(raw: Any, path: str | os.PathLike = "<memory>") -> Manifest:
    """Validate a manifest already parsed from YAML and return it.

    Raises:
        ManifestError: naming ``path`` and the offending field.
    """
    if not isinstance(raw, dict):
        _fail(path, "<top level>", "a mapping", type(raw).__name__)
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        _fail(path, "<top level>", f"keys among {sorted(_TOP_KEYS)}", f"unknown keys {unknown}")
    name = _str(raw, "name", path)
    if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", name):
        _fail(path, "name", "lower-case letters, digits, '-', '_' or '.'", name)
    stem = Path(path).stem
    if path != "<memory>" and stem != name:
        _fail(path, "name", f"the file's stem {stem!r}", name)
    kind = _str(raw, "kind", path, allowed=KINDS)
    files_raw = raw.get("files")
    if not isinstance(files_raw, list) or not files_raw:
        _fail(path, "files", "a non-empty list", files_raw)
    files = tuple(_parse_file(f, path, i) for i, f in enumerate(files_raw))
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        _fail(path, "files", "unique file names", names)
    lic = raw.get("license")
    if not isinstance(lic, dict):
        _fail(path, "license", "a mapping {id, url, non_commercial}", lic)
    license_id = _str(lic, "id", path, "license.")
    license_url = _str(lic, "url", path, "license.", optional=True) or ""
    if "non_commercial" not in lic:
        _fail(path, "license.non_commercial", "true, false or null (terms unconfirmed)", "nothing")
    non_commercial = lic["non_commercial"]
    if non_commercial is not None and not isinstance(non_commercial, bool):
        _fail(path, "license.non_commercial", "true, false or null (terms unconfirmed)", non_commercial)
    reader = raw.get("reader")
    reader_function = None
    options: dict[str, Any] = {}
    if kind == "images":
        if reader is not None:
            _fail(path, "reader", "null for an image set (kind: images)", reader)
    else:
        if not isinstance(reader, dict):
            _fail(path, "reader", "a mapping {function, options}", reader)
        reader_function = _str(reader, "function", path, "reader.")
        if not reader_function.startswith(READER_PREFIX) or not re.fullmatch(r"[A-Za-z0-9_.]+", reader_function):
            _fail(path, "reader.function", f"a dotted path starting with {READER_PREFIX!r}", reader_function)
        options = reader.get("options") or {}
        if not isinstance(options, dict):
            _fail(path, "reader.options", "a mapping of keyword arguments", options)
        roles = [f.role for f in files]
        if len(set(roles)) != len(roles):
            _fail(path, "files[].role", "one file per reader argument (unique roles)", roles)
        clash = sorted(set(roles) & set(options))
        if clash:
            _fail(path, "reader.options", "no option named like a file role", clash)
    return Manifest(
        name=name,
        title=_str(raw, "title", path),
        kind=kind,
        species=_str(raw, "species", path, allowed=SPECIES),
        area=_str(raw, "area", path),
        modality=_str(raw, "modality", path, allowed=MODALITIES),
        files=files,
        license_id=license_id,
        license_url=license_url,
        non_commercial=non_commercial,
        citation=_str(raw, "citation", path),
        reader_function=reader_function,
        reader_options=dict(options),
        split=_str(raw, "split", path),
        path=str(path),
    )


def load_manifest(path: str | os.PathLike) -> Manifest:
    """Read and validate one manifest YAML file.

    Raises:
        FileNotFoundError: the file does not exist.
        ManifestError: invalid YAML or a schema violation (names file and field).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ManifestError(f"{path}: not valid YAML ({err})") from err
    return parse_manifest(raw, path)


def default_manifest_dir() -> Path:
    """``data_manifests/`` of the source tree (override with ``NEUROREG_MANIFEST_DIR``)."""
    env = os.environ.get("NEUROREG_MANIFEST_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "data_manifests"


def load_manifests(directory: str | os.PathLike | None = None) -> dict[str, Manifest]:
    """All manifests in ``directory`` keyed by name (sorted)."""
    directory = Path(directory) if directory is not None else default_manifest_dir()
    if not directory.is_dir():
        raise FileNotFoundError(f"manifest directory not found: {directory}")
    manifests = [load_manifest(p) for p in sorted(directory.glob("*.yaml"))]
    return {m.name: m for m in manifests}


def find_manifest(name: str, directory: str | os.PathLike | None = None) -> Manifest:
    """The manifest called ``name``; raises ``KeyError`` listing the known names."""
    directory = Path(directory) if directory is not None else default_manifest_dir()
    path = directory / f"{name}.yaml"
    if path.is_file():
        return load_manifest(path)
    known = sorted(p.stem for p in directory.glob("*.yaml"))
    raise KeyError(f"no data set named {name!r} in {directory}; known: {', '.join(known) or '(none)'}")
