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


def contiguous_offset(dataset: h5py.Dataset) -> int | None:
    """Byte offset of ``dataset``'s data in its file when it is stored as one plain block, else None.

    A plain block is a contiguous (unchunked), unfiltered, allocated dataset of a
    fixed-size numeric dtype: its rows can be read (or memory-mapped) with ordinary
    file reads, without HDF5's selection machinery.
    """
    if dataset.chunks is not None or dataset.compression is not None or dataset.dtype.kind not in "biuf":
        return None
    if dataset.size == 0:
        return None
    offset = dataset.id.get_offset()
    return None if offset is None else int(offset)


def read_at(path: str | os.PathLike, offset: int, out, block_bytes: int = 16 << 20, done=None):
    """Fill the C-contiguous array ``out`` with the bytes of ``path`` from ``offset`` on, in sequential reads.

    Args:
        path: the file.
        offset: byte offset of the first byte.
        out: the array to fill (its ``nbytes`` are read).
        block_bytes: bytes per read.
        done: optional callback ``done(bytes_read_so_far)`` after each read; an exception
            it raises stops the reading.

    Raises:
        OSError: the file ends before ``out`` is full (names the file).
    """
    import numpy as np

    view = memoryview(out.reshape(-1).view(np.uint8))
    total = len(view)
    with open(path, "rb", buffering=0) as fh:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fh.fileno(), offset, total, os.POSIX_FADV_SEQUENTIAL)
        pos = 0
        while pos < total:
            fh.seek(offset + pos)
            n = fh.readinto(view[pos : pos + block_bytes])
            if not n:
                raise OSError(f"{path}: file ends early: read {pos} of {total} bytes at offset {offset}")
            pos += n
            if done is not None:
                done(pos)
    return out


def read_plain(path: str | os.PathLike, dataset: h5py.Dataset, block_bytes: int = 16 << 20):
    """The whole of ``dataset`` (a dataset of the open file ``path``) as an array.

    A plain block (:func:`contiguous_offset`) is read in one sequential pass of large
    file reads, the fastest way off a cold disk (and several times faster than h5py's
    own read of the same block); any other layout is read by h5py.
    """
    import numpy as np

    out = np.empty(dataset.shape, dtype=dataset.dtype)
    offset = contiguous_offset(dataset)
    if offset is None:
        if out.size:
            dataset.read_direct(out)
        return out
    return read_at(path, offset, out, block_bytes)
