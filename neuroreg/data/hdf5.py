"""Opening HDF5 files that come from outside, with errors that name the file."""

from __future__ import annotations

import os
from pathlib import Path

import h5py


def open_hdf5(path: str | os.PathLike, what: str, error: type[Exception], kind: str = "HDF5") -> h5py.File:
    """Open ``path`` read-only.

    Args:
        path: the file.
        what: what the file should be, for the not-found message (e.g. ``"NeuralRecording file"``).
        error: exception class raised when the file exists but is not readable HDF5.
        kind: the format named in that message (``"HDF5"``, ``"netCDF-4/HDF5"``, ``"HDF5/NWB"``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        error: ``path`` is not a readable ``kind`` file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise error(f"{path}: not a readable {kind} file ({err})") from err
