"""RDM targets: neural data that is only a representational dissimilarity matrix over images.

Some public data sets publish no per-neuron responses, only the dissimilarities of the
population's response patterns between every pair of a set of images (e.g. the 92-image
macaque IT RDM of Kiani et al. 2007 / Kriegeskorte et al. 2008). They enter as their own
type, :class:`RDMTargets`, beside :class:`~neuroreg.data.recording.NeuralRecording`:
nothing pretends they are responses. They are consumed by RSA scoring
(:func:`neuroreg.evaluation.brain.rdm_similarity`) and by the RSA regularizer through
neural batches (:class:`RDMSource` in a
:class:`~neuroreg.data.datamodules.RegularizedDataModule`'s ``neural`` mapping), whose
target is the sub-RDM over each batch's images.

File layout (HDF5, schema version 1)::

    /images          [N, C, H, W]  uint8 (0..255)
    /image_ids       [N]           int64 or UTF-8 strings
    /rdm             [N(N-1)/2]    float64, condensed, scipy ``squareform`` order
    /labels          [N]           UTF-8 strings (optional)
    /flags/<name>    [N]           bool, per-image category flags (optional)
    attrs: format ("neuroreg.RDMTargets"), schema_version, metric, species, area,
           source, citation, license

The condensed order is that of :func:`scipy.spatial.distance.squareform` (and of
MATLAB's ``pdist``): pairs ``(i, j)``, ``i < j``, row by row.

Sources of neural batches (all :class:`RDMSource`):

- :class:`RDMFile`: an RDMTargets ``.h5`` file;
- :class:`ManifestRDM`: a data manifest (``kriegeskorte2008-it92``), fetched, verified and
  converted on first use, cached by content;
- :class:`ShuffledRDM` (control): another source's RDM with rows and columns permuted
  jointly (seeded): the same dissimilarities, no image–dissimilarity pairing;
- :class:`PixelRDM` (control): the RDM of the same images' (pooled) pixels.

>>> import tempfile, pathlib
>>> t = RDMTargets(np.zeros((3, 1, 2, 2), np.uint8), np.arange(3), np.array([0.5, 1.0, 1.5]), metric="correlation")
>>> t.square()[2, 0], t.subset([2, 0]).rdm.tolist()
(np.float64(1.0), [1.0])
>>> RDMTargets.load(t.save(pathlib.Path(tempfile.mkdtemp()) / "t.h5")).summary()  # doctest: +ELLIPSIS
'... 3 images (1x2x2), 3 dissimilarities (correlation), range [0.5, 1.5], species ?, area ?'
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from neuroreg.data.hdf5 import open_hdf5
from neuroreg.io import atomic_hdf5

from .base import NeuralBatchSource
from .format import target_key

SCHEMA_VERSION = 1
FORMAT = "neuroreg.RDMTargets"
#: metrics whose model RDM neuroreg computes (:func:`neuroreg.regularizers.functional.rdm`)
COMPUTABLE_METRICS = ("correlation", "cosine")
_ATTRS = ("metric", "species", "area", "source", "citation", "license")


class RDMError(ValueError):
    """An RDM (in memory or on disk) breaks the RDMTargets contract."""


def condensed_length(n: int) -> int:
    """Number of image pairs ``n(n-1)/2``."""
    return n * (n - 1) // 2


def _strings(values) -> np.ndarray:
    return np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values).ravel()], dtype=object)


@dataclass
class RDMTargets:
    """Dissimilarities between the neural response patterns to every pair of N images.

    Args:
        images: ``[N, C, H, W]`` uint8 stimuli (C = 1 or 3).
        image_ids: ``[N]`` unique identifiers (integers or strings).
        rdm: ``[N(N-1)/2]`` condensed dissimilarities in scipy ``squareform`` order;
            finite and non-negative (a square matrix is refused: use :meth:`from_square`).
        metric: how the dissimilarities were computed (e.g. ``"correlation"``: 1 − Pearson
            r between response patterns; ``"cosine"``; ``"euclidean"``).
        labels: optional ``[N]`` per-image label strings (e.g. categories).
        flags: optional ``{name: [N] bool}`` per-image category flags.
        species, area, source, citation, license: descriptive attributes.
        name: where the RDM came from (a file path), used in error messages.

    Raises:
        RDMError: a field breaks the contract; the message names the field, what was
            expected and what was found.
    """

    images: np.ndarray
    image_ids: np.ndarray
    rdm: np.ndarray
    metric: str
    labels: np.ndarray | None = None
    flags: dict[str, np.ndarray] = field(default_factory=dict)
    species: str = ""
    area: str = ""
    source: str = ""
    citation: str = ""
    license: str = ""
    name: str = field(default="<in memory>", compare=False)

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images)
        ids = np.asarray(self.image_ids)
        self.image_ids = ids.astype(np.int64) if ids.dtype.kind in "iu" else _strings(ids)
        self.rdm = np.asarray(self.rdm)
        if self.labels is not None:
            self.labels = _strings(self.labels)
        self.flags = {str(k): np.asarray(v) for k, v in self.flags.items()}
        self.validate()

    def _fail(self, field_name: str, expected: str, found) -> None:
        raise RDMError(f"{self.name}: field '{field_name}': expected {expected}, found {found}")

    def validate(self) -> None:
        """Check every field (called on construction and load)."""
        im = self.images
        if im.ndim != 4 or im.shape[1] not in (1, 3):
            self._fail("images", "[N, 1 or 3, H, W]", f"shape {im.shape}")
        if im.dtype != np.uint8:
            self._fail("images", "dtype uint8", im.dtype)
        n = im.shape[0]
        if n < 2:
            self._fail("images", "at least 2 images (an RDM compares pairs)", n)
        if self.image_ids.shape != (n,):
            self._fail("image_ids", f"shape ({n},) (one id per image)", f"shape {self.image_ids.shape}")
        if len(np.unique(self.image_ids)) != n:
            self._fail("image_ids", "unique ids", f"{n - len(np.unique(self.image_ids))} duplicates")
        r = self.rdm
        if r.ndim != 1:
            self._fail("rdm", f"a condensed vector [{condensed_length(n)}] (scipy squareform order; "
                       "a square matrix goes through RDMTargets.from_square)", f"shape {r.shape}")
        if r.shape[0] != condensed_length(n):
            self._fail("rdm", f"length n(n-1)/2 = {condensed_length(n)} for {n} images", f"length {r.shape[0]}")
        if r.dtype.kind not in "fiu":
            self._fail("rdm", "numbers", f"dtype {r.dtype}")
        self.rdm = r.astype(np.float64)
        if not np.isfinite(self.rdm).all():
            self._fail("rdm", "finite dissimilarities", f"{int((~np.isfinite(self.rdm)).sum())} NaN/inf values")
        if (self.rdm < 0).any():
            self._fail("rdm", "non-negative dissimilarities", f"{int((self.rdm < 0).sum())} negative (min {self.rdm.min():.4g})")
        if not isinstance(self.metric, str) or not self.metric.strip():
            self._fail("metric", "the name of the dissimilarity (e.g. 'correlation')", repr(self.metric))
        if self.labels is not None and self.labels.shape != (n,):
            self._fail("labels", f"shape ({n},) (one label per image)", f"shape {self.labels.shape}")
        for key, values in self.flags.items():
            if values.shape != (n,) or values.dtype.kind not in "biu" or not np.isin(values, (0, 1)).all():
                self._fail(f"flags/{key}", f"[{n}] booleans (one per image)", f"shape {values.shape}, dtype {values.dtype}")
            self.flags[key] = values.astype(bool)

    # ----------------------------------------------------------------- views
    @property
    def n_images(self) -> int:
        return int(self.images.shape[0])

    def images_float(self) -> np.ndarray:
        """Images as float32 in [0, 1], ``[N, C, H, W]``."""
        return self.images.astype(np.float32) / 255.0

    def square(self) -> np.ndarray:
        """The ``[N, N]`` symmetric matrix with a zero diagonal."""
        n = self.n_images
        out = np.zeros((n, n), dtype=np.float64)
        i, j = np.triu_indices(n, k=1)
        out[i, j] = self.rdm
        out[j, i] = self.rdm
        return out

    def subset(self, index: Sequence[int] | np.ndarray) -> RDMTargets:
        """The RDM over images ``index`` (in that order; at least 2, no repeats).

        Raises:
            RDMError: fewer than 2 images, repeated or out-of-range indices.
        """
        index = np.asarray(index, dtype=np.int64).ravel()
        if len(index) < 2 or len(np.unique(index)) != len(index) or index.min() < 0 or index.max() >= self.n_images:
            self._fail("subset", f"at least 2 distinct indices in [0, {self.n_images - 1}]", index.tolist()[:10])
        sub = self.square()[np.ix_(index, index)]
        return replace(
            self, images=self.images[index], image_ids=self.image_ids[index], rdm=sub[np.triu_indices(len(index), k=1)],
            labels=None if self.labels is None else self.labels[index], flags={k: v[index] for k, v in self.flags.items()},
        )

    @classmethod
    def from_square(cls, matrix: np.ndarray, *, name: str = "<in memory>", atol: float = 1e-8, **fields: Any) -> RDMTargets:
        """An RDMTargets from a square ``[N, N]`` matrix, which must be symmetric with a zero diagonal.

        Raises:
            RDMError: not square, not symmetric (within ``atol``), or a non-zero diagonal.
        """
        m = np.asarray(matrix, dtype=np.float64)
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise RDMError(f"{name}: field 'rdm': expected a square [N, N] matrix, found shape {m.shape}")
        if not np.isfinite(m).all():
            raise RDMError(f"{name}: field 'rdm': expected finite dissimilarities, found NaN/inf")
        asym = float(np.abs(m - m.T).max()) if m.size else 0.0
        if asym > atol:
            raise RDMError(f"{name}: field 'rdm': expected a symmetric matrix, found |D - D^T| up to {asym:.3g}")
        diag = float(np.abs(np.diagonal(m)).max()) if m.size else 0.0
        if diag > atol:
            raise RDMError(f"{name}: field 'rdm': expected a zero diagonal, found values up to {diag:.3g}")
        return cls(rdm=m[np.triu_indices(len(m), k=1)], name=name, **fields)

    def fingerprint(self) -> str:
        """Content hash of the images, ids and dissimilarities (a cache-key component)."""
        h = hashlib.sha256(np.ascontiguousarray(self.images).tobytes())
        h.update(str(self.images.shape).encode())
        h.update("|".join(map(str, self.image_ids.tolist())).encode())
        h.update(np.ascontiguousarray(self.rdm).tobytes())
        h.update(self.metric.encode())
        return h.hexdigest()

    def summary(self) -> str:
        """One line: where from, images, dissimilarities, metric, range, species and area."""
        _, c, hh, w = self.images.shape
        return (
            f"{self.name}: {self.n_images} images ({c}x{hh}x{w}), {len(self.rdm)} dissimilarities ({self.metric}), "
            f"range [{self.rdm.min():.4g}, {self.rdm.max():.4g}], species {self.species or '?'}, area {self.area or '?'}"
        )

    # --------------------------------------------------------------------- I/O
    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (:func:`neuroreg.io.atomic_hdf5`: built in memory, then temporary file,
        fsync, rename; a full disk is an ``OSError`` and leaves nothing behind)."""
        path = Path(path)
        str_dt = h5py.string_dtype("utf-8")
        with atomic_hdf5(path) as f:
            f.create_dataset("images", data=self.images, chunks=(1, *self.images.shape[1:]), compression="gzip")
            if self.image_ids.dtype == object:
                f.create_dataset("image_ids", data=self.image_ids.astype(str).tolist(), dtype=str_dt)
            else:
                f.create_dataset("image_ids", data=self.image_ids)
            f.create_dataset("rdm", data=self.rdm)
            if self.labels is not None:
                f.create_dataset("labels", data=self.labels.astype(str).tolist(), dtype=str_dt)
            g = f.create_group("flags")
            for key, values in self.flags.items():
                g.create_dataset(key, data=values)
            for attr in _ATTRS:
                f.attrs[attr] = getattr(self, attr)
            f.attrs["format"] = FORMAT
            f.attrs["schema_version"] = SCHEMA_VERSION
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> RDMTargets:
        """Read and validate a file written by :meth:`save`.

        Raises:
            FileNotFoundError: the file does not exist.
            RDMError: not an RDMTargets file, another schema version, or a bad field.
        """
        path = Path(path)
        with open_hdf5(path, "RDMTargets file", RDMError) as f:
            if f.attrs.get("format") != FORMAT:
                raise RDMError(f"{path}: attribute 'format': expected {FORMAT!r}, found {f.attrs.get('format')!r}")
            version = int(f.attrs.get("schema_version", -1))
            if version != SCHEMA_VERSION:
                raise RDMError(f"{path}: attribute 'schema_version': expected {SCHEMA_VERSION}, found {version}")
            for key in ("images", "image_ids", "rdm"):
                if key not in f:
                    raise RDMError(f"{path}: missing dataset '/{key}'; found {sorted(f.keys())}")
            ids = f["image_ids"][()]
            return cls(
                images=f["images"][()],
                image_ids=_strings(ids) if ids.dtype.kind in "OS" else ids,
                rdm=f["rdm"][()],
                labels=f["labels"][()] if "labels" in f else None,
                flags={k: f["flags"][k][()] for k in f["flags"]} if "flags" in f else {},
                name=str(path),
                **{a: str(f.attrs.get(a, "")) for a in _ATTRS},
            )


def is_rdm_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an HDF5 file carrying the RDMTargets format attribute."""
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == FORMAT
    except (OSError, TypeError):
        return False


def condensed(d: torch.Tensor | np.ndarray) -> np.ndarray:
    """The condensed (scipy ``squareform`` order) upper triangle of a square ``[N, N]`` matrix."""
    d = d.detach().cpu().numpy() if isinstance(d, torch.Tensor) else np.asarray(d)
    return d[np.triu_indices(d.shape[0], k=1)].astype(np.float64)


def pixel_rdm(targets: RDMTargets, size: int | None = 32, metric: str | None = None) -> np.ndarray:
    """Condensed RDM of ``targets``' images as pixel vectors (average-pooled to ``size × size``).

    Args:
        targets: the images.
        size: side after pooling (``None``: full resolution).
        metric: ``"correlation"`` or ``"cosine"`` (default: ``targets.metric``).

    Raises:
        RDMError: a metric neuroreg cannot compute.
    """
    from neuroreg.regularizers.functional import rdm

    metric = metric or targets.metric
    if metric not in COMPUTABLE_METRICS:
        raise RDMError(f"{targets.name}: field 'metric': expected one of {list(COMPUTABLE_METRICS)} for a pixel RDM, found {metric!r}")
    x = torch.from_numpy(targets.images_float()).double()
    if size is not None:
        x = torch.nn.functional.adaptive_avg_pool2d(x, size)
    return condensed(rdm(x.flatten(1), metric))


# ------------------------------------------------------------------ sources
class RDMSource(NeuralBatchSource):
    """A source of neural batches whose targets are dissimilarities, not responses.

    In a :class:`~neuroreg.data.datamodules.RegularizedDataModule`'s ``neural`` mapping,
    it yields batches ``{"image": [Bn, C, H, W], "index": [Bn], "dissimilarity": [Bn, Bn]}``
    (the sub-RDM over the batch's images) in place of ``"target"``; the classifier hands
    that to regularizers that accept dissimilarities (RSA). There are no neurons:
    ``num_neurons`` is 0 and :meth:`load` refuses.
    """

    num_neurons = 0

    def load_rdm(self) -> RDMTargets:
        """The RDM and its images."""
        raise NotImplementedError

    @property
    def metric(self) -> str:
        return self.load_rdm().metric

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        raise TypeError(f"{type(self).__name__}: an RDM source gives dissimilarities, not responses; use load_rdm()")


class RDMFile(RDMSource):
    """An RDMTargets ``.h5`` file (e.g. written by ``neuroreg data convert kriegeskorte2008-it92``).

    Args:
        path: the file.
    """

    def __init__(self, path: str):
        self.path = Path(path)
        self._rdm: RDMTargets | None = None

    def load_rdm(self) -> RDMTargets:
        if self._rdm is None:
            self._rdm = RDMTargets.load(self.path)
        return self._rdm


class ManifestRDM(RDMSource):
    """An RDM data set named by its manifest, fetched, verified and converted on first use.

    The manifest's files are fetched into the data directory when missing (``fetch``;
    a mirror set by ``NEUROREG_DATA_MIRROR`` is honoured by the fetcher), every file is
    verified against its checksum, the manifest's reader converts them (it must return
    :class:`RDMTargets`), and the result is cached under ``cache_dir`` in a file keyed by
    the files' sha256, the reader and its options, and the neuroreg version.

    Args:
        manifest: a manifest name (``kriegeskorte2008-it92``, looked up in
            ``data_manifests/`` or ``$NEUROREG_MANIFEST_DIR``) or a manifest YAML path.
        data_dir: where fetched files live (default ``$NEUROREG_DATA_DIR``, else ``data/``).
        cache_dir: folder of converted RDMTargets files.
        options: reader options (override the manifest's), e.g. ``{"rdm": "hITvisStim_316vx"}``.
        fetch: download missing files (else a missing file is an error).
        manifest_dir: folder of the manifests (default ``data_manifests/``, or
            ``$NEUROREG_MANIFEST_DIR``).
    """

    def __init__(self, manifest: str, data_dir: str | None = None, cache_dir: str = "data/rdms",
                 options: dict[str, Any] | None = None, fetch: bool = True, manifest_dir: str | None = None):
        self.manifest = manifest
        self.manifest_dir = manifest_dir
        self.data_dir = data_dir
        self.cache_dir = Path(cache_dir)
        self.options = dict(options or {})
        self.fetch = fetch
        self._rdm: RDMTargets | None = None

    def _manifest(self):
        from neuroreg.data.manifests import find_manifest, load_manifest

        if self.manifest.endswith((".yaml", ".yml")):
            return load_manifest(self.manifest)
        return find_manifest(self.manifest, self.manifest_dir)

    def load_rdm(self) -> RDMTargets:
        if self._rdm is not None:
            return self._rdm
        import inspect

        from neuroreg.data.fetch import fetch, verify

        m = self._manifest()
        results = verify(m, self.data_dir)
        if self.fetch and any(v.status == "missing" for v in results):
            results = fetch(m, self.data_dir, progressbar=False)  # prints the license notice first
        missing = [str(v.path) for v in results if v.status == "missing"]
        if missing:
            raise FileNotFoundError(f"{m.name}: not fetched yet: {', '.join(missing)}; run `neuroreg data fetch {m.name}`")
        options = {**m.reader_options, **self.options}
        key = target_key("rdm-convert", m.name, str(m.reader_function), json.dumps(options, sort_keys=True, default=str),
                         *[f"{v.file.role}:{v.sha256}" for v in results])
        path = self.cache_dir / f"{m.name}_{key[:20]}.h5"
        if path.exists():
            rdm = RDMTargets.load(path)
            if f"key={key}" not in rdm.source:
                raise RDMError(f"{path}: attribute 'source': expected content key {key}, found {rdm.source!r}")
            self._rdm = rdm
            return rdm
        reader = m.reader()
        params = inspect.signature(reader).parameters
        unknown = sorted(set(options) - set(params))
        if unknown and not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            raise RDMError(f"{m.path}: field 'reader.options': {m.reader_function} has no arguments {unknown}")
        out = reader(**options, **{v.file.role: v.path for v in results})
        if not isinstance(out, RDMTargets):
            raise RDMError(f"{m.path}: field 'reader.function': expected a reader returning RDMTargets, "
                           f"found {m.reader_function} returning {type(out).__name__}")
        out = replace(out, source=f"{m.name}:{out.source}, key={key}", citation=m.citation.strip() or out.citation,
                      license=m.license_id or out.license)
        out.save(path)
        out.name = str(path)
        self._rdm = out
        return out


class ShuffledRDM(RDMSource):
    """Control: another source's RDM with rows and columns permuted jointly (seeded).

    ``D'[i, j] = D[p(i), p(j)]``: every dissimilarity value (and the RDM's structure) is
    kept, but which image pair it belongs to is broken.

    Args:
        source: the RDM source to shuffle.
        seed: permutation seed.
    """

    def __init__(self, source: RDMSource, seed: int = 0):
        self.source = source
        self.seed = seed

    def load_rdm(self) -> RDMTargets:
        base = self.source.load_rdm()
        perm = np.random.default_rng(self.seed).permutation(base.n_images)
        sq = base.square()[np.ix_(perm, perm)]
        return replace(base, rdm=sq[np.triu_indices(base.n_images, k=1)], source=f"shuffled (seed {self.seed}) {base.source}",
                       name=f"shuffled {base.name}")


class PixelRDM(RDMSource):
    """Control: the RDM of another source's images as pixel vectors (:func:`pixel_rdm`).

    Args:
        source: the RDM source whose images are used (its metric, unless ``metric``).
        size: side the images are average-pooled to before comparison (``None``: full size).
        metric: ``"correlation"`` or ``"cosine"`` (default: the source's).
    """

    def __init__(self, source: RDMSource, size: int | None = 32, metric: str | None = None):
        if size is not None and size < 1:
            raise ValueError(f"PixelRDM: 'size': expected >= 1 or None, found {size}")
        self.source = source
        self.size = size
        self.pixel_metric = metric

    def load_rdm(self) -> RDMTargets:
        base = self.source.load_rdm()
        metric = self.pixel_metric or base.metric
        return replace(base, rdm=pixel_rdm(base, self.size, metric), metric=metric,
                       source=f"pixels pooled to {self.size} of {base.source}", name=f"pixel RDM of {base.name}")


def rdm_targets(spec: str | os.PathLike | RDMTargets | RDMSource) -> RDMTargets:
    """An RDMTargets from itself, a source, an RDMTargets ``.h5`` path, or a manifest name
    (converted on demand through :class:`ManifestRDM`).

    Raises:
        FileNotFoundError: ``spec`` is neither a file nor a known manifest.
    """
    if isinstance(spec, RDMTargets):
        return spec
    if isinstance(spec, RDMSource):
        return spec.load_rdm()
    path = Path(spec)
    if path.is_file():
        return RDMTargets.load(path)
    try:
        return ManifestRDM(str(spec)).load_rdm()
    except KeyError as err:
        raise FileNotFoundError(f"RDM {str(spec)!r}: expected an RDMTargets .h5 file or a data manifest name, found neither ({err.args[0]})") from err


class RDMBatchDataset(Dataset):
    """Neural-batch items of an RDM source: ``{"image" [C, H, W], "index", "dissimilarity" [b]}``.

    Fetched a batch at a time (``__getitems__``): each item's ``dissimilarity`` is its row
    of the RDM restricted to the batch's images, so a collated batch carries the
    ``[b, b]`` sub-RDM over exactly those images.

    Args:
        stimuli: ``[M, C, H, W]`` float32 images (already in the classifier's format).
        square: ``[M, M]`` dissimilarities.
    """

    def __init__(self, stimuli: np.ndarray, square: np.ndarray):
        self.stimuli = torch.from_numpy(np.ascontiguousarray(stimuli, dtype=np.float32))
        self.square = torch.from_numpy(np.ascontiguousarray(square, dtype=np.float32))
        if self.square.shape != (len(self.stimuli), len(self.stimuli)):
            raise RDMError(f"RDMBatchDataset: expected a [{len(self.stimuli)}, {len(self.stimuli)}] RDM, found {tuple(self.square.shape)}")

    def __len__(self) -> int:
        return len(self.stimuli)

    def __getitems__(self, indices: list[int]) -> list[dict]:
        index = torch.as_tensor(list(indices), dtype=torch.long)
        sub = self.square[index][:, index]
        return [{"image": self.stimuli[i], "index": i, "dissimilarity": sub[k]} for k, i in enumerate(index.tolist())]

    def __getitem__(self, i: int) -> dict:
        return self.__getitems__([i])[0]
