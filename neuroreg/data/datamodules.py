"""RegularizedDataModule: classification batches with neural targets from named sources."""

from __future__ import annotations

import zlib

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from .images import SPLITS, ImageData, ImageSplit, ImageSplitDataset
from .neural_batches import NeuralSource
from .sampling import EpochSampler, ResumableBatchSampler, ResumableLoader, run_seed
from .targets import TargetSet, TargetSetError, TargetSource

#: name of the source when ``targets`` is a single TargetSource
DEFAULT_SOURCE = "targets"


class AlignedDataset(Dataset):
    """Items ``{"image" [C, H, W], "label", "index", "targets": {source: [K]}}``."""

    def __init__(self, split: ImageSplit, targets: dict[str, np.ndarray]):
        self.base = ImageSplitDataset(split)
        self.targets = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in targets.items()}

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        item = self.base[i]
        item["targets"] = {k: v[i] for k, v in self.targets.items()}
        return item


class NeuralDataset(Dataset):
    """Items ``{"image" [C, H, W] float32 in [0, 1], "target" [K]}`` of a neural source."""

    def __init__(self, stimuli: np.ndarray, responses: np.ndarray):
        self.stimuli = torch.from_numpy(np.ascontiguousarray(stimuli, dtype=np.float32))
        self.responses = torch.from_numpy(np.ascontiguousarray(responses, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.responses)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.stimuli[i], "target": self.responses[i]}


def _match_images(name: str, stimuli: np.ndarray, channels: int, size: tuple[int, int]) -> np.ndarray:
    """Convert neural stimuli to the classification images' channels and size."""
    x = np.asarray(stimuli, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"neural.{name}: stimuli: expected [M, 1 or 3, H, W], found shape {x.shape}")
    if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise ValueError(f"neural.{name}: stimuli: expected finite values in [0, 1]")
    if x.shape[1] == 1 and channels == 3:
        x = np.repeat(x, 3, axis=1)
    elif x.shape[1] == 3 and channels == 1:
        x = np.tensordot(x, np.asarray([0.299, 0.587, 0.114], dtype=np.float32), axes=([1], [0]))[:, None]
    if tuple(x.shape[2:]) != tuple(size):
        t = torch.nn.functional.interpolate(torch.from_numpy(x), size=tuple(size), mode="bilinear", align_corners=False)
        x = t.clamp(0, 1).numpy()
    return x


class RegularizedDataModule(pl.LightningDataModule):
    """Image batches for a classifier, the training ones carrying neural targets.

    Two kinds of target sources, each named:

    - ``targets``: sources aligned with the classification images (a
      :class:`~neuroreg.data.targets.TargetSource` per name, or one source, named
      ``"targets"``). Training items carry ``targets: {name: [K]}`` (NaN: no target).
    - ``neural``: separate neural batches of a recording's own stimuli and
      responses (:class:`~neuroreg.data.neural.NeuralSource` per name), drawn
      alongside every classification batch.

    Without neural sources a training batch is ``{"image": [B, C, H, W] in [0, 1],
    "label": [B], "index": [B], "targets": {name: [B, K]}}``; with them it is
    ``{"task": <that>, "neural": {name: {"image": [Bn, C, H, W], "target": [Bn, K]}}}``
    (one epoch = one pass over the classification images; neural batches are drawn
    at random, reshuffled each pass). Neural stimuli are converted to the image set's
    channels (grey ↔ RGB) and size (bilinear). Validation and test batches carry no
    targets.

    The training order (classification images and every neural source) depends only
    on ``(seed, epoch)``, and the training loaders are
    :class:`~neuroreg.data.sampling.ResumableLoader`: a fit resumed from a
    checkpoint, even one written mid-epoch, sees the same batches as an uninterrupted one.

    Args:
        images: the classification image set (e.g. :class:`~neuroreg.data.images.Digits`).
        targets: aligned target source(s); ``None`` for none.
        neural: ``{name: NeuralSource}`` for separate neural batches.
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
        neural: dict[str, NeuralSource] | None = None,
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
        self.neural: dict[str, NeuralSource] = dict(neural or {})
        both = sorted(set(self.targets) & set(self.neural))
        if both:
            raise ValueError(f"targets, neural: expected distinct source names, found {both} in both")
        for name, src in {**self.targets, **self.neural}.items():
            if not hasattr(src, "num_neurons"):
                raise TypeError(f"source {name!r}: expected a TargetSource or NeuralSource, found {type(src).__name__}")
        self.batch_size = batch_size
        self.neural_batch_size = neural_batch_size or batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = run_seed() if seed is None else int(seed)
        self.target_sets: dict[str, TargetSet] = {}
        self._datasets: dict[str, Dataset] = {}
        self._neural_sets: dict[str, NeuralDataset] = {}

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
            stimuli, responses = src.load()
            responses = np.asarray(responses, dtype=np.float32)
            if responses.ndim != 2 or responses.shape != (len(stimuli), int(src.num_neurons)):
                raise ValueError(
                    f"neural.{name}: responses: expected [{len(stimuli)}, {src.num_neurons}] (stimuli × neurons), found {responses.shape}"
                )
            if np.isinf(responses).any():
                raise ValueError(f"neural.{name}: responses: expected finite values or NaN, found inf")
            self._neural_sets[name] = NeuralDataset(_match_images(name, stimuli, self.channels, size), responses)
        self._datasets = {
            "train": AlignedDataset(train, aligned) if aligned else ImageSplitDataset(train),
            "validation": ImageSplitDataset(self.images.split("validation")),
            "test": ImageSplitDataset(self.images.split("test")),
        }

    def _loader(self, split: str) -> DataLoader:
        self.setup()
        return DataLoader(self._datasets[split], batch_size=self.eval_batch_size, shuffle=False, num_workers=self.num_workers)

    def train_dataloader(self):
        self.setup()
        ds = self._datasets["train"]
        sampler = ResumableBatchSampler(EpochSampler(len(ds), seed=self.seed), self.batch_size, drop_last=len(ds) > self.batch_size)
        task = ResumableLoader(ds, batch_sampler=sampler, num_workers=self.num_workers, persistent_workers=self.num_workers > 0)
        if not self.neural:
            return task
        from pytorch_lightning.utilities import CombinedLoader

        n_batches = max(len(task), 1)
        neural = {}
        for name, ds in self._neural_sets.items():
            bs = min(self.neural_batch_size, len(ds))
            # several reshuffled passes if needed; each source has its own random stream, keyed by its name
            order = EpochSampler(len(ds), seed=self.seed, num_samples=n_batches * bs, stream=zlib.crc32(name.encode()))
            neural[name] = ResumableLoader(ds, batch_sampler=ResumableBatchSampler(order, bs, drop_last=True), num_workers=self.num_workers)
        return CombinedLoader({"task": task, "neural": neural}, mode="min_size")

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")
