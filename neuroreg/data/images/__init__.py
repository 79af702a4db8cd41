"""Classification image sets with fixed, seeded splits.

The package's public API is exported here, so configs name an image set as
``neuroreg.data.images.<Name>`` (e.g. ``neuroreg.data.images.Digits``). The modules:

- :mod:`~neuroreg.data.images.base`: :class:`ImageData` (the interface), :class:`ImageSplit`,
  :class:`ImageSplitDataset`, ``SPLITS`` and the seeded split functions;
- :mod:`~neuroreg.data.images.colour`: grey ↔ RGB, luminance and resizing;
- :mod:`~neuroreg.data.images.archives`: unpacking a fetched archive;
- :mod:`~neuroreg.data.images.embedded`: :class:`Digits`, :class:`ClutteredDigits` (no download);
- :mod:`~neuroreg.data.images.torchvision_sets`: :class:`CIFAR10`, :class:`CIFAR100`, :class:`MNIST`;
- :mod:`~neuroreg.data.images.tinyimagenet`: :class:`TinyImageNet`.
"""

from .archives import unpack_archive
from .base import (
    SPLITS,
    ImageData,
    ImageSplit,
    ImageSplitDataset,
    split_indices,
    split_train,
)
from .colour import to_grayscale
from .embedded import ClutteredDigits, Digits
from .tinyimagenet import TinyImageNet
from .torchvision_sets import CIFAR10, CIFAR100, MNIST, TorchvisionImages

__all__ = [
    "SPLITS", "ImageData", "ImageSplit", "ImageSplitDataset", "split_indices", "split_train", "to_grayscale",
    "unpack_archive", "Digits", "ClutteredDigits", "CIFAR10", "CIFAR100", "MNIST", "TorchvisionImages", "TinyImageNet",
]
