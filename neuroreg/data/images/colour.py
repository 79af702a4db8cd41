"""The image sets' colour and size conversions, on top of :mod:`neuroreg.imageops`.

The image sets store uint8 ``[N, C, H, W]`` arrays, so their conversions are the shared ones
of :mod:`neuroreg.imageops` (BT.601 luminance, bilinear resize) plus what uint8 storage
needs: :func:`to_grayscale` refuses anything but uint8, :func:`resize_uint8` rounds back to
uint8, :func:`chunked` bounds the float32 working memory, and
:func:`match_channels_and_size` brings float stimuli to an image set's channels and size
(used for neural batches).

>>> grey = to_grayscale(np.full((1, 3, 2, 2), 100, dtype=np.uint8))
>>> grey.shape, int(grey[0, 0, 0, 0])
((1, 1, 2, 2), 100)
>>> match_channels_and_size(np.ones((1, 1, 4, 4), dtype=np.float32), 3, (8, 8)).shape
(1, 3, 8, 8)
"""

from __future__ import annotations

import numpy as np
import torch

from ... import imageops


def resize_uint8(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of ``[N, C, h, w]`` float images in [0, 1] to ``size``, as uint8."""
    t = torch.from_numpy(imageops.resize(images.astype(np.float32), (size, size)))
    return (t.clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()


def chunked(images: np.ndarray, fn, chunk: int = imageops.GRAYSCALE_CHUNK) -> np.ndarray:
    """``fn`` applied to blocks of ``chunk`` images (bounds the float32 working memory)."""
    if len(images) <= chunk:
        return fn(images)
    return np.concatenate([fn(images[i : i + chunk]) for i in range(0, len(images), chunk)])


def to_grayscale(images: np.ndarray) -> np.ndarray:
    """RGB → luminance: ``[N, 3, H, W]`` uint8 to ``[N, 1, H, W]`` uint8.

    :func:`neuroreg.imageops.to_grayscale` (``Y = 0.299 R + 0.587 G + 0.114 B``, ITU-R
    BT.601, the weights the simulated population and the twins' stimulus transform use),
    rounded to the nearest level. Grey input ``[N, 1, H, W]`` is returned unchanged.

    Raises:
        ValueError: images that are not ``[N, 1 or 3, H, W]`` uint8.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.dtype != np.uint8:
        raise ValueError(f"images: expected [N, 1 or 3, H, W] uint8, found shape {images.shape} dtype {images.dtype}")
    return imageops.to_grayscale(images)


def match_channels_and_size(images: np.ndarray, channels: int, size: tuple[int, int]) -> np.ndarray:
    """``[M, 1 or 3, H, W]`` float32 images in [0, 1] converted to ``channels`` (grey is
    repeated to RGB; RGB becomes luminance) and to ``size`` (bilinear, clamped to [0, 1])."""
    x = imageops.to_channels(np.asarray(images, dtype=np.float32), channels)
    if tuple(x.shape[2:]) != tuple(size):
        x = np.clip(imageops.resize(x, size), 0, 1)
    return x
