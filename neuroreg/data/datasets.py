"""Torch datasets behind the two DataModules (:mod:`neuroreg.data.datamodules`).

For a classifier: :class:`AlignedDataset` (classification images with their aligned
targets) and :class:`NeuralDataset` (a neural source's stimuli and responses). For a
twin: :class:`TrialDataset` (one item per trial), :class:`RepeatDataset` (one item per
image with all its repeats) and :class:`PredictionImages` (images to predict).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from .images import ImageData, ImageSplit, ImageSplitDataset


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
