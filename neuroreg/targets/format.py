"""The TargetSet format: per-image target responses aligned with an image set, keyed by content.

File layout (HDF5)::

    /targets     [N, K] float32 or float16 (NaN: no target for that neuron and image)
    /image_keys  [N]    UTF-8 strings (the image set's keys)
    attrs: key (hex sha256), source, n_images, n_neurons, neuroreg_version

The key hashes everything the targets depend on (e.g. the population or twin that
produced them, the image set's content, the neuroreg version). Files are written to
a temporary name and renamed (:func:`neuroreg.io.atomic_path`), so a partial file never
carries the final name, and a file whose key differs from the expected one is refused
rather than used. :class:`TargetSetStream` writes a large TargetSet block by block.

>>> import tempfile, pathlib
>>> ts = TargetSet(np.eye(2, 3, dtype=np.float32), np.array(["a", "b"]), key=target_key("example"))
>>> path = ts.save(pathlib.Path(tempfile.mkdtemp()) / "example.h5")
>>> TargetSet.load(path, expected_key=ts.key).align(np.array(["b", "a"]))
array([[0., 1., 0.],
       [1., 0., 0.]], dtype=float32)
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

import neuroreg
from neuroreg.io import atomic_hdf5, atomic_path

#: a TargetSet up to this size is built in memory and written in one plain write
IN_MEMORY_BYTES = 1 << 30


class TargetSetError(ValueError):
    """A TargetSet does not match what the caller expects."""


def target_key(*parts: str | bytes) -> str:
    """sha256 over ``parts`` and the neuroreg version: the content key of a TargetSet."""
    h = hashlib.sha256()
    for part in (*parts, f"neuroreg {neuroreg.__version__}"):
        data = part.encode() if isinstance(part, str) else bytes(part)
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


@dataclass
class TargetSet:
    """Target responses ``[N, K]`` for the images named by ``image_keys`` ``[N]``."""

    targets: np.ndarray
    image_keys: np.ndarray
    key: str
    source: str = ""
    name: str = "<in memory>"

    def __post_init__(self) -> None:
        self.image_keys = np.asarray([k.decode() if isinstance(k, bytes) else str(k) for k in self.image_keys])
        if self.targets.ndim != 2:
            raise TargetSetError(f"{self.name}: field 'targets': expected rank 2 [images, neurons], found shape {self.targets.shape}")
        if self.targets.dtype not in (np.float32, np.float16):
            raise TargetSetError(f"{self.name}: field 'targets': expected float32 or float16, found {self.targets.dtype}")
        if self.image_keys.shape != (self.targets.shape[0],):
            raise TargetSetError(
                f"{self.name}: field 'image_keys': expected {self.targets.shape[0]} keys (one per target row), "
                f"found shape {self.image_keys.shape}"
            )
        if np.isinf(self.targets).any():
            raise TargetSetError(f"{self.name}: field 'targets': expected finite values or NaN, found inf")

    @property
    def n_neurons(self) -> int:
        return int(self.targets.shape[1])

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically: a temporary file in the same folder, then a rename."""
        path = Path(path)
        with atomic_hdf5(path) as f:
            n, k = self.targets.shape
            f.create_dataset("targets", data=self.targets, chunks=(min(n, 1024) or 1, k) if n and k else None)
            f.create_dataset("image_keys", data=self.image_keys.tolist(), dtype=h5py.string_dtype("utf-8"))
            f.attrs.update(key=self.key, source=self.source, n_images=n, n_neurons=k, neuroreg_version=neuroreg.__version__)
        return path

    @classmethod
    def read_header(cls, path: str | os.PathLike) -> dict:
        """The attributes of a TargetSet file (key, n_images, n_neurons, ...) without its data."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"TargetSet file not found: {path}")
        try:
            with h5py.File(path, "r") as f:
                missing = [a for a in ("key", "n_images", "n_neurons") if a not in f.attrs]
                if missing or "targets" not in f or "image_keys" not in f:
                    raise TargetSetError(
                        f"{path}: not a TargetSet: expected datasets /targets, /image_keys and attributes "
                        f"key, n_images, n_neurons; found datasets {sorted(f.keys())}, attributes {sorted(f.attrs.keys())}"
                    )
                return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        except OSError as err:
            raise TargetSetError(f"{path}: not a readable HDF5 file ({err})") from err

    @classmethod
    def load(cls, path: str | os.PathLike, expected_key: str | None = None) -> TargetSet:
        """Read a TargetSet; refuse it if its key is not ``expected_key`` (when given)."""
        header = cls.read_header(path)
        if expected_key is not None and header["key"] != expected_key:
            raise TargetSetError(
                f"{path}: attribute 'key': expected {expected_key}, found {header['key']} "
                "(the targets were made from other inputs; delete the file or point to the right one)"
            )
        try:
            with h5py.File(path, "r") as f:
                if not all(isinstance(f[name], h5py.Dataset) for name in ("targets", "image_keys")):
                    raise TargetSetError(f"{path}: fields 'targets', 'image_keys': expected datasets, found "
                                         f"{type(f['targets']).__name__}, {type(f['image_keys']).__name__}")
                targets = f["targets"][()]
                keys = f["image_keys"][()]
        except (OSError, TypeError, KeyError) as err:
            raise TargetSetError(f"{path}: not a readable TargetSet ({err})") from err
        if not isinstance(targets, np.ndarray) or not isinstance(keys, np.ndarray):
            raise TargetSetError(f"{path}: fields 'targets', 'image_keys': expected arrays, found scalars")
        if targets.ndim != 2 or targets.shape != (int(header["n_images"]), int(header["n_neurons"])):
            raise TargetSetError(f"{path}: field 'targets': expected shape [{header['n_images']}, {header['n_neurons']}] "
                                 f"(attributes n_images, n_neurons), found {list(targets.shape)}")
        return cls(targets=targets, image_keys=keys, key=str(header["key"]), source=str(header.get("source", "")), name=str(path))

    def align(self, keys: np.ndarray) -> np.ndarray:
        """Rows for ``keys`` ``[M]`` in that order, as float32 ``[M, K]``.

        Raises:
            TargetSetError: if any key has no target row (names how many and a few).
        """
        index = {k: i for i, k in enumerate(self.image_keys.tolist())}
        missing = [k for k in keys.tolist() if k not in index]
        if missing:
            raise TargetSetError(
                f"{self.name}: field 'image_keys': expected targets for all {len(keys)} images, "
                f"found {len(missing)} missing (e.g. {missing[:3]})"
            )
        rows = np.fromiter((index[k] for k in keys.tolist()), dtype=np.int64, count=len(keys))
        return self.targets[rows].astype(np.float32)


class TargetSetStream:
    """Writes a TargetSet row block by row block, without holding it in memory.

    The file holds a pre-sized, chunked ``/targets`` dataset (NaN-filled); :meth:`write`
    fills rows; :meth:`commit` checks every row was written, sets the attributes and
    moves the file to ``path``. :meth:`abort` (or leaving a ``with`` block by an
    exception) drops it, so a partial file never carries the final name.

    A TargetSet of up to :data:`IN_MEMORY_BYTES` is built in memory and written in one
    plain write at :meth:`commit` (:func:`neuroreg.io.atomic_hdf5`), so a full disk is a
    clean ``OSError``; a larger one is written under a temporary name in the destination
    folder (:func:`neuroreg.io.atomic_path`) after checking the disk has room for it.

    Args:
        path: final file name.
        image_keys: ``[N]`` keys of the images, in row order.
        n_neurons: K, columns of ``/targets``.
        key: the content key (see :func:`target_key`).
        source: a description of what produced the targets.
        dtype: ``"float32"`` or ``"float16"``.
        chunk_bytes: approximate size of one HDF5 chunk.
        chunk_rows: rows per chunk (overrides ``chunk_bytes``); match it to the
            writer's batch size so each block fills whole chunks.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "stream.h5"
        >>> with TargetSetStream(path, np.array(["a", "b", "c"]), 2, target_key("example")) as out:
        ...     out.write(0, np.ones((2, 2)))
        ...     out.write(2, np.zeros((1, 2)))
        >>> TargetSet.load(path).targets.tolist()
        [[1.0, 1.0], [1.0, 1.0], [0.0, 0.0]]
    """

    def __init__(
        self,
        path: str | os.PathLike,
        image_keys: np.ndarray,
        n_neurons: int,
        key: str,
        source: str = "",
        dtype: str = "float32",
        chunk_bytes: int = 1 << 20,
        chunk_rows: int | None = None,
    ):
        if dtype not in ("float32", "float16"):
            raise TargetSetError(f"{path}: field 'targets': expected dtype float32 or float16, found {dtype!r}")
        if n_neurons < 1:
            raise TargetSetError(f"{path}: field 'targets': expected >= 1 neurons, found {n_neurons}")
        self.path = Path(path)
        keys = [k.decode() if isinstance(k, bytes) else str(k) for k in np.asarray(image_keys).ravel()]
        self.n_images, self.n_neurons = len(keys), int(n_neurons)
        self.key, self.source = key, source
        itemsize = np.dtype(dtype).itemsize
        size = self.n_images * self.n_neurons * itemsize + sum(len(k.encode()) + 16 for k in keys)
        self._move = contextlib.ExitStack()  # closing it writes the file to ``path``
        self._in_memory = size <= IN_MEMORY_BYTES
        if self._in_memory:
            self._file = self._move.enter_context(atomic_hdf5(self.path))
        else:
            free = shutil.disk_usage(self.path.parent if self.path.parent.exists() else Path.cwd()).free
            if free < size + (64 << 20):
                raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)}: cannot write {self.path}: the TargetSet needs "
                                            f"{size / 2**20:.0f} MiB, the disk has {free / 2**20:.0f} MiB free (nothing was written)")
            self._tmp = self._move.enter_context(atomic_path(self.path))
        rows = chunk_rows or chunk_bytes // (self.n_neurons * itemsize)
        rows = max(1, min(self.n_images, rows))
        try:
            kwargs = {"rdcc_nbytes": max(4 * chunk_bytes, 2 * rows * self.n_neurons * itemsize)}
            if not self._in_memory:
                self._file = h5py.File(self._tmp, "w", **kwargs)
            self._targets = self._file.create_dataset(
                "targets", shape=(self.n_images, self.n_neurons), dtype=dtype,
                chunks=(rows, self.n_neurons) if self.n_images else None, fillvalue=np.nan,
            )
            self._file.create_dataset("image_keys", data=keys, dtype=h5py.string_dtype("utf-8"))
        except BaseException:
            self.abort()
            raise
        self._written = np.zeros(self.n_images, dtype=bool)
        self.closed = False

    def write(self, start: int, rows: np.ndarray) -> None:
        """Write ``rows`` ``[b, K]`` at rows ``start .. start + b``."""
        rows = np.asarray(rows)
        if rows.ndim != 2 or rows.shape[1] != self.n_neurons or not 0 <= start <= self.n_images - rows.shape[0]:
            raise TargetSetError(
                f"{self.path}: field 'targets': expected a block [b, {self.n_neurons}] inside rows 0..{self.n_images}, "
                f"found shape {rows.shape} at row {start}"
            )
        if np.isinf(rows).any():
            raise TargetSetError(f"{self.path}: field 'targets': expected finite values or NaN, found inf at rows {start}..")
        self._targets[start : start + rows.shape[0]] = rows.astype(self._targets.dtype, copy=False)
        self._written[start : start + rows.shape[0]] = True

    def commit(self) -> Path:
        """Finish the file and rename it to ``path``; every row must have been written."""
        if not self._written.all():
            missing = np.flatnonzero(~self._written)
            self.abort()
            raise TargetSetError(f"{self.path}: field 'targets': expected all {self.n_images} rows written, found {len(missing)} missing (e.g. rows {missing[:3].tolist()})")
        try:
            self._file.attrs.update(
                key=self.key, source=self.source, n_images=self.n_images, n_neurons=self.n_neurons,
                neuroreg_version=neuroreg.__version__,
            )
            if self._file.id.valid and not self._in_memory:
                self._file.close()
            self._move.close()  # the in-memory file is closed and written here
        except BaseException:
            self.abort()
            raise
        self.closed = True
        return self.path

    def abort(self) -> None:
        """Close and delete the temporary file."""
        try:
            if getattr(self, "_file", None) is not None and self._file.id.valid and not self._in_memory:
                self._file.close()
        finally:
            aborted = TargetSetError(f"{self.path}: writing aborted")
            self._move.__exit__(type(aborted), aborted, None)  # atomic_path removes the temporary file
            self.closed = True

    def __enter__(self) -> TargetSetStream:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self.closed:
            self.commit()
