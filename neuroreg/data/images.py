"""Classification image sets with fixed, seeded splits.

Every image set exposes three splits (``train``, ``validation``, ``test``) of uint8
images ``[N, C, H, W]``, integer labels ``[N]`` and stable string keys ``[N]`` (the
keys TargetSets are aligned by), plus a content fingerprint used in cache keys.
Images are handed to models as float32 in [0, 1]; normalisation lives in the model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

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


def _split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
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


def _resize_uint8(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of ``[N, C, h, w]`` float images in [0, 1] to ``size``, as uint8."""
    t = torch.from_numpy(images.astype(np.float32))
    if tuple(t.shape[2:]) != (size, size):
        t = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return (t.clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()


class Digits(ImageData):
    """scikit-learn's 1,797 handwritten digits (8×8, 17 grey levels), upsampled.

    Embedded with scikit-learn, so it needs no download. The split is fixed by
    ``split_seed``.

    Args:
        size: output side length in pixels (bilinear upsampling).
        val_fraction, test_fraction: fractions of the 1,797 images held out.
        split_seed: seed of the permutation that defines the split.
    """

    name = "digits"
    num_classes = 10
    channels = 1

    def __init__(self, size: int = 32, val_fraction: float = 0.15, test_fraction: float = 0.2, split_seed: int = 0):
        super().__init__()
        if size < 8:
            raise ValueError(f"size: expected at least 8 pixels, found {size}")
        _split_indices(10, val_fraction, test_fraction, split_seed)  # validates the fractions now
        self.size = size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed

    def _load(self) -> dict[str, ImageSplit]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        raw = (digits.images / 16.0)[:, None]  # [N, 1, 8, 8] in [0, 1]
        images = _resize_uint8(raw, self.size)
        labels = digits.target.astype(np.int64)
        keys = np.array([f"digits/{i:04d}" for i in range(len(labels))])
        idx = _split_indices(len(labels), self.val_fraction, self.test_fraction, self.split_seed)
        return {s: ImageSplit(images[i], labels[i], keys[i]) for s, i in idx.items()}


class TorchvisionImages(ImageData):
    """A torchvision classification set read from a local ``data_dir``.

    The official test set is the ``test`` split; ``val_fraction`` of the official
    training set (seeded) becomes ``validation``. Nothing is downloaded unless
    ``download=True``.
    """

    _dataset_cls: type | None = None

    def __init__(
        self,
        data_dir: str = "data/images",
        download: bool = False,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        size: int | None = None,
    ):
        super().__init__()
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction: expected a fraction in (0, 1), found {val_fraction}")
        self.data_dir = Path(data_dir)
        self.download = download
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.size = size

    def _open(self, train: bool):
        try:
            return self._dataset_cls(root=str(self.data_dir), train=train, download=self.download)
        except RuntimeError as err:
            hint = "" if self.download else " Pass download=True (data.init_args.images.init_args.download) to fetch it."
            raise FileNotFoundError(
                f"{self.name}: no usable copy under data_dir={self.data_dir} ({err}).{hint}"
            ) from err

    def _arrays(self, ds) -> tuple[np.ndarray, np.ndarray]:
        data = ds.data.numpy() if torch.is_tensor(ds.data) else np.asarray(ds.data)
        data = data[:, None] if data.ndim == 3 else data.transpose(0, 3, 1, 2)
        labels = np.asarray(ds.targets, dtype=np.int64)
        if self.size is not None and data.shape[2:] != (self.size, self.size):
            data = _resize_uint8(data.astype(np.float32) / 255.0, self.size)
        return np.ascontiguousarray(data, dtype=np.uint8), labels

    def _load(self) -> dict[str, ImageSplit]:
        train_images, train_labels = self._arrays(self._open(train=True))
        test_images, test_labels = self._arrays(self._open(train=False))
        n = len(train_labels)
        perm = np.random.default_rng(self.split_seed).permutation(n)
        n_val = int(round(n * self.val_fraction))
        val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        train_keys = np.array([f"{self.name}/train/{i:05d}" for i in range(n)])
        test_keys = np.array([f"{self.name}/test/{i:05d}" for i in range(len(test_labels))])
        return {
            "train": ImageSplit(train_images[train_idx], train_labels[train_idx], train_keys[train_idx]),
            "validation": ImageSplit(train_images[val_idx], train_labels[val_idx], train_keys[val_idx]),
            "test": ImageSplit(test_images, test_labels, test_keys),
        }


class CIFAR10(TorchvisionImages):
    """CIFAR-10 (32×32 RGB, 10 classes) from ``data_dir``."""

    name = "cifar10"
    num_classes = 10
    channels = 3

    @property
    def _dataset_cls(self):
        from torchvision.datasets import CIFAR10 as _C

        return _C


class CIFAR100(TorchvisionImages):
    """CIFAR-100 (32×32 RGB, 100 fine classes) from ``data_dir``."""

    name = "cifar100"
    num_classes = 100
    channels = 3

    @property
    def _dataset_cls(self):
        from torchvision.datasets import CIFAR100 as _C

        return _C


class MNIST(TorchvisionImages):
    """MNIST (28×28 grey, 10 classes) from ``data_dir``; ``size=32`` pads by resizing."""

    name = "mnist"
    num_classes = 10
    channels = 1

    @property
    def _dataset_cls(self):
        from torchvision.datasets import MNIST as _M

        return _M
