"""NeuralRecording: the one on-disk format for trial-level neural data (HDF5).

Layout of a ``.h5`` file (schema version 1)::

    /images          [N, C, H, W]  uint8 (0..255) or float32 (0..1)
    /image_ids       [N]           int64 or UTF-8 strings
    /responses       [T, K]        float32, NaN where a neuron was not recorded on a trial
    /trial_image     [T]           int64 index into /images
    /trial_tier      [T]           UTF-8 strings, one of TIERS
    /neurons/<field> [K]           per-neuron metadata; ``ids`` is required
    attrs: species, area, response_unit, pixels_per_degree, source, citation,
           license, schema_version

``/images`` and ``/responses`` are written as contiguous (unchunked, unfiltered)
datasets, so they can be read in one sequential pass or memory-mapped
(:mod:`neuroreg.data.lazy`); files with chunked datasets read the same.

Readers of external formats turn their format into a :class:`NeuralRecording`;
everything downstream reads only this.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from neuroreg.io import atomic_hdf5

from .hdf5 import contiguous_offset, open_hdf5, read_plain

SCHEMA_VERSION = 1
TIERS = ("train", "validation", "test", "final_test")
RESPONSE_UNITS = ("spikes", "dF/F", "deconvolved", "firing_rate", "a.u.")
#: other spellings of the units (matched case-insensitively, as the names above are) -> the unit stored
RESPONSE_UNIT_ALIASES = {
    "spike_count": "spikes", "spike_counts": "spikes", "counts": "spikes", "spike": "spikes",
    "dff": "dF/F", "df/f0": "dF/F", "deltaf/f": "dF/F",
    "deconv": "deconvolved", "inferred_spikes": "deconvolved",
    "rate": "firing_rate", "firing rate": "firing_rate", "spikes/s": "firing_rate", "hz": "firing_rate",
    "au": "a.u.", "arbitrary": "a.u.", "z-score": "a.u.", "zscore": "a.u.",
}
_BLOCK_BYTES = 64 << 20  # rows per pass over a (possibly memory-mapped) response array: this many bytes
_REQUIRED_DATASETS = ("images", "image_ids", "responses", "trial_image", "trial_tier")
_ATTRS = ("species", "area", "response_unit", "pixels_per_degree", "source", "citation", "license")


class RecordingError(ValueError):
    """A NeuralRecording (in memory or on disk) breaks the format contract."""


def response_unit(spelling: str, field_name: str = "response_unit") -> str:
    """The unit :data:`RESPONSE_UNITS` names for ``spelling`` (a unit or one of its
    :data:`RESPONSE_UNIT_ALIASES`, any case).

    >>> response_unit("Spike_Count"), response_unit("dff"), response_unit("dF/F")
    ('spikes', 'dF/F', 'dF/F')

    Raises:
        RecordingError: an unknown spelling; the message lists the accepted ones.
    """
    known = {u.lower(): u for u in RESPONSE_UNITS} | {a.lower(): u for a, u in RESPONSE_UNIT_ALIASES.items()}
    unit = known.get(str(spelling).strip().lower())
    if unit is None:
        aliases = ", ".join(f"{a} -> {u}" for a, u in RESPONSE_UNIT_ALIASES.items())
        raise RecordingError(
            f"field '{field_name}': expected one of {list(RESPONSE_UNITS)} (any case) or an alias ({aliases}), "
            f"found {spelling!r}"
        )
    return unit


def row_blocks(array: np.ndarray, rows: np.ndarray | None = None, block_bytes: int | None = None):
    """``array`` (or its ``rows``, ascending) in consecutive row blocks of about ``block_bytes``.

    Passes over responses go block by block, so a memory-mapped recording
    (:meth:`NeuralRecording.load` with ``mmap=True``) is read once, front to back,
    and no temporary the size of the whole array is made (``block_bytes`` defaults
    to 64 MiB).
    """
    block_bytes = _BLOCK_BYTES if block_bytes is None else block_bytes
    n = array.shape[0] if rows is None else len(rows)
    row_bytes = int(np.prod(array.shape[1:], dtype=np.int64)) * array.dtype.itemsize
    step = max(1, block_bytes // max(row_bytes, 1))
    for lo in range(0, n, step):
        yield array[lo : lo + step] if rows is None else array[rows[lo : lo + step]]


@dataclass(frozen=True)
class FileMap:
    """A picklable reference to a read-only memory map of a whole array in a file.

    Pickling a memory-mapped array copies its data; a mapped recording (and the datasets
    over it) pickle this reference instead, so DataLoader workers and spawned DDP ranks
    map the same file rather than receiving a copy of it.
    """

    path: str
    offset: int
    dtype: str
    shape: tuple[int, ...]

    @classmethod
    def of(cls, array) -> FileMap | None:
        """The reference when ``array`` is (a view of) the whole of a read-only ``np.memmap``, else None."""
        base = array  # the root of the view chain: the memmap whose own base is the mmap itself
        while isinstance(getattr(base, "base", None), np.ndarray):
            base = base.base
        if not isinstance(base, np.memmap) or base.filename is None or base.mode != "r":
            return None
        if array.shape != base.shape or array.dtype != base.dtype or array.strides != base.strides:
            return None
        if array.__array_interface__["data"][0] != base.__array_interface__["data"][0]:
            return None
        return cls(str(base.filename), int(base.offset), base.dtype.str, tuple(int(n) for n in base.shape))

    def open(self) -> np.ndarray:
        return np.asarray(np.memmap(self.path, dtype=np.dtype(self.dtype), mode="r", offset=self.offset, shape=self.shape))


@dataclass(frozen=True)
class ResponseSummary:
    """What the checks and set-up of a recording need from its responses, gathered in one
    block-wise pass (:meth:`NeuralRecording.response_summary`), so a memory-mapped
    recording larger than memory is read once rather than once per check.

    Attributes:
        inf: number of infinite values.
        negative: number of negative values.
        min_negative: the smallest negative value (``0.0`` when there is none).
        sums: ``{tier: [K] float64}`` per neuron, the sum of the recorded (non-NaN)
            responses over the trials of each tier present.
        counts: ``{tier: [K] int64}`` the number of recorded responses summed.
    """

    inf: int
    negative: int
    min_negative: float
    sums: dict[str, np.ndarray]
    counts: dict[str, np.ndarray]

    @classmethod
    def of(cls, responses: np.ndarray, trial_tier: np.ndarray | None = None) -> ResponseSummary:
        """Scan ``responses`` ``[T, K]`` (block by block, see :func:`row_blocks`); per-tier sums need
        ``trial_tier`` ``[T]``."""
        k = responses.shape[1]
        tiers = [] if trial_tier is None else sorted(set(trial_tier.tolist()))
        sums = {t: np.zeros(k, dtype=np.float64) for t in tiers}
        counts = {t: np.zeros(k, dtype=np.int64) for t in tiers}
        n_inf = n_neg = 0
        low = 0.0
        hi = 0
        for block in row_blocks(responses):
            lo, hi = hi, hi + block.shape[0]  # the block's rows
            missing = np.isnan(block)
            any_missing = bool(missing.any())
            filled = np.where(missing, np.float32(0), block) if any_missing else np.asarray(block)
            if not filled.size:
                continue
            # two reductions find the rare cases; only then are the values counted
            block_low, block_high = float(filled.min()), float(filled.max())
            if np.isinf(block_low) or np.isinf(block_high):
                n_inf += int(np.isinf(filled).sum())
            if block_low < 0:
                n_neg += int((filled < 0).sum())
                low = min(low, block_low)
            if not tiers:
                continue
            block_tiers = trial_tier[lo:hi]
            present, sizes = np.unique(block_tiers, return_counts=True)
            major = int(np.argmax(sizes))  # its sums are the block's minus the other tiers' (no row copy)
            total = filled.sum(axis=0, dtype=np.float64)
            total_missing = missing.sum(axis=0) if any_missing else 0
            for i, (t, size) in enumerate(zip(present.tolist(), sizes.tolist())):
                if i == major:
                    continue
                rows = block_tiers == t
                part = filled[rows].sum(axis=0, dtype=np.float64)
                n_missing = missing[rows].sum(axis=0) if any_missing else 0
                sums[t] += part
                counts[t] += size - n_missing
                total -= part
                total_missing = total_missing - n_missing
            sums[present[major]] += total
            counts[present[major]] += int(sizes[major]) - total_missing
        return cls(inf=n_inf, negative=n_neg, min_negative=low, sums=sums, counts=counts)


class PicklesResponsesByFile:
    """Mixin for objects with a ``responses`` array: when it is a read-only memory map of a
    file, pickling stores its :class:`FileMap` and unpickling maps the file again."""

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        ref = FileMap.of(state["responses"]) if isinstance(state["responses"], np.ndarray) else None
        if ref is not None:
            state["responses"] = ref
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        if isinstance(state["responses"], FileMap):
            state["responses"] = state["responses"].open()
        self.__dict__.update(state)


def string_array(values) -> np.ndarray:
    return np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values).ravel()], dtype=object)


@dataclass
class NeuralRecording(PicklesResponsesByFile):
    """Trial-level responses of K neurons to N images.

    Args:
        images: ``[N, C, H, W]`` uint8 (0..255) or float32 (0..1) stimuli.
        image_ids: ``[N]`` identifiers of the images (integers or strings).
        responses: ``[T, K]`` float32 responses per trial; NaN = neuron not recorded.
        trial_image: ``[T]`` index of the image shown on each trial.
        trial_tier: ``[T]`` tier of each trial, one of ``TIERS``.
        neurons: per-neuron metadata, each array ``[K]``; must contain ``"ids"``.
        species, area, response_unit, pixels_per_degree, source, citation, license:
            descriptive attributes stored on the file.
        name: where the recording came from (a file path), used in error messages.

    Raises:
        RecordingError: when any field breaks the contract; the message names the
            field, what was expected and what was found.
    """

    images: np.ndarray
    image_ids: np.ndarray
    responses: np.ndarray
    trial_image: np.ndarray
    trial_tier: np.ndarray
    neurons: dict[str, np.ndarray]
    species: str
    area: str
    response_unit: str
    pixels_per_degree: float
    source: str
    citation: str = ""
    license: str = ""
    name: str = field(default="<in memory>", compare=False)
    #: True when ``responses`` is a read-only memory map of the file (``load(..., mmap=True)``)
    mapped: bool = field(default=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images)
        ids = np.asarray(self.image_ids)
        self.image_ids = ids.astype(np.int64) if ids.dtype.kind in "iu" else string_array(ids)
        self.responses = np.asarray(self.responses, dtype=np.float32)
        self.trial_image = np.asarray(self.trial_image)
        self.trial_tier = string_array(self.trial_tier)
        self.neurons = {k: np.asarray(v) for k, v in self.neurons.items()}
        self.pixels_per_degree = float(self.pixels_per_degree)
        self.validate()

    # ------------------------------------------------------------------ checks
    def _fail(self, field_name: str, expected: str, found) -> None:
        raise RecordingError(f"{self.name}: field '{field_name}': expected {expected}, found {found}")

    def validate(self) -> None:
        """Check every field against the contract (called on construction and load)."""
        im = self.images
        if im.ndim != 4:
            self._fail("images", "rank 4 [N, C, H, W]", f"shape {im.shape}")
        if im.shape[1] not in (1, 3):
            self._fail("images", "1 or 3 channels in axis 1 ([N, C, H, W])", f"shape {im.shape}")
        if im.dtype == np.uint8:
            pass
        elif im.dtype == np.float32:
            if not np.isfinite(im).all():
                self._fail("images", "finite float32 values", f"{int((~np.isfinite(im)).sum())} NaN/inf values")
            if im.size and (im.min() < 0.0 or im.max() > 1.0):
                self._fail("images", "float32 values in [0, 1]", f"range [{im.min():.3g}, {im.max():.3g}]")
        else:
            self._fail("images", "dtype uint8 or float32", im.dtype)
        n_images = im.shape[0]
        if self.image_ids.shape != (n_images,):
            self._fail("image_ids", f"shape ({n_images},) (one id per image)", f"shape {self.image_ids.shape}")
        if len(np.unique(self.image_ids)) != n_images:
            self._fail("image_ids", "unique ids", f"{n_images - len(np.unique(self.image_ids))} duplicates")
        r = self.responses
        if r.ndim != 2:
            self._fail("responses", "rank 2 [trials, neurons]", f"shape {r.shape}")
        n_trials, n_neurons = r.shape
        if self.trial_image.shape != (n_trials,):
            self._fail("trial_image", f"shape ({n_trials},) (one entry per trial of responses)", f"shape {self.trial_image.shape}")
        if self.trial_image.dtype.kind not in "iu":
            self._fail("trial_image", "integer indices into images", f"dtype {self.trial_image.dtype}")
        self.trial_image = self.trial_image.astype(np.int64)
        if n_trials and (self.trial_image.min() < 0 or self.trial_image.max() >= n_images):
            self._fail(
                "trial_image",
                f"indices in [0, {n_images - 1}]",
                f"range [{self.trial_image.min()}, {self.trial_image.max()}]",
            )
        if self.trial_tier.shape != (n_trials,):
            self._fail("trial_tier", f"shape ({n_trials},)", f"shape {self.trial_tier.shape}")
        unknown = sorted(set(self.trial_tier) - set(TIERS))
        if unknown:
            self._fail("trial_tier", f"tiers in {list(TIERS)}", f"unknown tiers {unknown}")
        if "ids" not in self.neurons:
            self._fail("neurons", "a per-neuron 'ids' array", f"fields {sorted(self.neurons)}")
        for key, values in self.neurons.items():
            if values.shape[:1] != (n_neurons,):
                self._fail(f"neurons/{key}", f"leading dimension {n_neurons} (one entry per neuron)", f"shape {values.shape}")
        if self.response_unit not in RESPONSE_UNITS:
            self._fail("response_unit", f"one of {list(RESPONSE_UNITS)} (response_unit() maps other spellings to these)",
                       repr(self.response_unit))
        if not np.isfinite(self.pixels_per_degree) or self.pixels_per_degree <= 0:
            self._fail("pixels_per_degree", "a positive number", self.pixels_per_degree)
        n_inf = self.response_summary().inf  # last: the one pass over the responses needs valid tiers
        if n_inf:
            self._fail("responses", "finite values or NaN (not recorded)", f"{n_inf} inf values")

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        cached = self.__dict__.get("_summary")
        if cached is not None:  # the arrays are new objects after unpickling: keep the summary valid for them
            self.__dict__["_summary"] = ((id(self.responses), id(self.trial_tier)), cached[1])

    def response_summary(self) -> ResponseSummary:
        """Counts and per-tier sums of the responses (:class:`ResponseSummary`), from one pass over them,
        kept until ``responses`` or ``trial_tier`` is replaced. Validation makes it, so the data modules'
        set-up and the loss checks read nothing more."""
        key = (id(self.responses), id(self.trial_tier))
        cached = self.__dict__.get("_summary")
        if cached is None or cached[0] != key:
            cached = (key, ResponseSummary.of(self.responses, self.trial_tier))
            self.__dict__["_summary"] = cached
        return cached[1]

    # -------------------------------------------------------------- properties
    @property
    def n_images(self) -> int:
        return int(self.images.shape[0])

    @property
    def n_trials(self) -> int:
        return int(self.responses.shape[0])

    @property
    def n_neurons(self) -> int:
        return int(self.responses.shape[1])

    @property
    def tiers(self) -> list[str]:
        """Tiers present, in canonical order."""
        present = set(self.trial_tier)
        return [t for t in TIERS if t in present]

    def images_float(self) -> np.ndarray:
        """Images as float32 in [0, 1], ``[N, C, H, W]``."""
        if self.images.dtype == np.uint8:
            return self.images.astype(np.float32) / 255.0
        return self.images

    # ----------------------------------------------------------- derived views
    def _trials(self, tier: str | None) -> np.ndarray:
        if tier is None:
            return np.arange(self.n_trials)
        if tier not in TIERS:
            raise RecordingError(f"{self.name}: unknown tier {tier!r}; expected one of {list(TIERS)}")
        return np.flatnonzero(self.trial_tier == tier)

    def repeats(self, tier: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Responses grouped by image: ``[images, max_repeats, neurons]``, NaN-padded.

        Args:
            tier: restrict to the trials of one tier (``None``: all trials).

        Returns:
            ``(image_index [M], repeats [M, R, K])`` where ``image_index`` are the
            indices (into ``images``) of the M images shown in the selection, in
            ascending order, and R is the largest number of repeats of any of them.
        """
        trials = self._trials(tier)
        img = self.trial_image[trials]
        image_index, inverse, counts = np.unique(img, return_inverse=True, return_counts=True)
        max_rep = int(counts.max()) if len(counts) else 0
        out = np.full((len(image_index), max_rep, self.n_neurons), np.nan, dtype=np.float32)
        order = np.argsort(inverse, kind="stable")
        slot = np.empty(len(trials), dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        slot[order] = np.arange(len(trials)) - np.repeat(starts, counts)
        out[inverse, slot] = self.responses[trials]
        return image_index, out

    def mean_per_image(self, tier: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Mean response over repeats per image, ignoring NaN trials.

        Returns:
            ``(image_index [M], mean [M, K])``; a neuron never recorded on an image
            gives NaN there.
        """
        image_index, reps = self.repeats(tier)
        valid = ~np.isnan(reps)
        counts = valid.sum(axis=1)
        sums = np.where(valid, reps, 0.0).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan).astype(np.float32)
        return image_index, mean

    # --------------------------------------------------------------------- I/O
    def save(self, path: str | os.PathLike) -> Path:
        """Write the recording to ``path`` atomically (:func:`neuroreg.io.atomic_hdf5`: built in memory, then
        temp file, fsync, rename; a full disk is an ``OSError`` and leaves nothing behind)."""
        path = Path(path)
        str_dt = h5py.string_dtype("utf-8")
        with atomic_hdf5(path) as f:
            # plain contiguous blocks: read in one sequential pass or memory-mapped (neuroreg.data.lazy)
            f.create_dataset("images", data=self.images)
            if self.image_ids.dtype == object:
                f.create_dataset("image_ids", data=self.image_ids.astype(str).tolist(), dtype=str_dt)
            else:
                f.create_dataset("image_ids", data=self.image_ids)
            f.create_dataset("responses", data=self.responses)
            f.create_dataset("trial_image", data=self.trial_image)
            f.create_dataset("trial_tier", data=self.trial_tier.astype(str).tolist(), dtype=str_dt)
            g = f.create_group("neurons")
            for key, values in self.neurons.items():
                if values.dtype.kind in "OUS":
                    g.create_dataset(key, data=string_array(values).astype(str).tolist(), dtype=str_dt)
                else:
                    g.create_dataset(key, data=values)
            for attr in _ATTRS:
                f.attrs[attr] = getattr(self, attr)
            f.attrs["schema_version"] = SCHEMA_VERSION
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = False) -> NeuralRecording:
        """Read and validate a recording written by :meth:`save`.

        Args:
            path: the file.
            mmap: memory-map ``/responses`` read-only instead of reading it into memory
                (for recordings larger than memory; the page cache keeps what fits).
                The file must store it as a plain block, as :meth:`save` writes it;
                images and the small arrays are read into memory. Validation reads the
                responses once, block by block.

        Raises:
            FileNotFoundError: the file does not exist.
            RecordingError: the file is not a valid NeuralRecording (names the field).
        """
        path = Path(path)
        with open_hdf5(path, "NeuralRecording file", RecordingError) as f:
            for key in _REQUIRED_DATASETS:
                if key not in f:
                    raise RecordingError(f"{path}: missing dataset '/{key}'; found {sorted(f.keys())}")
            for attr in ("species", "area", "response_unit", "pixels_per_degree", "source", "schema_version"):
                if attr not in f.attrs:
                    raise RecordingError(f"{path}: missing attribute '{attr}'; found {sorted(f.attrs.keys())}")
            version = int(f.attrs["schema_version"])
            if version != SCHEMA_VERSION:
                raise RecordingError(f"{path}: attribute 'schema_version': expected {SCHEMA_VERSION}, found {version}")
            ids = f["image_ids"][()]
            neurons = {}
            if "neurons" in f:
                for key in f["neurons"]:
                    values = f["neurons"][key][()]
                    neurons[key] = string_array(values) if values.dtype.kind in "OS" else values
            if mmap:
                ds = f["responses"]
                offset = contiguous_offset(ds)
                if offset is None:
                    raise RecordingError(
                        f"{path}: dataset '/responses': expected a plain contiguous block to memory-map (as "
                        f"NeuralRecording.save writes it), found chunks={ds.chunks}, compression={ds.compression}; "
                        "rewrite it with NeuralRecording.load(path).save(new_path), or load it without mmap"
                    )
                if ds.dtype != np.float32:
                    raise RecordingError(f"{path}: dataset '/responses': expected float32 to memory-map, found {ds.dtype}")
                responses = np.memmap(path, dtype=np.float32, mode="r", offset=offset, shape=tuple(ds.shape))
            else:
                responses = read_plain(path, f["responses"])
            return cls(
                images=read_plain(path, f["images"]),
                image_ids=string_array(ids) if ids.dtype.kind in "OS" else ids,
                responses=responses,
                trial_image=f["trial_image"][()],
                trial_tier=f["trial_tier"][()],
                neurons=neurons,
                species=str(f.attrs["species"]),
                area=str(f.attrs["area"]),
                response_unit=str(f.attrs["response_unit"]),
                pixels_per_degree=float(f.attrs["pixels_per_degree"]),
                source=str(f.attrs["source"]),
                citation=str(f.attrs.get("citation", "")),
                license=str(f.attrs.get("license", "")),
                name=str(path),
                mapped=mmap,
            )
