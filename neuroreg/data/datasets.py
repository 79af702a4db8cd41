"""Torch datasets behind the two DataModules (:mod:`neuroreg.data.datamodules`).

For a classifier: :class:`AlignedDataset` (classification images with their aligned
targets) and :class:`NeuralDataset` (a neural source's stimuli and responses). For a
twin: :class:`TrialDataset` (one item per trial), :class:`RepeatDataset` (one item per
image with all its repeats) and :class:`PredictionImages` (images to predict).
"""

from __future__ import annotations

import bisect

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, default_collate

from .images import ImageData, ImageSplit, ImageSplitDataset
from .recording import PicklesResponsesByFile


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


class TrialDataset(PicklesResponsesByFile, Dataset):
    """One item per trial: ``image`` ``[C, H, W]`` float in [0, 1], ``response`` ``[K]`` (NaN: not recorded).

    Args:
        images: ``[N, C, H, W]`` images (uint8 or float in [0, 1]).
        trial_image: ``[T']`` image index of each trial of this dataset.
        responses: ``[T, K]`` float32 responses (in memory, or a read-only memory map of the file).
        dataset: the recording's name in batches.
        rows: ``[T']`` the rows of ``responses`` that are this dataset's trials (default: all, in order).
            The rows are read on demand, so a memory-mapped recording stays on disk.

    :meth:`__getitems__` reads a whole batch at once (its rows sorted, so a memory map
    is read in file order) and returns it collated; the loaders pass
    :func:`collate_batch` as ``collate_fn``. Memory-mapped responses pickle as a
    reference to their file, so loader workers and spawned ranks map it rather than copy it.
    """

    def __init__(self, images: torch.Tensor, trial_image: np.ndarray, responses: np.ndarray, dataset: str,
                 rows: np.ndarray | None = None):
        self.images = images
        self.trial_image = torch.from_numpy(np.asarray(trial_image, dtype=np.int64))
        self.rows = np.arange(len(trial_image)) if rows is None else np.asarray(rows, dtype=np.int64)
        if len(self.rows) != len(trial_image):
            raise ValueError(f"TrialDataset '{dataset}': 'rows': expected {len(trial_image)} (one per trial), found {len(self.rows)}")
        self.responses = responses
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.trial_image)

    def _images(self, index) -> torch.Tensor:
        img = self.images[self.trial_image[index]]
        return img.float().div_(255.0) if img.dtype == torch.uint8 else img

    def _responses(self, index: np.ndarray) -> torch.Tensor:
        rows = self.rows[index]
        uniq, inverse = np.unique(rows, return_inverse=True)
        block = np.asarray(self.responses[uniq], dtype=np.float32)
        return torch.from_numpy(block[inverse.ravel()])

    def __getitem__(self, i: int) -> dict:
        return {"image": self._images(i), "response": self._responses(np.array([i]))[0], "dataset": self.dataset}

    def __getitems__(self, indices) -> dict:
        """The batch of ``indices``: ``{"image" [B, C, H, W], "response" [B, K], "dataset": [B] names}``."""
        index = np.asarray(indices, dtype=np.int64)
        return {"image": self._images(torch.from_numpy(index)), "response": self._responses(index),
                "dataset": [self.dataset] * len(index)}


class BatchConcat(ConcatDataset):
    """A ConcatDataset whose batches come whole from one part (:class:`~neuroreg.data.sampling.GroupedBatchSampler`)
    and are read by that part's ``__getitems__`` when it has one."""

    def __getitems__(self, indices) -> dict:
        indices = [int(i) for i in indices]
        part = bisect.bisect_right(self.cumulative_sizes, indices[0])
        lo = self.cumulative_sizes[part - 1] if part else 0
        ds = self.datasets[part]
        if hasattr(ds, "__getitems__") and all(lo <= i < self.cumulative_sizes[part] for i in indices):
            return ds.__getitems__([i - lo for i in indices])
        return default_collate([self[i] for i in indices])


def collate_batch(batch):
    """``collate_fn`` for datasets with ``__getitems__``: a batch they collated already passes through."""
    return batch if isinstance(batch, dict) else default_collate(batch)


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
