"""Unpacking a fetched image-set archive (zip or tar) into place, atomically."""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path


def unpack_archive(archive: Path, dest: Path, folder: str) -> Path:
    """Unpack ``archive`` (zip or tar, e.g. as ``neuroreg data fetch`` leaves it) so that
    its top folder ``folder`` becomes ``dest/folder``.

    The archive is unpacked into a temporary folder inside ``dest`` and its top folder
    renamed into place, so an interrupted unpack never leaves a partial ``dest/folder``.
    Tar members are unpacked with the ``data`` filter (no absolute paths, links out of
    the folder or device files).

    Returns:
        ``dest/folder``.

    Raises:
        ValueError: not a zip or tar archive, or it has no top folder ``folder``.
    """
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder}.", suffix=".unpack", dir=dest))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                z.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as t:
                t.extractall(tmp, filter="data")
        else:
            raise ValueError(f"{archive}: expected a zip or tar archive, found neither")
        if not (tmp / folder).is_dir():
            found = sorted(p.name for p in tmp.iterdir())
            raise ValueError(f"{archive}: expected a top folder {folder!r} in the archive, found {found}")
        target = dest / folder
        if not target.exists():  # another process may have finished first
            os.replace(tmp / folder, target)
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
