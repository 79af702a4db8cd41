"""The image-set interface: three fixed, seeded splits with stable keys and a fingerprint.

Every image set exposes three splits (``train``, ``validation``, ``test``) of uint8
images ``[N, C, H, W]``, integer labels ``[N]`` and stable string keys ``[N]`` (the
keys TargetSets are aligned by), plus a content fingerprint used in cache keys.
Images are handed to models as float32 in [0, 1]; normalisation lives in the model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

SPLITS = ("train", "validation", "test")


@dataclass
class ImageSplit:
    """One split of an image set.

    Attributes:
        images: ``[N, C, H, W]`` uint8.
        labels: ``[N]`` int64 class indices.
        keys: ``[N]`` stable string identifiers (e.g. ``"digits/0017"``).
    """

    images: np.ndarray
    labels: np.ndarray
    keys: np.ndarray

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def fingerprint(self) -> str:
        """sha256 over keys, labels and image bytes."""
        h = hashlib.sha256()
        h.update("\n".join(self.keys.tolist()).encode())
        h.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        h.update(str(self.images.shape).encode())
        h.update(np.ascontiguousarray(self.images).tobytes())
        return h.hexdigest()

    def images_float(self) -> np.ndarray:
        """``[N, C, H, W]`` float32 in [0, 1]."""
        return self.images.astype(np.float32) / 255.0


class ImageSplitDataset(Dataset):
    """Torch dataset over an :class:`ImageSplit`, optionally with aligned targets.

    Items are dicts: ``image`` ``[C, H, W]`` float32 in [0, 1], ``label`` (int64),
    ``index`` (position in the split) and, when ``targets`` is given, ``target``
    ``[K]`` float32 (NaN where a neuron has no target for this image).
    """

    def __init__(self, split: ImageSplit, targets: np.ndarray | None = None):
        if targets is not None and targets.shape[0] != len(split):
            raise ValueError(f"targets: expected {len(split)} rows (one per image), found {targets.shape[0]}")
        self.images = torch.from_numpy(np.ascontiguousarray(split.images))
        self.labels = torch.from_numpy(np.asarray(split.labels, dtype=np.int64))
        self.targets = None if targets is None else torch.from_numpy(np.asarray(targets, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {"image": self.images[i].float().div_(255.0), "label": self.labels[i], "index": torch.tensor(i)}
        if self.targets is not None:
            item["target"] = self.targets[i]
        return item


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Sorted indices of the ``test``, ``validation`` and ``train`` splits of ``n`` images:
    the first ``round(n · test_fraction)`` of a permutation seeded with ``seed`` are
    ``test``, the next ``round(n · val_fraction)`` ``validation``, the rest ``train``.

    Raises:
        ValueError: a fraction outside (0, 1), or fractions summing to 1 or more.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{name}: expected a fraction in (0, 1), found {value}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction: expected < 1, found {val_fraction + test_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    return {
        "test": np.sort(perm[:n_test]),
        "validation": np.sort(perm[n_test : n_test + n_val]),
        "train": np.sort(perm[n_test + n_val :]),
    }


def split_train(
    name: str, images: np.ndarray, labels: np.ndarray, keys: np.ndarray, val_fraction: float, seed: int
) -> tuple[ImageSplit, ImageSplit]:
    """The official training set split into ``(train, validation)``: ``round(n · val_fraction)``
    images drawn by a permutation seeded with ``seed`` become validation."""
    n = len(labels)
    perm = np.random.default_rng(seed).permutation(n)
    n_val = round(n * val_fraction)
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    if len(train_idx) == 0:
        raise ValueError(f"{name}: val_fraction={val_fraction} leaves no training images out of {n}")
    return (
        ImageSplit(images[train_idx], labels[train_idx], keys[train_idx]),
        ImageSplit(images[val_idx], labels[val_idx], keys[val_idx]),
    )


class ImageData:
    """Base class of image sets: subclasses fill ``_load`` and class attributes."""

    name: str = "images"
    num_classes: int = 0
    channels: int = 1

    def __init__(self) -> None:
        self._splits: dict[str, ImageSplit] | None = None

    def _load(self) -> dict[str, ImageSplit]:
        raise NotImplementedError

    def split(self, name: str) -> ImageSplit:
        """Return one of ``train``, ``validation``, ``test``."""
        if name not in SPLITS:
            raise ValueError(f"split: expected one of {list(SPLITS)}, found {name!r}")
        if self._splits is None:
            self._splits = self._load()
        return self._splits[name]

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.split("train").images.shape[2:])

    def fingerprint(self, split: str | None = None) -> str:
        """Content hash of one split, or of all splits with their names."""
        if split is not None:
            return self.split(split).fingerprint()
        h = hashlib.sha256(self.name.encode())
        for s in SPLITS:
            h.update(s.encode() + self.split(s).fingerprint().encode())
        return h.hexdigest()
