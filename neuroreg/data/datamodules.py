"""RegularizedDataModule: classification batches with aligned neural targets."""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
from torch.utils.data import DataLoader

from .images import SPLITS, ImageData, ImageSplitDataset
from .targets import TargetSet, TargetSetError, TargetSource


class RegularizedDataModule(pl.LightningDataModule):
    """Image batches for a classifier, the training ones carrying neural targets.

    Training batches are dicts ``{"image": [B, C, H, W] in [0, 1], "label": [B],
    "index": [B], "target": [B, K]}`` (``target`` only when a target source is
    given; NaN marks a neuron without a target for that image). Validation and
    test batches carry no targets.

    Args:
        images: the classification image set (e.g. :class:`~neuroreg.data.images.Digits`).
        targets: where the training images' target responses come from; ``None``
            trains a plain classifier.
        batch_size: training batch size.
        eval_batch_size: validation/test batch size (default: ``batch_size``).
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        images: ImageData,
        targets: TargetSource | None = None,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
    ):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, found {batch_size}")
        self.images = images
        self.targets = targets
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.target_set: TargetSet | None = None
        self._datasets: dict[str, ImageSplitDataset] = {}

    @property
    def num_classes(self) -> int:
        return int(self.images.num_classes)

    @property
    def num_neurons(self) -> int:
        return 0 if self.targets is None else int(self.targets.num_neurons)

    @property
    def channels(self) -> int:
        return int(self.images.channels)

    def setup(self, stage: str | None = None) -> None:
        if self._datasets:
            return
        train = self.images.split("train")
        train_targets = None
        if self.targets is not None:
            self.target_set = self.targets.target_set(self.images)
            known = set()
            for s in SPLITS:
                known.update(self.images.split(s).keys.tolist())
            foreign = [k for k in self.target_set.image_keys.tolist() if k not in known]
            if foreign:
                raise TargetSetError(
                    f"{self.target_set.name}: field 'image_keys': expected keys of image set '{self.images.name}' "
                    f"({len(known)} images), found {len(foreign)} foreign keys (e.g. {foreign[:3]})"
                )
            if self.target_set.n_neurons != self.num_neurons:
                raise TargetSetError(
                    f"{self.target_set.name}: field 'targets': expected {self.num_neurons} neurons, "
                    f"found {self.target_set.n_neurons}"
                )
            train_targets = self.target_set.align(train.keys)
            all_nan = np.isnan(train_targets).all(axis=0)
            if all_nan.any():
                raise TargetSetError(
                    f"{self.target_set.name}: field 'targets': expected every neuron to have targets on some "
                    f"training image, found {int(all_nan.sum())} neurons that are NaN on all of them"
                )
        self._datasets = {
            "train": ImageSplitDataset(train, train_targets),
            "validation": ImageSplitDataset(self.images.split("validation")),
            "test": ImageSplitDataset(self.images.split("test")),
        }

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        return DataLoader(
            self._datasets[split],
            batch_size=self.batch_size if split == "train" else self.eval_batch_size,
            shuffle=shuffle,
            drop_last=shuffle and len(self._datasets[split]) > self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
