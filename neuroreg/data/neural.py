"""NeuralDataModule: trial-level batches of a NeuralRecording for fitting digital twins.

Recordings come from a ``.h5`` file (:class:`RecordingFile`, or simply its path)
or are simulated on the fly from a :class:`~neuroreg.data.simulated.V1Population`
(:class:`SimulatedRecording`, cached by content under ``data/recordings``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import warnings
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler

from ..io import file_hash
from .images import SPLITS, ImageData
from .recording import NeuralRecording, RecordingError
from .sampling import (
    EpochSampler,
    ResumableBatches,
    ResumableLoader,
    epoch_generator,
    run_seed,
)
from .simulated import V1Population, pink_noise_images
from .targets import target_key


class RecordingSource:
    """Where a NeuralRecording comes from (injected by config)."""

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


def _source(value) -> RecordingSource:
    return RecordingFile(value) if isinstance(value, (str, Path)) else value


class TrialDataset(Dataset):
    """One item per trial: ``image`` ``[C, H, W]`` float in [0, 1], ``response`` ``[K]`` (NaN: not recorded)."""

    def __init__(self, images: torch.Tensor, trial_image: np.ndarray, responses: np.ndarray, dataset: str):
        self.images = images
        self.trial_image = torch.from_numpy(trial_image)
        self.responses = torch.from_numpy(np.ascontiguousarray(responses, dtype=np.float32))
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.trial_image)

    def __getitem__(self, i: int) -> dict:
        img = self.images[self.trial_image[i]]
        img = img.float().div_(255.0) if img.dtype == torch.uint8 else img
        return {"image": img, "response": self.responses[i], "dataset": self.dataset}


class RepeatDataset(Dataset):
    """One item per image: ``image`` ``[C, H, W]``, ``repeats`` ``[R, K]`` (NaN-padded)."""

    def __init__(self, images: torch.Tensor, image_index: np.ndarray, repeats: np.ndarray, dataset: str):
        self.images = images
        self.image_index = torch.from_numpy(image_index)
        self.repeats = torch.from_numpy(np.ascontiguousarray(repeats, dtype=np.float32))
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.image_index)

    def __getitem__(self, i: int) -> dict:
        img = self.images[self.image_index[i]]
        img = img.float().div_(255.0) if img.dtype == torch.uint8 else img
        return {"image": img, "repeats": self.repeats[i], "dataset": self.dataset}


class GroupedBatchSampler(ResumableBatches, Sampler[list[int]]):
    """Batches of indices into a ConcatDataset, each batch from a single part.

    With ``shuffle`` the items of each part and the order of all batches are
    permuted every epoch by a generator seeded with ``(seed, epoch)`` only (the
    epoch is that of ``self.sampler``, which Lightning sets before each training
    epoch), so a resumed fit sees the same batches; a last batch smaller than
    ``batch_size`` is dropped when ``drop_last`` and the part is larger than one
    batch (batch norm needs more than one item). An epoch can start at a given batch
    (:meth:`~neuroreg.data.sampling.ResumableBatches.start_at`).

    Args:
        sizes: items per part.
        batch_size: items per batch.
        shuffle: permute items within parts and the order of batches.
        drop_last: drop a part's last, smaller batch (see above).
        seed: seed of the permutations.
    """

    def __init__(self, sizes: list[int], batch_size: int, shuffle: bool, drop_last: bool, seed: int = 0):
        self.sizes = list(sizes)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = int(seed)
        self.sampler = EpochSampler(self.sizes, shuffle=shuffle, seed=self.seed)

    def _batches(self) -> list[list[int]]:
        indices = iter(self.sampler)
        batches = []
        for n in self.sizes:
            idx = list(itertools.islice(indices, n))
            for start in range(0, n, self.batch_size):
                chunk = idx[start : start + self.batch_size]
                if self.drop_last and len(chunk) < self.batch_size and n > self.batch_size:
                    continue
                batches.append(chunk)
        if self.shuffle:
            order = torch.randperm(len(batches), generator=epoch_generator(self.seed, self.sampler.epoch, stream=1))
            batches = [batches[i] for i in order.tolist()]
        return batches

    def __iter__(self):
        yield from self._from_start(iter(self._batches()))

    def __len__(self) -> int:
        total = 0
        for n in self.sizes:
            full, rest = divmod(n, self.batch_size)
            total += full + (1 if rest and not (self.drop_last and n > self.batch_size) else 0)
        return total


class PredictionImages(Dataset):
    """Images of several splits of an image set: ``image`` ``[C, H, W]`` float, ``index`` (row)."""

    def __init__(self, images: ImageData, splits: list[str]):
        self.parts = [images.split(s) for s in splits]
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> dict:
        part = int(np.searchsorted(self.offsets, i, side="right") - 1)
        img = torch.from_numpy(self.parts[part].images[i - self.offsets[part]]).float().div_(255.0)
        return {"image": img, "index": torch.tensor(i)}


class NeuralDataModule(pl.LightningDataModule):
    """Batches of one or several NeuralRecordings for a :class:`~neuroreg.twin.module.TwinModule`.

    Training batches are trials: ``{"image": [B, C, H, W] in [0, 1], "response":
    [B, K] (NaN: not recorded), "dataset": [B] names}``; validation and test batches
    are images with all their repeats: ``{"image", "repeats": [B, R, K], "dataset"}``.
    Every batch comes from a single recording. Neurons never recorded on a training
    trial are dropped (with a warning counting them).

    For ``neuroreg predict``, ``predict_images`` is the image set whose ``predict_splits``
    are predicted (batches ``{"image", "index"}``, in split order).

    The training order depends only on ``(seed, epoch)`` and the training loader is a
    :class:`~neuroreg.data.sampling.ResumableLoader`, so a fit resumed from a
    checkpoint, even one written mid-epoch, sees the same batches as an uninterrupted one.

    Args:
        recording: a ``.h5`` path, a :class:`RecordingSource`, or ``{name: either}``
            for a twin with one readout per recording (mouse and monkey together).
        batch_size: training batch size (trials).
        eval_batch_size: validation/test/predict batch size (default ``batch_size``).
        num_workers: DataLoader workers.
        predict_images: image set to predict (``neuroreg predict``).
        predict_splits: its splits, in order.
        seed: seed of the training order; ``None``: the run's ``seed_everything``
            value (``PL_GLOBAL_SEED``), 0 when the run is not seeded.

    Raises:
        RecordingError: a recording without train or validation tier (names the file).
    """

    def __init__(
        self,
        recording: str | RecordingSource | dict[str, str | RecordingSource],
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        predict_images: ImageData | None = None,
        predict_splits: list[str] = ("train", "validation", "test"),
        seed: int | None = None,
    ):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"NeuralDataModule: 'batch_size': expected >= 1, found {batch_size}")
        from ..twin.module import DEFAULT_DATASET

        self.sources = {k: _source(v) for k, v in recording.items()} if isinstance(recording, dict) else {DEFAULT_DATASET: _source(recording)}
        if not self.sources:
            raise ValueError("NeuralDataModule: 'recording': expected at least one recording, found an empty mapping")
        self.multiple = isinstance(recording, dict)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.predict_images = predict_images
        unknown = [s for s in predict_splits if s not in SPLITS]
        if unknown:
            raise ValueError(f"NeuralDataModule: 'predict_splits': expected splits in {list(SPLITS)}, found {unknown}")
        self.predict_splits = list(predict_splits)
        self.seed = run_seed() if seed is None else int(seed)
        self._recordings: dict[str, NeuralRecording] | None = None
        self._images: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------ recordings
    @staticmethod
    def _checked(rec: NeuralRecording) -> NeuralRecording:
        for tier in ("train", "validation"):
            if tier not in rec.tiers:
                raise RecordingError(
                    f"{rec.name}: field 'trial_tier': NeuralDataModule needs a '{tier}' tier "
                    f"({'fitting' if tier == 'train' else 'early stopping and model selection'}), found tiers {rec.tiers}"
                )
        train = rec.trial_tier == "train"
        dead = np.isnan(rec.responses[train]).all(axis=0)
        if dead.any():
            ids = rec.neurons["ids"][dead]
            warnings.warn(
                f"{rec.name}: dropping {int(dead.sum())} of {rec.n_neurons} neurons whose responses are NaN on every "
                f"training trial (ids {ids[:5].tolist()}{' ...' if dead.sum() > 5 else ''})",
                stacklevel=3,
            )
            if dead.all():
                raise RecordingError(f"{rec.name}: field 'responses': expected some recorded (non-NaN) training responses, found none")
            keep = ~dead
            rec = NeuralRecording(
                images=rec.images, image_ids=rec.image_ids, responses=rec.responses[:, keep], trial_image=rec.trial_image,
                trial_tier=rec.trial_tier, neurons={k: v[keep] for k, v in rec.neurons.items()}, species=rec.species,
                area=rec.area, response_unit=rec.response_unit, pixels_per_degree=rec.pixels_per_degree,
                source=rec.source, citation=rec.citation, license=rec.license, name=rec.name,
            )
        return rec

    @property
    def recordings(self) -> dict[str, NeuralRecording]:
        """``{dataset name: NeuralRecording}`` (loaded and checked on first use)."""
        if self._recordings is None:
            self._recordings = {name: self._checked(src.load()) for name, src in self.sources.items()}
        return self._recordings

    @property
    def num_neurons(self) -> int | dict[str, int]:
        """Neurons per recording: an int for one recording, ``{name: int}`` for several."""
        counts = {name: rec.n_neurons for name, rec in self.recordings.items()}
        return counts if self.multiple else next(iter(counts.values()))

    def fingerprint(self) -> str:
        """Content hash of all recordings (with their names)."""
        return target_key("neural-data", *[f"{n}:{s.fingerprint()}" for n, s in sorted(self.sources.items())])

    def _tensor_images(self, name: str) -> torch.Tensor:
        if name not in self._images:
            self._images[name] = torch.from_numpy(np.ascontiguousarray(self.recordings[name].images))
        return self._images[name]

    def tier_images(self, name: str, tier: str) -> np.ndarray:
        """``[M, C, H, W]`` float32 images in [0, 1] shown in ``tier`` of recording ``name``."""
        rec = self.recordings[name]
        index = np.unique(rec.trial_image[rec.trial_tier == tier])
        imgs = rec.images[index]
        return imgs.astype(np.float32) / 255.0 if imgs.dtype == np.uint8 else imgs

    def mean_response(self, name: str, tier: str = "train") -> np.ndarray:
        """``[K]`` mean response per neuron over the recorded trials of ``tier``."""
        rec = self.recordings[name]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(rec.responses[rec.trial_tier == tier], axis=0)

    # ----------------------------------------------------------- dataloaders
    def _trial_loader(self) -> DataLoader:
        parts = []
        for name, rec in self.recordings.items():
            trials = np.flatnonzero(rec.trial_tier == "train")
            parts.append(TrialDataset(self._tensor_images(name), rec.trial_image[trials], rec.responses[trials], name))
        sampler = GroupedBatchSampler([len(p) for p in parts], self.batch_size, shuffle=True, drop_last=True, seed=self.seed)
        return ResumableLoader(ConcatDataset(parts), batch_sampler=sampler, num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def _repeat_loader(self, tier: str) -> DataLoader:
        parts = []
        for name, rec in self.recordings.items():
            if tier not in rec.tiers:
                continue
            index, reps = rec.repeats(tier)
            parts.append(RepeatDataset(self._tensor_images(name), index, reps, name))
        if not parts:
            names = {n: r.name for n, r in self.recordings.items()}
            raise RecordingError(f"{names}: field 'trial_tier': expected a '{tier}' tier in some recording, found none")
        sampler = GroupedBatchSampler([len(p) for p in parts], self.eval_batch_size, shuffle=False, drop_last=False)
        return DataLoader(ConcatDataset(parts), batch_sampler=sampler, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._trial_loader()

    def val_dataloader(self) -> DataLoader:
        return self._repeat_loader("validation")

    def test_dataloader(self) -> DataLoader:
        return self._repeat_loader("test")

    # ------------------------------------------------------------- predicting
    def _predict_set(self) -> ImageData:
        if self.predict_images is None:
            raise ValueError(
                "NeuralDataModule: 'predict_images': expected an image set to predict "
                "(e.g. --data.init_args.predict_images=neuroreg.data.images.Digits), found None"
            )
        return self.predict_images

    def predict_keys(self) -> np.ndarray:
        """``[N]`` keys of the predicted images, in prediction order."""
        images = self._predict_set()
        return np.concatenate([images.split(s).keys for s in self.predict_splits])

    def predict_fingerprint(self) -> str:
        """Content hash of the predicted images (splits, in order)."""
        images = self._predict_set()
        return target_key("image-splits", *[f"{s}:{images.split(s).fingerprint()}" for s in self.predict_splits])

    def predict_dataloader(self) -> DataLoader:
        ds = PredictionImages(self._predict_set(), self.predict_splits)
        return DataLoader(ds, batch_size=self.eval_batch_size, shuffle=False, num_workers=self.num_workers)
