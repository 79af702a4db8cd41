"""Where a NeuralRecording comes from: a ``.h5`` file, or a simulated population.

A :class:`RecordingSource` loads a :class:`~neuroreg.data.recording.NeuralRecording` and
hashes its content (a cache-key component). It is the input of a twin fit
(:class:`~neuroreg.data.datamodules.NeuralDataModule`) and of neural batches
(:class:`~neuroreg.targets.sources.RecordingResponses`). It is not a target source:
what a regularizer is pulled toward is in :mod:`neuroreg.targets`
(:class:`~neuroreg.targets.base.TargetSource` for targets aligned with the classification
images, :class:`~neuroreg.targets.base.NeuralBatchSource` for neural batches).

- :class:`RecordingFile`: a NeuralRecording ``.h5`` file;
- :class:`SimulatedRecording`: a recording of a simulated V1 population, built once and
  cached by content under ``data/recordings``;
- :class:`ManifestRecording`: a public data set of ``data_manifests/``, fetched, verified
  and converted on first use, cached by content under ``data/recordings``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from pathlib import Path

import numpy as np

from ..io import file_hash
from ..targets.format import target_key
from .images import ImageData
from .recording import NeuralRecording, RecordingError
from .simulated import V1Population, pink_noise_images


class RecordingSource:
    """Where a NeuralRecording comes from (injected by config): its loader and content hash."""

    def load(self, mmap: bool = False) -> NeuralRecording:
        """The recording; with ``mmap`` its responses memory-mapped from its file (:meth:`NeuralRecording.load`)."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """Content hash of the recording (a cache-key component)."""
        raise NotImplementedError


class RecordingFile(RecordingSource):
    """A NeuralRecording ``.h5`` file.

    Args:
        path: the file (see :mod:`neuroreg.data.recording` for its layout).
    """

    def __init__(self, path: str):
        self.path = Path(path)

    def load(self, mmap: bool = False) -> NeuralRecording:
        return NeuralRecording.load(self.path, mmap=mmap)

    def fingerprint(self) -> str:
        if not self.path.exists():
            raise FileNotFoundError(f"NeuralRecording file not found: {self.path}")
        return file_hash(self.path)


class SimulatedRecording(RecordingSource):
    """A recording of a simulated V1 population, built once and cached by content.

    Stimuli are 1/f noise images (``images=None``, seeded by ``seed``) or the first
    images of each split of an image set (train → ``train`` tier, validation →
    ``validation``, test → ``test``). Images are stored as uint8.

    Args:
        population: the :class:`~neuroreg.data.simulated.V1Population` to record.
        images: optional image set (its image size must be the population's).
        n_train, n_validation, n_test: images per tier.
        train_repeats, validation_repeats, test_repeats: trials per image per tier.
        contrast: RMS contrast of the noise images.
        seed: seed of the noise images and of the trial noise.
        cache_dir: folder of cached recordings (file name carries the content key).
    """

    def __init__(
        self,
        population: V1Population,
        images: ImageData | None = None,
        n_train: int = 1000,
        n_validation: int = 200,
        n_test: int = 100,
        train_repeats: int = 1,
        validation_repeats: int = 1,
        test_repeats: int = 10,
        contrast: float = 0.15,
        seed: int = 0,
        cache_dir: str = "data/recordings",
    ):
        counts = {"n_train": n_train, "n_validation": n_validation, "n_test": n_test}
        reps = {"train_repeats": train_repeats, "validation_repeats": validation_repeats, "test_repeats": test_repeats}
        for name, value in {**counts, **reps}.items():
            if value < 0:
                raise ValueError(f"SimulatedRecording: '{name}': expected >= 0, found {value}")
        if n_train < 1 or train_repeats < 1:
            raise ValueError(f"SimulatedRecording: 'n_train' and 'train_repeats': expected >= 1, found {n_train} and {train_repeats}")
        self.population = population
        self.images = images
        self.counts = counts
        self.repeats = reps
        self.contrast = contrast
        self.seed = seed
        self.cache_dir = Path(cache_dir)
        self._key: str | None = None
        self._stimuli: tuple[np.ndarray, np.ndarray] | None = None

    def _make_stimuli(self) -> tuple[np.ndarray, np.ndarray]:
        """``(images [N, C, S, S] uint8, tiers [N])``."""
        if self._stimuli is not None:
            return self._stimuli
        tiers = ("train", "validation", "test")
        n = [self.counts[f"n_{t}"] for t in tiers]
        if self.images is None:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, 1]))
            imgs = pink_noise_images(sum(n), self.population.image_size, rng, contrast=self.contrast)
            imgs = np.round(imgs * 255.0).astype(np.uint8)
        else:
            parts = []
            for tier, count in zip(tiers, n):
                split = self.images.split(tier)
                if len(split) < count:
                    raise ValueError(f"SimulatedRecording: 'n_{tier}': image set '{self.images.name}' has {len(split)} {tier} images, found n_{tier}={count}")
                parts.append(split.images[:count])
            imgs = np.concatenate(parts)
        self._stimuli = imgs, np.repeat(np.array(tiers, dtype=object), n)
        return self._stimuli

    def fingerprint(self) -> str:
        if self._key is None:
            imgs, tiers = self._make_stimuli()
            h = hashlib.sha256(np.ascontiguousarray(imgs).tobytes())
            h.update(str(imgs.shape).encode() + "|".join(tiers.tolist()).encode())
            spec = json.dumps({**self.counts, **self.repeats, "seed": self.seed}, sort_keys=True)
            self._key = target_key("simulated-recording", self.population.fingerprint(), h.hexdigest(), spec)
        return self._key

    @property
    def path(self) -> Path:
        return self.cache_dir / f"sim_{self.population.preset}_{self.fingerprint()[:20]}.h5"

    def load(self, mmap: bool = False) -> NeuralRecording:
        path, key = self.path, self.fingerprint()
        if path.exists():
            rec = NeuralRecording.load(path, mmap=mmap)
            if f"key={key}" not in rec.source:
                raise RecordingError(f"{path}: attribute 'source': expected content key {key}, found {rec.source!r}")
            return rec
        imgs, tiers = self._make_stimuli()
        reps = np.array([self.repeats[f"{t}_repeats"] for t in tiers], dtype=np.int64)
        rec = self.population.record(imgs, repeats=reps, seed=self.seed, tiers=tiers)
        rec.source = f"{rec.source}, key={key}"
        rec.save(path)
        if mmap:
            return NeuralRecording.load(path, mmap=True)
        rec.name = str(path)
        return rec


class ManifestRecording(RecordingSource):
    """A public data set's recording: fetched, verified and converted on first use.

    The files of the manifest are fetched when missing (through ``mirror`` or
    ``$NEUROREG_DATA_MIRROR`` when set; see :mod:`neuroreg.data.fetch`), every file is
    checked against the manifest's checksums, and the manifest's reader converts them
    (:func:`neuroreg.data.commands.convert`, as ``neuroreg data convert`` does). The
    result is cached as ``<cache_dir>/<manifest>-<key>.h5``, written atomically, where
    the key hashes the verified sha256 of every file used, the reader options and the
    reader (its dotted name and the bytes of its module), so a changed file, option or
    reader converts anew. Files are fetched when a required one is missing (then every
    file is); an optional file that is missing is left out, and out of the key
    (``neuroreg data fetch`` adds it later, which makes a new key).

    Args:
        manifest: the data set's name, e.g. ``"cowley2023-v4-210325"``.
        data_dir: download folder (default ``$NEUROREG_DATA_DIR`` or ``data/``).
        cache_dir: folder of the converted recordings.
        options: reader options overriding the manifest's ``reader.options``.
        fetch: download missing files; with ``False`` a missing file is an error that
            names the command to run.
        mirror: base URL standing in for the manifest URLs' hosts (default
            ``$NEUROREG_DATA_MIRROR``).
        manifest_dir: folder of the manifests (default ``data_manifests/``, or
            ``$NEUROREG_MANIFEST_DIR``).

    Raises:
        ValueError: an unknown manifest (the message lists the known ones) or one
            without a reader.
    """

    def __init__(
        self,
        manifest: str,
        data_dir: str | None = None,
        cache_dir: str = "data/recordings",
        options: dict | None = None,
        fetch: bool = True,
        mirror: str | None = None,
        manifest_dir: str | None = None,
    ):
        from .manifests import find_manifest

        try:
            self.manifest = find_manifest(manifest, manifest_dir)
        except KeyError as err:
            raise ValueError(f"ManifestRecording: 'manifest': {err.args[0]}") from None
        if self.manifest.reader_function is None:
            raise ValueError(f"ManifestRecording: 'manifest': {manifest!r} is an image set ({self.manifest.path}), not a recording")
        self.data_dir = data_dir
        self.cache_dir = Path(cache_dir)
        self.options = dict(options or {})
        self.fetch = fetch
        self.mirror = mirror
        self._key: str | None = None

    def _verified(self) -> dict[str, str]:
        """``{file name: sha256}`` of the verified local files, fetching missing ones first."""
        from .fetch import fetch, resolve_data_dir, verify

        m = self.manifest
        results = verify(m, self.data_dir)
        required = [v for v in results if v.status == "missing" and not v.file.optional]
        if required and self.fetch:  # only optional files missing: convert what is there
            results = fetch(m, self.data_dir, progressbar=False, mirror=self.mirror)
        elif required:
            where = "" if self.data_dir is None else f" --data-dir {self.data_dir}"
            raise FileNotFoundError(
                f"ManifestRecording: data set {m.name!r}: not fetched: {', '.join(str(v.path) for v in required)} "
                f"(data dir {resolve_data_dir(self.data_dir)}); run `neuroreg data fetch {m.name}{where}` or set fetch: true"
            )
        return {v.file.name: v.sha256 for v in results if v.status != "missing"}

    def fingerprint(self) -> str:
        if self._key is None:
            reader = self.manifest.reader()
            source = inspect.getsourcefile(reader)
            spec = {
                "manifest": self.manifest.name,
                "files": self._verified(),
                "options": {**self.manifest.reader_options, **self.options},
                "reader": self.manifest.reader_function,
                "reader_module": file_hash(source) if source else "",
            }
            self._key = target_key("manifest-recording", json.dumps(spec, sort_keys=True, default=str))
        return self._key

    @property
    def path(self) -> Path:
        """The cached recording: ``<cache_dir>/<manifest>-<first 20 hex of the key>.h5``."""
        return self.cache_dir / f"{self.manifest.name}-{self.fingerprint()[:20]}.h5"

    def load(self, mmap: bool = False) -> NeuralRecording:
        from .commands import convert

        path = self.path
        if not path.exists():
            result = convert(self.manifest, path, self.data_dir, options=self.options)
            if not isinstance(result, NeuralRecording):
                os.unlink(path)
                raise TypeError(
                    f"ManifestRecording: 'manifest': the reader of {self.manifest.name!r} ({self.manifest.reader_function}) "
                    f"returns a {type(result).__name__}, not a NeuralRecording"
                )
        rec = NeuralRecording.load(path, mmap=mmap)
        if not rec.source.startswith(f"{self.manifest.name}:"):
            raise RecordingError(f"{path}: attribute 'source': expected one starting with {self.manifest.name + ':'!r}, found {rec.source!r}")
        return rec


def recording_source(value: str | Path | RecordingSource) -> RecordingSource:
    """``value`` itself, or a :class:`RecordingFile` when it is a path."""
    return RecordingFile(value) if isinstance(value, (str, Path)) else value
