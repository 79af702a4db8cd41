"""The two DataModules: batches for a classifier and batches for a digital twin.

- :class:`RegularizedDataModule`: classification batches whose training items carry
  targets from named sources (:mod:`neuroreg.targets`), optionally with separate
  neural batches;
- :class:`NeuralDataModule`: trial-level batches of one or several NeuralRecordings
  for fitting a :class:`~neuroreg.twin.module.TwinModule`, and images to predict
  (``neuroreg predict``). Recordings come from a ``.h5`` file or a simulated
  population (:mod:`neuroreg.data.recording_sources`).

Their datasets are in :mod:`neuroreg.data.datasets`, their seeded, resumable samplers in
:mod:`neuroreg.data.sampling`.
"""

from __future__ import annotations

import warnings
import zlib

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from ..targets.base import NeuralBatchSource, TargetSource
from ..targets.format import TargetSet, TargetSetError, target_key
from ..targets.rdm import RDMBatchDataset, RDMSource
from .datasets import (
    AlignedDataset,
    BatchConcat,
    NeuralDataset,
    PredictionImages,
    RepeatDataset,
    TrialDataset,
    collate_batch,
)
from .images import SPLITS, ImageData, ImageSplit, ImageSplitDataset
from .images.colour import match_channels_and_size
from .recording import TIERS, NeuralRecording, RecordingError
from .recording_sources import RecordingSource, recording_source
from .sampling import (
    EpochSampler,
    GroupedBatchSampler,
    ResumableBatchSampler,
    ResumableLoader,
    run_seed,
)

#: loaders put batches in page-locked memory when a GPU is present, so Lightning's
#: non-blocking host-to-device copies overlap with compute
PIN_MEMORY = torch.cuda.is_available()

#: name of the source when ``targets`` is a single TargetSource
DEFAULT_SOURCE = "targets"

#: name of the recording (and of the twin's dataset) when a NeuralDataModule has a single one
DEFAULT_DATASET = "default"


def _neural_stimuli(name: str, stimuli: np.ndarray, channels: int, size: tuple[int, int]) -> np.ndarray:
    """Check neural stimuli and convert them to the classification images' channels and size."""
    x = np.asarray(stimuli, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"neural.{name}: stimuli: expected [M, 1 or 3, H, W], found shape {x.shape}")
    if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise ValueError(f"neural.{name}: stimuli: expected finite values in [0, 1]")
    return match_channels_and_size(x, channels, size)


class RegularizedDataModule(pl.LightningDataModule):
    """Image batches for a classifier, the training ones carrying neural targets.

    Two kinds of target sources, each named:

    - ``targets``: sources aligned with the classification images (a
      :class:`~neuroreg.targets.base.TargetSource` per name, or one source, named
      ``"targets"``). Training items carry ``targets: {name: [K]}`` (NaN: no target).
    - ``neural``: separate neural batches of a recording's own stimuli and
      responses (:class:`~neuroreg.targets.base.NeuralBatchSource` per name), drawn
      alongside every classification batch.

    Without neural sources a training batch is ``{"image": [B, C, H, W] in [0, 1],
    "label": [B], "index": [B], "targets": {name: [B, K]}}``; with them it is
    ``{"task": <that>, "neural": {name: {"image": [Bn, C, H, W], "target": [Bn, K]}}}``
    (one epoch = one pass over the classification images; neural batches are drawn
    at random, reshuffled each pass). A neural source that is only an RDM
    (:class:`~neuroreg.targets.rdm.RDMSource`) gives ``{"image", "index",
    "dissimilarity": [Bn, Bn]}`` instead: the sub-RDM over the batch's images, no
    responses; its metric is in :attr:`dissimilarity_metrics`. Neural stimuli are converted to the image set's
    channels (grey ↔ RGB) and size (bilinear). Validation and test batches carry no
    targets.

    The training order (classification images and every neural source) depends only
    on ``(seed, epoch)``, and the training loaders are
    :class:`~neuroreg.data.sampling.ResumableLoader`: a fit resumed from a
    checkpoint, even one written mid-epoch, sees the same batches as an uninterrupted one.

    Args:
        images: the classification image set (e.g. :class:`~neuroreg.data.images.Digits`).
        targets: aligned target source(s); ``None`` for none.
        neural: ``{name: NeuralBatchSource}`` for separate neural batches.
        batch_size: training batch size.
        neural_batch_size: size of each neural batch (default: ``batch_size``).
        eval_batch_size: validation/test batch size (default: ``batch_size``).
        num_workers: DataLoader workers.
        seed: seed of the training order; ``None``: the run's ``seed_everything``
            value (``PL_GLOBAL_SEED``), 0 when the run is not seeded.
    """

    def __init__(
        self,
        images: ImageData,
        targets: TargetSource | dict[str, TargetSource] | None = None,
        neural: dict[str, NeuralBatchSource] | None = None,
        batch_size: int = 128,
        neural_batch_size: int | None = None,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int | None = None,
    ):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, found {batch_size}")
        self.images = images
        if targets is None:
            targets = {}
        elif isinstance(targets, TargetSource):
            targets = {DEFAULT_SOURCE: targets}
        self.targets: dict[str, TargetSource] = dict(targets)
        self.neural: dict[str, NeuralBatchSource] = dict(neural or {})
        both = sorted(set(self.targets) & set(self.neural))
        if both:
            raise ValueError(f"targets, neural: expected distinct source names, found {both} in both")
        for name, src in {**self.targets, **self.neural}.items():
            if not hasattr(src, "num_neurons"):
                raise TypeError(f"source {name!r}: expected a TargetSource or NeuralBatchSource, found {type(src).__name__}")
        self.batch_size = batch_size
        self.neural_batch_size = neural_batch_size or batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = run_seed() if seed is None else int(seed)
        self.target_sets: dict[str, TargetSet] = {}
        self._datasets: dict[str, Dataset] = {}
        self._neural_sets: dict[str, NeuralDataset | RDMBatchDataset] = {}
        #: ``{source: metric}`` of the neural sources that give dissimilarities (an RDM), after ``setup``
        self.dissimilarity_metrics: dict[str, str] = {}

    @property
    def num_classes(self) -> int:
        return int(self.images.num_classes)

    @property
    def num_neurons(self) -> dict[str, int]:
        """``{source: neurons}`` over aligned and neural sources."""
        return {k: int(v.num_neurons) for k, v in {**self.targets, **self.neural}.items()}

    @property
    def channels(self) -> int:
        return int(self.images.channels)

    @property
    def image_size(self) -> int:
        return int(self.images.image_size[0])

    @property
    def target_set(self) -> TargetSet | None:
        """The aligned TargetSet when there is exactly one aligned source."""
        return next(iter(self.target_sets.values())) if len(self.target_sets) == 1 else None

    def _aligned(self, name: str, source: TargetSource, train: ImageSplit) -> np.ndarray:
        ts = source.target_set(self.images)
        self.target_sets[name] = ts
        known = set()
        for s in SPLITS:
            known.update(self.images.split(s).keys.tolist())
        foreign = [k for k in ts.image_keys.tolist() if k not in known]
        if foreign:
            raise TargetSetError(
                f"{ts.name}: field 'image_keys': expected keys of image set '{self.images.name}' "
                f"({len(known)} images), found {len(foreign)} foreign keys (e.g. {foreign[:3]})"
            )
        if ts.n_neurons != int(source.num_neurons):
            raise TargetSetError(f"{ts.name}: field 'targets': expected {source.num_neurons} neurons, found {ts.n_neurons}")
        aligned = ts.align(train.keys)
        all_nan = np.isnan(aligned).all(axis=0)
        if all_nan.any():
            raise TargetSetError(
                f"{ts.name}: field 'targets': expected every neuron to have targets on some "
                f"training image, found {int(all_nan.sum())} neurons that are NaN on all of them"
            )
        return aligned

    def setup(self, stage: str | None = None) -> None:
        if self._datasets:
            return
        train = self.images.split("train")
        aligned = {name: self._aligned(name, src, train) for name, src in self.targets.items()}
        size = self.images.image_size
        for name, src in self.neural.items():
            if isinstance(src, RDMSource):
                rdm = src.load_rdm()
                stimuli = _neural_stimuli(name, rdm.images_float(), self.channels, size)
                self._neural_sets[name] = RDMBatchDataset(stimuli, rdm.square())
                self.dissimilarity_metrics[name] = rdm.metric
                continue
            stimuli, responses = src.load()
            responses = np.asarray(responses, dtype=np.float32)
            if responses.ndim != 2 or responses.shape != (len(stimuli), int(src.num_neurons)):
                raise ValueError(
                    f"neural.{name}: responses: expected [{len(stimuli)}, {src.num_neurons}] (stimuli × neurons), found {responses.shape}"
                )
            if np.isinf(responses).any():
                raise ValueError(f"neural.{name}: responses: expected finite values or NaN, found inf")
            self._neural_sets[name] = NeuralDataset(_neural_stimuli(name, stimuli, self.channels, size), responses)
        self._datasets = {
            "train": AlignedDataset(train, aligned) if aligned else ImageSplitDataset(train),
            "validation": ImageSplitDataset(self.images.split("validation")),
            "test": ImageSplitDataset(self.images.split("test")),
        }

    def _loader(self, split: str) -> DataLoader:
        self.setup()
        return DataLoader(self._datasets[split], batch_size=self.eval_batch_size, shuffle=False, num_workers=self.num_workers, pin_memory=PIN_MEMORY)

    def train_dataloader(self):
        self.setup()
        ds = self._datasets["train"]
        sampler = ResumableBatchSampler(EpochSampler(len(ds), seed=self.seed), self.batch_size, drop_last=len(ds) > self.batch_size)
        task = ResumableLoader(ds, batch_sampler=sampler, num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                                pin_memory=PIN_MEMORY)
        if not self.neural:
            return task
        from pytorch_lightning.utilities import CombinedLoader

        n_batches = max(len(task), 1)
        neural = {}
        for name, ds in self._neural_sets.items():
            bs = min(self.neural_batch_size, len(ds))
            # several reshuffled passes if needed; each source has its own random stream, keyed by its name
            order = EpochSampler(len(ds), seed=self.seed, num_samples=n_batches * bs, stream=zlib.crc32(name.encode()))
            neural[name] = ResumableLoader(ds, batch_sampler=ResumableBatchSampler(order, bs, drop_last=True), num_workers=self.num_workers, pin_memory=PIN_MEMORY)
        return CombinedLoader({"task": task, "neural": neural}, mode="min_size")

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")


def _recorded_sums(rec: NeuralRecording, tier: str) -> tuple[np.ndarray, np.ndarray]:
    """Per neuron, the float64 sum ``[K]`` and the number ``[K]`` of recorded (non-NaN) responses over the
    trials of ``tier``, from the recording's one pass over its responses
    (:meth:`~neuroreg.data.recording.NeuralRecording.response_summary`)."""
    summary = rec.response_summary()
    if tier not in summary.sums:
        return np.zeros(rec.n_neurons, dtype=np.float64), np.zeros(rec.n_neurons, dtype=np.int64)
    return summary.sums[tier], summary.counts[tier]


def _mean(total: np.ndarray, count: np.ndarray) -> np.ndarray:
    """``total / count`` as float32, NaN where nothing was recorded."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(np.float32)


class NeuralDataModule(pl.LightningDataModule):
    """Batches of one or several NeuralRecordings for a :class:`~neuroreg.twin.module.TwinModule`.

    Training batches are trials: ``{"image": [B, C, H, W] in [0, 1], "response":
    [B, K] (NaN: not recorded), "dataset": [B] names}``; validation and test batches
    are images with all their repeats: ``{"image", "repeats": [B, R, K], "dataset"}``.
    Every batch comes from a single recording. Neurons never recorded on a training
    trial are dropped (with a warning counting them).

    For ``neuroreg predict``, ``predict_images`` is the image set whose ``predict_splits``
    are predicted (batches ``{"image", "index"}``, in split order); or ``predict_tier``
    names a tier of the recordings themselves, whose images are predicted (in ascending
    image order, recording after recording), so the TargetSet's rows can be compared to
    the recorded responses: its keys are the recording's ``image_ids`` as strings
    (``"<recording>/<image id>"`` with several recordings), e.g. with
    ``ts.align(rec.image_ids[rec.mean_per_image("test")[0]].astype(str))``.

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
        predict_tier: instead of ``predict_images``, predict the recordings' own images
            shown in this tier (one of :data:`~neuroreg.data.recording.TIERS`).
        seed: seed of the training order; ``None``: the run's ``seed_everything``
            value (``PL_GLOBAL_SEED``), 0 when the run is not seeded.
        mmap: memory-map the recordings' responses instead of reading them into memory,
            for recordings larger than memory. Each training batch reads its rows from
            the file (sorted, so in file order; the page cache keeps what fits);
            validation and test trials and the images are read into memory. With
            ``num_workers >= 1`` the workers read the next batches while the current
            one trains. A recording with neurons never recorded in training is refused
            (dropping them would copy the responses).

    Raises:
        RecordingError: a recording without train or validation tier (names the file).
        ValueError: both ``predict_images`` and ``predict_tier``, or an unknown tier.
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
        predict_tier: str | None = None,
        mmap: bool = False,
    ):
        super().__init__()
        self.mmap = bool(mmap)
        if batch_size < 1:
            raise ValueError(f"NeuralDataModule: 'batch_size': expected >= 1, found {batch_size}")
        if isinstance(recording, dict):
            self.sources = {k: recording_source(v) for k, v in recording.items()}
        else:
            self.sources = {DEFAULT_DATASET: recording_source(recording)}
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
        if predict_tier is not None and predict_tier not in TIERS:
            raise ValueError(f"NeuralDataModule: 'predict_tier': expected one of {list(TIERS)}, found {predict_tier!r}")
        if predict_tier is not None and predict_images is not None:
            raise ValueError("NeuralDataModule: 'predict_images', 'predict_tier': expected one image source to predict, found both")
        self.predict_tier = predict_tier
        self.seed = run_seed() if seed is None else int(seed)
        self._recordings: dict[str, NeuralRecording] | None = None
        self._train_means: dict[str, np.ndarray] = {}  # [K] per recording, from the check on loading
        self._images: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------ recordings
    @staticmethod
    def _checked(rec: NeuralRecording) -> tuple[NeuralRecording, np.ndarray]:
        """The recording with its never-recorded training neurons dropped, and its ``[K]`` training mean response
        (one pass over the training rows serves both)."""
        for tier in ("train", "validation"):
            if tier not in rec.tiers:
                raise RecordingError(
                    f"{rec.name}: field 'trial_tier': NeuralDataModule needs a '{tier}' tier "
                    f"({'fitting' if tier == 'train' else 'early stopping and model selection'}), found tiers {rec.tiers}"
                )
        total, count = _recorded_sums(rec, "train")
        mean = _mean(total, count)
        dead = count == 0
        if dead.any() and rec.mapped:
            raise RecordingError(
                f"{rec.name}: field 'responses': {int(dead.sum())} of {rec.n_neurons} neurons are NaN on every training "
                f"trial (ids {rec.neurons['ids'][dead][:5].tolist()}); with mmap: true they cannot be dropped without "
                "copying the responses: save the recording without them, or set mmap: false"
            )
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
            mean = mean[keep]
        return rec, mean

    @property
    def recordings(self) -> dict[str, NeuralRecording]:
        """``{dataset name: NeuralRecording}`` (loaded and checked on first use)."""
        if self._recordings is None:
            checked = {name: self._checked(src.load(mmap=self.mmap)) for name, src in self.sources.items()}
            self._recordings = {name: rec for name, (rec, _) in checked.items()}
            self._train_means = {name: mean for name, (_, mean) in checked.items()}
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
        if tier == "train":  # computed while the recording was checked
            return self._train_means[name].copy()
        return _mean(*_recorded_sums(rec, tier))

    # ----------------------------------------------------------- dataloaders
    def _replicas(self) -> dict[str, int]:
        """``{"num_replicas", "rank"}`` of the attached trainer (distributed data parallel), else one replica.

        Under DDP each rank loads its share of the batches itself (set the trainer's
        ``use_distributed_sampler: false``; Lightning cannot inject its sampler into
        the grouped batch sampler).
        """
        trainer = self.trainer
        if trainer is None or int(getattr(trainer, "world_size", 1)) <= 1:
            return {"num_replicas": 1, "rank": 0}
        return {"num_replicas": int(trainer.world_size), "rank": int(trainer.global_rank)}

    def _trial_loader(self) -> DataLoader:
        parts = []
        for name, rec in self.recordings.items():
            trials = np.flatnonzero(rec.trial_tier == "train")
            parts.append(TrialDataset(self._tensor_images(name), rec.trial_image[trials], rec.responses, name, rows=trials))
        sampler = GroupedBatchSampler([len(p) for p in parts], self.batch_size, shuffle=True, drop_last=True, seed=self.seed,
                                      **self._replicas())
        return ResumableLoader(BatchConcat(parts), batch_sampler=sampler, num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                                pin_memory=PIN_MEMORY, collate_fn=collate_batch)

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
        sampler = GroupedBatchSampler([len(p) for p in parts], self.eval_batch_size, shuffle=False, drop_last=False,
                                      **self._replicas())
        return DataLoader(ConcatDataset(parts), batch_sampler=sampler, num_workers=self.num_workers, pin_memory=PIN_MEMORY)

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
                "(e.g. --data.init_args.predict_images=neuroreg.data.images.Digits) or a tier of the recording "
                "(--data.init_args.predict_tier=test), found neither"
            )
        return self.predict_images

    def predict_tier_index(self) -> dict[str, np.ndarray]:
        """``{recording: image indices}`` of the images shown in ``predict_tier``, ascending (prediction order)."""
        out = {name: np.unique(rec.trial_image[rec.trial_tier == self.predict_tier]) for name, rec in self.recordings.items()}
        if not any(len(v) for v in out.values()):
            names = {n: r.name for n, r in self.recordings.items()}
            raise RecordingError(f"{names}: field 'trial_tier': expected a '{self.predict_tier}' tier to predict "
                                 f"(predict_tier), found tiers {sorted({t for r in self.recordings.values() for t in r.tiers})}")
        return out

    def predict_keys(self) -> np.ndarray:
        """``[N]`` keys of the predicted images, in prediction order."""
        if self.predict_tier is not None:
            keys = []
            for name, index in self.predict_tier_index().items():
                ids = [str(i) for i in self.recordings[name].image_ids[index]]
                keys.extend(f"{name}/{i}" if self.multiple else i for i in ids)
            return np.asarray(keys, dtype=str)
        images = self._predict_set()
        return np.concatenate([images.split(s).keys for s in self.predict_splits])

    def predict_fingerprint(self) -> str:
        """Content hash of the predicted images (splits, in order; or the recordings and the tier)."""
        if self.predict_tier is not None:
            return target_key("recording-tier", self.predict_tier, self.fingerprint())
        images = self._predict_set()
        return target_key("image-splits", *[f"{s}:{images.split(s).fingerprint()}" for s in self.predict_splits])

    def predict_dataloader(self) -> DataLoader:
        if self.predict_tier is not None:
            ds = _RecordingImages([(self._tensor_images(n), index) for n, index in self.predict_tier_index().items()])
        else:
            ds = PredictionImages(self._predict_set(), self.predict_splits)
        return DataLoader(ds, batch_size=self.eval_batch_size, shuffle=False, num_workers=self.num_workers, pin_memory=PIN_MEMORY)


class _RecordingImages(Dataset):
    """Some images of each of several recordings, one after the other: ``{"image": [C, H, W] float in [0, 1],
    "index": row}``, ``parts`` being ``[(images [N, C, H, W], indices into them)]``."""

    def __init__(self, parts: list[tuple[torch.Tensor, np.ndarray]]):
        self.parts = [(images, np.asarray(index, dtype=np.int64)) for images, index in parts]
        self.offsets = np.cumsum([0] + [len(index) for _, index in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> dict:
        part = int(np.searchsorted(self.offsets, i, side="right") - 1)
        images, index = self.parts[part]
        img = images[int(index[i - self.offsets[part]])]
        return {"image": img.float().div_(255.0) if img.dtype == torch.uint8 else img.float(), "index": torch.tensor(i)}
