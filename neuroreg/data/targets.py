"""TargetSet: per-image target responses aligned with an image set, keyed by content.

File layout (HDF5)::

    /targets     [N, K] float32 or float16 (NaN: no target for that neuron and image)
    /image_keys  [N]    UTF-8 strings (the image set's keys)
    attrs: key (hex sha256), source, n_images, n_neurons, neuroreg_version

The key hashes everything the targets depend on (e.g. the population or twin that
produced them, the image set's content, the neuroreg version). Files are written to
a temporary name and renamed, so a partial file never carries the final name, and a
file whose key differs from the expected one is refused rather than used.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

import neuroreg

from .images import ImageData


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
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            with h5py.File(tmp, "w") as f:
                n, k = self.targets.shape
                f.create_dataset("targets", data=self.targets, chunks=(min(n, 1024) or 1, k) if n and k else None)
                f.create_dataset("image_keys", data=self.image_keys.tolist(), dtype=h5py.string_dtype("utf-8"))
                f.attrs.update(key=self.key, source=self.source, n_images=n, n_neurons=k, neuroreg_version=neuroreg.__version__)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
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
    def load(cls, path: str | os.PathLike, expected_key: str | None = None) -> "TargetSet":
        """Read a TargetSet; refuse it if its key is not ``expected_key`` (when given)."""
        header = cls.read_header(path)
        if expected_key is not None and header["key"] != expected_key:
            raise TargetSetError(
                f"{path}: attribute 'key': expected {expected_key}, found {header['key']} "
                "(the targets were made from other inputs; delete the file or point to the right one)"
            )
        with h5py.File(path, "r") as f:
            targets = f["targets"][()]
            keys = f["image_keys"][()]
        if targets.shape[0] != int(header["n_images"]):
            raise TargetSetError(f"{path}: field 'targets': expected {header['n_images']} rows, found {targets.shape[0]}")
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


class TargetSource:
    """Where the targets of the training images come from (injected by config)."""

    #: number of neurons the targets have; known before any data is loaded
    num_neurons: int

    def target_set(self, images: ImageData) -> TargetSet:
        raise NotImplementedError


class GroundTruthTargets(TargetSource):
    """Noise-free mean responses of a simulated population to the training images.

    The oracle target source: cached as a TargetSet under ``cache_dir``, keyed by the
    population's fingerprint and the training images' content.

    Args:
        population: a :class:`neuroreg.data.simulated.V1Population`.
        cache_dir: folder of cached TargetSets.
    """

    def __init__(self, population, cache_dir: str = "data/targets"):
        self.population = population
        self.cache_dir = Path(cache_dir)
        self.num_neurons = int(population.n_neurons)

    def target_set(self, images: ImageData) -> TargetSet:
        train = images.split("train")
        key = target_key("ground-truth", self.population.fingerprint(), train.fingerprint())
        path = self.cache_dir / f"ground_truth_{key[:20]}.h5"
        if path.exists():
            return TargetSet.load(path, expected_key=key)
        responses = self.population.mean_response(train.images_float())
        ts = TargetSet(
            targets=np.asarray(responses, dtype=np.float32),
            image_keys=train.keys,
            key=key,
            source=f"ground truth of {type(self.population).__name__} {self.population.fingerprint()[:12]}",
        )
        ts.save(path)
        ts.name = str(path)
        return ts


class TargetSetFile(TargetSource):
    """A TargetSet on disk (e.g. written by a twin's prediction).

    Args:
        path: the ``.h5`` file.
        expected_key: when given, a file with any other key is refused.
    """

    def __init__(self, path: str, expected_key: str | None = None):
        self.path = Path(path)
        self.expected_key = expected_key
        self.num_neurons = int(TargetSet.read_header(self.path)["n_neurons"])

    def target_set(self, images: ImageData) -> TargetSet:
        return TargetSet.load(self.path, expected_key=self.expected_key)


class TargetSetStream:
    """Writes a TargetSet row block by row block, without holding it in memory.

    The file is created under a temporary name in the destination folder with a
    pre-sized, chunked ``/targets`` dataset (NaN-filled); :meth:`write` fills rows;
    :meth:`commit` checks every row was written, sets the attributes and renames the
    file to ``path``. :meth:`abort` (or leaving a ``with`` block by an exception)
    removes the temporary file, so a partial file never carries the final name.

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
        >>> with TargetSetStream(path, keys, 3, key) as out:   # doctest: +SKIP
        ...     out.write(0, rows)                               # rows [b, 3]
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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = [k.decode() if isinstance(k, bytes) else str(k) for k in np.asarray(image_keys).ravel()]
        self.n_images, self.n_neurons = len(keys), int(n_neurons)
        self.key, self.source = key, source
        fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        itemsize = np.dtype(dtype).itemsize
        rows = chunk_rows or chunk_bytes // (self.n_neurons * itemsize)
        rows = max(1, min(self.n_images, rows))
        try:
            self._file = h5py.File(self._tmp, "w", rdcc_nbytes=max(4 * chunk_bytes, 2 * rows * self.n_neurons * itemsize))
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
            self._file.close()
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self.closed = True
        return self.path

    def abort(self) -> None:
        """Close and delete the temporary file."""
        try:
            if getattr(self, "_file", None) is not None and self._file.id.valid:
                self._file.close()
        finally:
            if os.path.exists(self._tmp):
                os.remove(self._tmp)
            self.closed = True

    def __enter__(self) -> TargetSetStream:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self.closed:
            self.commit()
