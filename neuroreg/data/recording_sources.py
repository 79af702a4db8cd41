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
  cached by content under ``data/recordings``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ..io import file_hash
from ..targets.format import target_key
from .images import ImageData
from .recording import NeuralRecording, RecordingError
from .simulated import V1Population, pink_noise_images


class RecordingSource:
    """Where a NeuralRecording comes from (injected by config): its loader and content hash."""

    def load(self) -> NeuralRecording:
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

    def load(self) -> NeuralRecording:
        return NeuralRecording.load(self.path)

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

    def load(self) -> NeuralRecording:
        path, key = self.path, self.fingerprint()
        if path.exists():
            rec = NeuralRecording.load(path)
            if f"key={key}" not in rec.source:
                raise RecordingError(f"{path}: attribute 'source': expected content key {key}, found {rec.source!r}")
            return rec
        imgs, tiers = self._make_stimuli()
        reps = np.array([self.repeats[f"{t}_repeats"] for t in tiers], dtype=np.int64)
        rec = self.population.record(imgs, repeats=reps, seed=self.seed, tiers=tiers)
        rec.source = f"{rec.source}, key={key}"
        rec.save(path)
        rec.name = str(path)
        return rec


def recording_source(value: str | Path | RecordingSource) -> RecordingSource:
    """``value`` itself, or a :class:`RecordingFile` when it is a path."""
    return RecordingFile(value) if isinstance(value, (str, Path)) else value
