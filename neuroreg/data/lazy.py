"""Lazily reading a NeuralRecording file: mini-batches straight from HDF5.

:func:`open_recording` returns a :class:`LazyRecording` that keeps only the small
arrays in memory (``trial_image``, ``trial_tier``, ``image_ids``, neuron metadata,
attributes) and reads images and responses on demand. Within a memory budget a
dataset is read once in contiguous row blocks as batches touch them and kept (so
later epochs index memory); beyond it, each batch reads only its own rows.

The file layout is the one written by :meth:`NeuralRecording.save`; nothing about
the :class:`~neuroreg.data.recording.NeuralRecording` contract changes.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from .hdf5 import open_hdf5
from .recording import SCHEMA_VERSION, TIERS, RecordingError, string_array

_REQUIRED = ("images", "image_ids", "responses", "trial_image", "trial_tier")


class _RowReader:
    """Rows of one HDF5 dataset under a memory budget of ``capacity`` bytes.

    When the budget holds the whole dataset, the dataset is read once, in row blocks
    (contiguous reads), as batches first touch them, and kept; once every block has
    been read they are joined into one array and later batches are a single fancy
    index. When it does not, each batch reads just its rows (sorted, one h5py
    selection) and nothing is kept.
    """

    def __init__(self, dataset: h5py.Dataset, block_rows: int, capacity: int):
        self.ds = dataset
        self.rows = int(dataset.shape[0])
        self.block_rows = max(1, int(block_rows))
        self.nbytes = int(dataset.size) * dataset.dtype.itemsize
        self.cached = capacity >= self.nbytes
        self.blocks: dict[int, np.ndarray] = {}
        self.n_blocks = -(-self.rows // self.block_rows)
        self.full: np.ndarray | None = None
        self.reads = 0
        # one raw, unfiltered chunk per row (the images of NeuralRecording.save): read
        # chunks directly, which skips h5py's per-chunk selection machinery
        self.row_chunks = (
            dataset.chunks == (1, *dataset.shape[1:])
            and dataset.compression is None
            and not dataset.shuffle
            and not dataset.fletcher32
            and dataset.scaleoffset is None
        )

    def _rows(self, rows: np.ndarray) -> np.ndarray:
        """Read sorted unique ``rows`` from the file."""
        if self.row_chunks:
            dtype, shape = self.ds.dtype, self.ds.shape[1:]
            out = np.empty((len(rows), *shape), dtype=dtype)
            tail = (0,) * len(shape)
            read = self.ds.id.read_direct_chunk
            try:
                for j, r in enumerate(rows.tolist()):
                    out[j] = np.frombuffer(read((r, *tail))[1], dtype=dtype).reshape(shape)
                return out
            except (OSError, ValueError):  # unallocated chunk or other layout: use h5py's selection
                self.row_chunks = False
        return self.ds[rows]

    def _block(self, b: int) -> np.ndarray:
        arr = self.blocks.get(b)
        if arr is None:
            lo = b * self.block_rows
            arr = self.blocks[b] = self.ds[lo : min(lo + self.block_rows, self.rows)]  # one contiguous read
            self.reads += 1
            if len(self.blocks) == self.n_blocks:
                self.full = np.concatenate([self.blocks[i] for i in range(self.n_blocks)])
                self.blocks = {}
        return arr

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``[B]`` (any order, repeats allowed) -> ``[B, ...]``."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.full is not None:
            return self.full[rows]
        if not self.cached:
            uniq, inverse = np.unique(rows, return_inverse=True)
            self.reads += 1
            return self._rows(uniq)[inverse.ravel()]
        out = np.empty((len(rows), *self.ds.shape[1:]), dtype=self.ds.dtype)
        blocks = rows // self.block_rows
        order = np.argsort(blocks, kind="stable")
        edges = np.flatnonzero(np.diff(blocks[order])) + 1
        for group in np.split(order, edges):
            if len(group):
                b = int(blocks[group[0]])
                block = self._block(b)
                if self.full is not None:  # the last missing block just arrived
                    return self.full[rows]
                out[group] = block[rows[group] - b * self.block_rows]
        return out


class LazyRecording:
    """An h5-backed, read-only view of a NeuralRecording file.

    Args:
        path: a file written by :meth:`NeuralRecording.save`.
        cache_bytes: memory budget (images and responses share it in proportion to
            their size). A dataset that fits its share is kept in memory after it has
            been read once (block by block, as batches touch it); one that does not is
            read row-wise per batch. Default 1 GiB.
        block_rows: rows per contiguous block read (trials for responses, images for images).

    Attributes in memory: ``image_ids [N]``, ``trial_image [T]``, ``trial_tier [T]``,
    ``neurons`` (``[K]`` arrays), and the descriptive attributes.
    """

    def __init__(self, path: str | os.PathLike, *, cache_bytes: int = 1 << 30, block_rows: int = 256):
        self.path = Path(path)
        self._file = open_hdf5(self.path, "NeuralRecording file", RecordingError)
        f = self._file
        for key in _REQUIRED:
            if key not in f:
                found = sorted(f.keys())
                self.close()
                raise RecordingError(f"{self.path}: missing dataset '/{key}'; found {found}")
        version = int(f.attrs.get("schema_version", -1))
        if version != SCHEMA_VERSION:
            self.close()
            raise RecordingError(f"{self.path}: attribute 'schema_version': expected {SCHEMA_VERSION}, found {version}")
        ids = f["image_ids"][()]
        self.image_ids = string_array(ids) if ids.dtype.kind in "OS" else ids.astype(np.int64)
        self.trial_image = f["trial_image"][()].astype(np.int64)
        self.trial_tier = string_array(f["trial_tier"][()])
        self.neurons = {}
        if "neurons" in f:
            for key in f["neurons"]:
                v = f["neurons"][key][()]
                self.neurons[key] = string_array(v) if v.dtype.kind in "OS" else v
        for attr in ("species", "area", "response_unit", "source", "citation", "license"):
            setattr(self, attr, str(f.attrs.get(attr, "")))
        self.pixels_per_degree = float(f.attrs.get("pixels_per_degree", np.nan))
        images, responses = f["images"], f["responses"]
        if responses.shape[0] != len(self.trial_image):
            self.close()
            raise RecordingError(
                f"{self.path}: field 'trial_image': expected {responses.shape[0]} entries, found {len(self.trial_image)}"
            )
        total = images.size * images.dtype.itemsize + responses.size * responses.dtype.itemsize
        share = (images.size * images.dtype.itemsize) / max(total, 1)
        self._images = _RowReader(images, block_rows, int(cache_bytes * share) + 1)
        self._responses = _RowReader(responses, block_rows, int(cache_bytes * (1 - share)) + 1)

    # -------------------------------------------------------------- sizes
    @property
    def n_trials(self) -> int:
        return int(self._responses.rows)

    @property
    def n_images(self) -> int:
        return int(self._images.rows)

    @property
    def n_neurons(self) -> int:
        return int(self._file["responses"].shape[1])

    def trials(self, tier: str | None = None) -> np.ndarray:
        """Indices ``[T']`` of the trials of ``tier`` (all when None)."""
        if tier is None:
            return np.arange(self.n_trials)
        if tier not in TIERS:
            raise RecordingError(f"{self.path}: unknown tier {tier!r}; expected one of {list(TIERS)}")
        return np.flatnonzero(self.trial_tier == tier)

    # -------------------------------------------------------------- reads
    def batch(self, trials) -> tuple[np.ndarray, np.ndarray]:
        """Images ``[B, C, H, W]`` (stored dtype) and responses ``[B, K]`` float32 of ``trials`` ``[B]``."""
        trials = np.asarray(trials, dtype=np.int64)
        if trials.size and (trials.min() < 0 or trials.max() >= self.n_trials):
            raise IndexError(f"{self.path}: trial indices must be in [0, {self.n_trials - 1}]")
        return self._images.take(self.trial_image[trials]), self._responses.take(trials)

    def images(self, index) -> np.ndarray:
        """Images ``[B, C, H, W]`` by image index ``[B]``."""
        return self._images.take(np.asarray(index, dtype=np.int64))

    def load(self):
        """The whole recording in memory as a validated NeuralRecording."""
        from .recording import NeuralRecording

        return NeuralRecording.load(self.path)

    def close(self) -> None:
        if getattr(self, "_file", None) is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> LazyRecording:  # noqa: PYI034 (3.10 has no typing.Self)
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_recording(path: str | os.PathLike, **kwargs) -> LazyRecording:
    """Open a NeuralRecording file for lazy mini-batch reads (see :class:`LazyRecording`)."""
    return LazyRecording(path, **kwargs)
