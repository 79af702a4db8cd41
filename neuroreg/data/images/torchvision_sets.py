"""torchvision classification sets read from a local folder: CIFAR-10, CIFAR-100, MNIST."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .archives import unpack_archive
from .base import ImageData, ImageSplit, split_train
from .colour import chunked, resize_uint8, to_grayscale


class TorchvisionImages(ImageData):
    """A torchvision classification set read from a local ``data_dir``.

    The official test set is the ``test`` split; ``val_fraction`` of the official
    training set (seeded) becomes ``validation``. Nothing is downloaded unless
    ``download=True``. When the unpacked folder is missing but the set's published
    archive lies in ``data_dir`` (where ``neuroreg data fetch`` puts it, e.g.
    ``data/cifar10/cifar-10-python.tar.gz``), it is unpacked there first.

    Args:
        data_dir: folder holding the set (torchvision's layout) or its archive.
        download: let torchvision download it when missing.
        val_fraction: fraction of the official training set held out as ``validation``.
        split_seed: seed of that split.
        size: output side length (bilinear resize), ``None`` to keep the native size.
        grayscale: convert RGB to one luminance channel (:func:`to_grayscale`);
            ``channels`` becomes 1.

    Raises:
        FileNotFoundError: (on first use) no usable copy under ``data_dir``.
    """

    _dataset_cls: type | None = None

    def __init__(
        self,
        data_dir: str = "data/images",
        download: bool = False,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        size: int | None = None,
        grayscale: bool = False,
    ):
        super().__init__()
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction: expected a fraction in (0, 1), found {val_fraction}")
        self.data_dir = Path(data_dir)
        self.download = download
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.size = size
        self.grayscale = grayscale
        if grayscale:
            self.channels = 1

    def _unpack_fetched(self) -> None:
        cls = self._dataset_cls
        folder, archive = getattr(cls, "base_folder", None), getattr(cls, "filename", None)
        if folder and archive and not (self.data_dir / folder).exists() and (self.data_dir / archive).is_file():
            unpack_archive(self.data_dir / archive, self.data_dir, folder)

    def _open(self, train: bool):
        self._unpack_fetched()
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
        data = np.ascontiguousarray(data, dtype=np.uint8)
        labels = np.asarray(ds.targets, dtype=np.int64)
        if self.grayscale:
            data = to_grayscale(data)
        if self.size is not None and data.shape[2:] != (self.size, self.size):
            data = chunked(data, lambda block: resize_uint8(block.astype(np.float32) / 255.0, self.size))
        return np.ascontiguousarray(data, dtype=np.uint8), labels

    def _load(self) -> dict[str, ImageSplit]:
        train_images, train_labels = self._arrays(self._open(train=True))
        test_images, test_labels = self._arrays(self._open(train=False))
        train_keys = np.array([f"{self.name}/train/{i:05d}" for i in range(len(train_labels))])
        test_keys = np.array([f"{self.name}/test/{i:05d}" for i in range(len(test_labels))])
        train, validation = split_train(self.name, train_images, train_labels, train_keys, self.val_fraction, self.split_seed)
        return {"train": train, "validation": validation, "test": ImageSplit(test_images, test_labels, test_keys)}


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
