"""Lazily reading a NeuralRecording file: mini-batches straight from HDF5.

:func:`open_recording` returns a :class:`LazyRecording` that keeps only the small
arrays in memory (``trial_image``, ``trial_tier``, ``image_ids``, neuron metadata,
attributes) and reads images and responses on demand.

:meth:`NeuralRecording.save` stores both as plain contiguous blocks, so they are
read with ordinary file reads rather than through HDF5's selection machinery.
Within a memory budget, a background thread reads each one front to back in large
sequential reads as soon as the file is opened (the fastest pattern off a cold
disk; it overlaps with whatever runs meanwhile, e.g. model set-up or the first
training steps), and a batch waits only until the reading has passed its rows;
beyond the budget, each batch reads its sorted rows through a memory map. Files
with chunked or compressed datasets (older files, other writers) are read through
h5py: once in row blocks within the budget, row-wise beyond it.

The training order is not changed by any of this: batches stay uniformly shuffled.
Nothing about the :class:`~neuroreg.data.recording.NeuralRecording` contract changes.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import h5py
import numpy as np

from .hdf5 import contiguous_offset, open_hdf5, read_at
from .recording import SCHEMA_VERSION, TIERS, RecordingError, string_array

_STREAMS = 4  # concurrent sequential read streams per dataset
_STREAM_MIN_BYTES = 8 << 20  # smallest range worth a stream of its own
_REQUIRED = ("images", "image_ids", "responses", "trial_image", "trial_tier")


class _PlainReader:
    """Rows of a plain-block dataset (:func:`~neuroreg.data.hdf5.contiguous_offset`), by file reads.

    Within the budget the dataset is read once, front to back in large sequential
    reads, by a background thread started with the reader (or at the first batch),
    into one array; a batch waits only until the reading has passed its last row, and
    later batches index memory. Beyond the budget, each batch reads its sorted unique
    rows from a read-only memory map (the page cache keeps what fits).
    """

    def __init__(self, path: Path, dataset: h5py.Dataset, offset: int, capacity: int, prefetch: bool):
        self.path = path
        self.shape = tuple(int(n) for n in dataset.shape)
        self.dtype = dataset.dtype
        self.rows = self.shape[0]
        self.offset = offset
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self.nbytes = self.rows * self.row_bytes
        self.cached = capacity >= self.nbytes
        self.reads = 0
        self.full: np.ndarray | None = None
        self._buf: np.ndarray | None = None
        self._map: np.ndarray | None = None
        self._error: BaseException | None = None
        self._stop = False
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._pid = os.getpid()
        # a few concurrent sequential streams over consecutive row ranges read a cold
        # file faster than one (the device queue stays busy)
        n = max(1, min(_STREAMS, -(-self.nbytes // _STREAM_MIN_BYTES)))
        edges = np.linspace(0, self.rows, n + 1).astype(np.int64)
        self._lo, self._hi = edges[:-1], edges[1:]
        self._ready = self._lo.copy()  # per range: rows before this one are in memory
        if self.cached and prefetch:
            self.start()

    def start(self) -> None:
        """Start reading the whole dataset in the background (once)."""
        if self._buf is not None:
            return
        self._buf = np.empty(self.shape, dtype=self.dtype)
        self._pid = os.getpid()
        self._ready = self._lo.copy()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), name=f"read {self.path.name} [{i}]", daemon=True)
            for i in range(len(self._lo))
        ]
        for t in self._threads:
            t.start()

    def _run(self, i: int) -> None:
        lo, hi = int(self._lo[i]), int(self._hi[i])

        def progress(nbytes: int) -> None:
            if self._stop:
                raise InterruptedError("reader closed")
            with self._cond:
                self._ready[i] = lo + (nbytes // self.row_bytes if self.row_bytes else hi - lo)
                if (self._ready >= self._hi).all():
                    self.full = self._buf
                    self.reads += 1
                self._cond.notify_all()

        try:
            if hi > lo:
                read_at(self.path, self.offset + lo * self.row_bytes, self._buf[lo:hi], done=progress)
            else:
                progress(0)
        except BaseException as err:  # handed to the reading batch
            with self._cond:
                self._error = err
                self._cond.notify_all()

    def _wait(self, rows: np.ndarray) -> np.ndarray:
        if self._buf is not None and self._pid != os.getpid() and self.full is None:
            # a forked worker: the reading threads stayed in the parent
            self._buf = None
        if self._buf is None:
            self.start()
        need = np.full(len(self._lo), -1, dtype=np.int64)
        np.maximum.at(need, np.searchsorted(self._hi, rows, side="right"), rows)
        with self._cond:
            while self.full is None and (self._ready <= need).any() and self._error is None:
                self._cond.wait()
        if self._error is not None:
            raise RecordingError(f"{self.path}: reading failed ({self._error})") from self._error
        return self._buf

    def take(self, rows: np.ndarray) -> np.ndarray:
        if self.full is not None:
            return self.full[rows]
        if not len(rows):
            return np.empty((0, *self.shape[1:]), dtype=self.dtype)
        if self.cached:
            return self._wait(rows)[rows]
        if self._map is None:
            self._map = np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape)
        uniq, inverse = np.unique(rows, return_inverse=True)
        self.reads += 1
        return np.asarray(self._map[uniq])[inverse.ravel()]

    def close(self) -> None:
        self._stop = True
        if self._pid == os.getpid():
            for t in self._threads:
                t.join()
        self._map = None


class _RowReader:
    """Rows of an HDF5 dataset of any other layout (chunked, filtered), under a memory budget of ``capacity`` bytes.

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

    def close(self) -> None:
        pass


class LazyRecording:
    """An h5-backed, read-only view of a NeuralRecording file.

    Args:
        path: a file written by :meth:`NeuralRecording.save`.
        cache_bytes: memory budget (images and responses share it in proportion to
            their size). A dataset that fits its share is read once and kept in memory;
            one that does not is read row-wise per batch. Default 1 GiB.
        block_rows: rows per block read of chunked or compressed datasets.
        prefetch: start reading the datasets that fit the budget when the file is
            opened (else at the first batch).

    Attributes in memory: ``image_ids [N]``, ``trial_image [T]``, ``trial_tier [T]``,
    ``neurons`` (``[K]`` arrays), and the descriptive attributes.
    """

    def __init__(self, path: str | os.PathLike, *, cache_bytes: int = 1 << 30, block_rows: int = 256, prefetch: bool = True):
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
        self._images = self._reader(images, block_rows, int(cache_bytes * share) + 1, prefetch)
        self._responses = self._reader(responses, block_rows, int(cache_bytes * (1 - share)) + 1, prefetch)

    def _reader(self, dataset: h5py.Dataset, block_rows: int, capacity: int, prefetch: bool):
        offset = contiguous_offset(dataset)
        if offset is not None:
            return _PlainReader(self.path, dataset, offset, capacity, prefetch)
        return _RowReader(dataset, block_rows, capacity)

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
        for reader in (getattr(self, "_images", None), getattr(self, "_responses", None)):
            if reader is not None:
                reader.close()
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
