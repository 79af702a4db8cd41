"""Download and verify the files of a manifest (pooch, resumable, checksummed).

Files land in ``<data_dir>/<data set name>/<file name>``. The data directory is the
``data_dir`` argument, else ``$NEUROREG_DATA_DIR``, else ``data/``.

Every file is hashed before anything reads it. Order of authority: the manifest's
sha256 when it is confirmed; else a published md5 / sha1 / git blob id (the sha256 seen
is then recorded in ``<data_dir>/checksums.lock.json``, with a warning, the first
time); else the sha256 recorded in the lock file; with nothing at all (unconfirmed),
the sha256 seen is recorded with a warning and later verifications compare against
that record. A file whose hash (or size) does not match is moved aside to
``<name>.mismatch-<first 12 hex of its sha256>`` (never read) and
:class:`ChecksumError` names the file, the expected and the found hash.

Transfers are resumable: bytes arrive in ``<name>.part`` and an interrupted download
continues from there with an HTTP ``Range`` request.

Mirrors: with ``mirror="http://host:port/base"`` (or ``$NEUROREG_DATA_MIRROR``; the
``--mirror`` option of ``neuroreg data fetch`` and ``convert --fetch``) a file is
downloaded from ``<mirror>/<path of the manifest URL>`` instead: the scheme and host
are replaced, the path is kept. ``https://github.com/cowleygroup/V4_compact_models/raw/
<commit>/data_V4_responses/...`` thus becomes ``<mirror>/cowleygroup/V4_compact_models/
raw/<commit>/data_V4_responses/...``, so any static file server holding the files under
those paths stands in for the source. The checksums are those of the manifest either way.
A file marked ``optional`` that the server answers with 404 is skipped with a warning.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

from neuroreg.io import atomic_write, file_hash, git_blob_id

from .manifests import Manifest, ManifestFile

LOCK_NAME = "checksums.lock.json"
MIRROR_ENV = "NEUROREG_DATA_MIRROR"
_BLOCK = 1 << 20


class FetchError(RuntimeError):
    """A download failed (network, HTTP status, truncated transfer).

    Attributes:
        http_status: the HTTP status code that failed it, ``None`` for other failures.
    """

    def __init__(self, message: str, http_status: int | None = None):
        super().__init__(message)
        self.http_status = http_status


class ChecksumError(ValueError):
    """A file's hash differs from the expected one; the file was moved aside."""


class UnconfirmedChecksumWarning(UserWarning):
    """A file was accepted without a confirmed sha256; the one seen was recorded."""


class OptionalFileSkipped(UserWarning):
    """An optional file of a manifest was not found at its URL (HTTP 404) and was skipped."""


def mirror_url(url: str, mirror: str | None = None) -> str:
    """``url`` with its scheme and host replaced by ``mirror`` (else ``$NEUROREG_DATA_MIRROR``).

    Example:
        >>> mirror_url("https://github.com/o/r/raw/abc/x.npy", "http://127.0.0.1:8000/m/")
        'http://127.0.0.1:8000/m/o/r/raw/abc/x.npy'
        >>> mirror_url("https://github.com/o/r/raw/abc/x.npy", "")
        'https://github.com/o/r/raw/abc/x.npy'

    Raises:
        ValueError: the mirror is not an http(s) URL (names where it came from).
    """
    base = mirror if mirror is not None else os.environ.get(MIRROR_ENV, "")
    if not base:
        return url
    parts = urllib.parse.urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        where = "mirror" if mirror is not None else f"${MIRROR_ENV}"
        raise ValueError(f"{where}: expected a base URL such as http://host:port/path, found {base!r}")
    source = urllib.parse.urlsplit(url)
    return base.rstrip("/") + source.path + (f"?{source.query}" if source.query else "")


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir``, else ``$NEUROREG_DATA_DIR``, else ``data/``."""
    if data_dir is not None:
        return Path(data_dir)
    return Path(os.environ.get("NEUROREG_DATA_DIR") or "data")


def dataset_dir(manifest: Manifest, data_dir: str | os.PathLike | None = None) -> Path:
    return resolve_data_dir(data_dir) / manifest.name


def local_path(manifest: Manifest, file: ManifestFile, data_dir: str | os.PathLike | None = None) -> Path:
    return dataset_dir(manifest, data_dir) / file.name


# --------------------------------------------------------------------- lock file
def _lock_path(data_dir: str | os.PathLike | None) -> Path:
    return resolve_data_dir(data_dir) / LOCK_NAME


def read_lock(data_dir: str | os.PathLike | None = None) -> dict:
    """The recorded checksums ``{"<data set>/<file>": {"sha256", "size", "url", ...}}``."""
    path = _lock_path(data_dir)
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ChecksumError(f"{path}: not valid JSON ({err}); fix or delete it") from err


def _write_lock(data_dir, lock: dict) -> None:
    atomic_write(_lock_path(data_dir), lambda f: json.dump(lock, f, indent=2, sort_keys=True))


@contextlib.contextmanager
def exclusive(path: Path):
    """Hold an advisory lock (``flock``) on ``path`` (created if missing) for the block.

    Processes that fetch the same file, or record checksums in the same data folder,
    take turns: a second download of a file waits for the first and then finds it
    present, instead of appending to the same ``.part`` file. Where ``fcntl`` does not
    exist (Windows) nothing is locked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# ---------------------------------------------------------------------- download
def _resumable_downloader(part: Path, progressbar: bool, timeout: float = 60.0):
    """A pooch downloader ``(url, output_file, pooch) -> None`` that resumes ``part``."""

    def download(url: str, output_file, _pooch) -> None:
        offset = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as err:
            if err.code == 416 and offset:  # already complete
                response = None
            else:
                raise FetchError(f"{url}: HTTP {err.code} {err.reason}", http_status=err.code) from err
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            raise FetchError(f"{url}: cannot connect ({err})") from err
        if response is not None:
            with response:
                status = getattr(response, "status", 200)
                if offset and status != 206:  # server ignored Range: start over
                    offset = 0
                length = response.headers.get("Content-Length")
                expected = offset + int(length) if length is not None else None
                bar = None
                if progressbar:
                    from tqdm.auto import tqdm

                    bar = tqdm(total=expected, initial=offset, unit="B", unit_scale=True, desc=part.name[:-5], leave=True)
                try:
                    with open(part, "ab" if offset else "wb") as out:
                        while True:
                            try:
                                block = response.read(_BLOCK)
                            except (OSError, ValueError, http.client.HTTPException) as err:
                                raise FetchError(
                                    f"{url}: transfer interrupted after {out.tell()} bytes ({err}); run fetch again to resume"
                                ) from err
                            if not block:
                                break
                            out.write(block)
                            if bar is not None:
                                bar.update(len(block))
                        got = out.tell()
                finally:
                    if bar is not None:
                        bar.close()
                if expected is not None and got != expected:
                    raise FetchError(
                        f"{url}: transfer interrupted: expected {expected} bytes, got {got}; run fetch again to resume"
                    )
        os.replace(part, output_file)

    return download


@dataclass
class Verification:
    """Outcome of checking one file: ``status`` in ok / recorded / missing."""

    file: ManifestFile
    path: Path
    status: str
    sha256: str | None = None
    checked_against: str = ""


def _move_aside(path: Path, seen: str) -> Path:
    aside = path.with_name(f"{path.name}.mismatch-{seen[:12]}")
    os.replace(path, aside)
    return aside


def verify_file(
    manifest: Manifest, file: ManifestFile, data_dir: str | os.PathLike | None = None, *, record: bool = True
) -> Verification:
    """Hash a local file and compare it with what is known about it.

    Order of authority: the manifest's confirmed sha256, then a published md5 / sha1 /
    git blob id, then the sha256 recorded in the lock file. With nothing to compare against the
    sha256 seen is recorded (``record=True``) and an
    :class:`UnconfirmedChecksumWarning` is issued.

    Raises:
        ChecksumError: mismatch; the file has been moved aside and the message names
            the file, the expected and the found hash.
    """
    path = local_path(manifest, file, data_dir)
    if not path.is_file():
        return Verification(file, path, "missing")
    if file.size is not None:
        size = path.stat().st_size
        if size != file.size:
            seen = file_hash(path)
            aside = _move_aside(path, seen)
            raise ChecksumError(
                f"{manifest.path}: file '{file.name}': expected size {file.size} bytes, found {size} "
                f"(sha256 {seen}); moved aside to {aside}"
            )
    seen = file_hash(path)
    key = f"{manifest.name}/{file.name}"
    candidates: list[tuple[str, str, str]] = []
    if file.sha256 is not None:
        candidates.append(("sha256", file.sha256, seen))
    else:
        if file.md5 is not None:
            candidates.append(("md5", file.md5, file_hash(path, "md5")))
        if file.sha1 is not None:
            candidates.append(("sha1", file.sha1, file_hash(path, "sha1")))
        if file.git_blob is not None:
            candidates.append(("git blob id", file.git_blob, git_blob_id(path)))
    lock = read_lock(data_dir)
    if not candidates and key in lock:
        candidates.append(("sha256 (recorded in checksums.lock.json)", lock[key]["sha256"], seen))
    for algo, expected, found in candidates:
        if expected != found:
            aside = _move_aside(path, seen)
            raise ChecksumError(
                f"{manifest.path}: file '{file.name}': {algo} mismatch: expected {expected}, found {found}; "
                f"the file was not read and has been moved aside to {aside}"
            )
    status = "ok"
    against = ", ".join(a for a, _, _ in candidates)
    if file.sha256 is None and (key not in lock or lock[key]["sha256"] != seen):
        status = "recorded"
        if record:
            lock_file = _lock_path(data_dir)
            with exclusive(lock_file.parent / ".locks" / f"{lock_file.name}.flock"):  # read, change, write: one at a time
                lock = read_lock(data_dir)
                lock[key] = {
                    "sha256": seen,
                    "size": path.stat().st_size,
                    "url": file.url,
                    "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "checked_against": against or "nothing published",
                }
                _write_lock(data_dir, lock)
        warnings.warn(
            f"{manifest.path}: file '{file.name}': no confirmed sha256 in the manifest"
            + (f" (verified against the published {against})" if against else " and no published checksum")
            + f"; recorded sha256 {seen} in {_lock_path(data_dir)}",
            UnconfirmedChecksumWarning,
            stacklevel=2,
        )
    return Verification(file, path, status, seen, against)


def license_notice(manifest: Manifest) -> str:
    """Text printed before a download: license (non-commercial called out) and citation."""
    lines = [f"{manifest.name}: license {manifest.license_id}" + (f" ({manifest.license_url})" if manifest.license_url else "")]
    if manifest.non_commercial:
        lines.append("NOTE: this license is NON-COMMERCIAL: the data may not be used for commercial purposes.")
    elif manifest.non_commercial is None:
        lines.append("NOTE: the license terms are UNCONFIRMED here: check them before any commercial use.")
    lines.append(f"Please cite: {manifest.citation.strip()}")
    return "\n".join(lines)


def fetch_file(
    manifest: Manifest,
    file: ManifestFile,
    data_dir: str | os.PathLike | None = None,
    *,
    progressbar: bool = True,
    mirror: str | None = None,
) -> Verification:
    """Download ``file`` (resuming a partial transfer) unless present, then verify it.

    ``mirror`` (else ``$NEUROREG_DATA_MIRROR``) replaces the URL's scheme and host
    (:func:`mirror_url`).

    Returns:
        The :class:`Verification` of the file on disk.

    Raises:
        FetchError: the transfer failed (the partial bytes are kept for resuming).
        ChecksumError: the downloaded bytes do not match (file moved aside).
    """
    import pooch

    url = mirror_url(file.url, mirror)
    folder = dataset_dir(manifest, data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / f"{file.name}.part"
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel("WARNING")  # pooch's "use this known_hash" hint does not apply: we verify below
    # another process fetching this file: wait, then find it present (the lock files live
    # apart, in <data dir>/.locks/, so a data set's folder holds only its files)
    with exclusive(resolve_data_dir(data_dir) / ".locks" / f"{manifest.name}--{file.name}.flock"):
        try:
            pooch.retrieve(
                url=url,
                known_hash=None,  # verified below, with the file moved aside on mismatch
                fname=file.name,
                path=folder,
                downloader=_resumable_downloader(part, progressbar),
                progressbar=False,
            )
        finally:
            logger.setLevel(level)
        return verify_file(manifest, file, data_dir)


def fetch(
    manifest: Manifest,
    data_dir: str | os.PathLike | None = None,
    *,
    progressbar: bool = True,
    echo=print,
    mirror: str | None = None,
) -> list[Verification]:
    """Print the license notice, then fetch and verify every file of ``manifest``.

    An optional file whose URL answers 404 is skipped (:class:`OptionalFileSkipped`
    warning; its verification says ``missing``); any other failure raises.
    """
    echo(license_notice(manifest))
    results = []
    for f in manifest.files:
        try:
            results.append(fetch_file(manifest, f, data_dir, progressbar=progressbar, mirror=mirror))
        except FetchError as err:
            if not (f.optional and err.http_status == 404):
                raise
            warnings.warn(f"{manifest.path}: optional file '{f.name}' skipped: {err}", OptionalFileSkipped, stacklevel=2)
            results.append(Verification(f, local_path(manifest, f, data_dir), "missing"))
    return results


def verify(manifest: Manifest, data_dir: str | os.PathLike | None = None) -> list[Verification]:
    """Verify every local file of ``manifest`` (missing files are reported, not fetched)."""
    return [verify_file(manifest, f, data_dir) for f in manifest.files]
