"""Colour conversion and resizing of image arrays (grey ↔ RGB, luminance, bilinear resize).

The one place of the image sets' conversions: :func:`to_grayscale` (uint8 RGB → luminance),
:func:`resize_uint8` (bilinear resize to uint8), :func:`chunked` (bounded working
memory), and :func:`match_channels_and_size` (float stimuli to an image set's channels
and size, used for neural batches). Luminance is ITU-R BT.601
(:data:`~neuroreg.data.simulated.LUMINANCE_WEIGHTS`).

>>> grey = to_grayscale(np.full((1, 3, 2, 2), 100, dtype=np.uint8))
>>> grey.shape, int(grey[0, 0, 0, 0])
((1, 1, 2, 2), 100)
>>> match_channels_and_size(np.ones((1, 1, 4, 4), dtype=np.float32), 3, (8, 8)).shape
(1, 3, 8, 8)
"""

from __future__ import annotations

import numpy as np
import torch

from ..simulated import LUMINANCE_WEIGHTS


def resize_uint8(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of ``[N, C, h, w]`` float images in [0, 1] to ``size``, as uint8."""
    t = torch.from_numpy(images.astype(np.float32))
    if tuple(t.shape[2:]) != (size, size):
        t = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return (t.clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()


def chunked(images: np.ndarray, fn, chunk: int = 4096) -> np.ndarray:
    """``fn`` applied to blocks of ``chunk`` images (bounds the float32 working memory)."""
    if len(images) <= chunk:
        return fn(images)
    return np.concatenate([fn(images[i : i + chunk]) for i in range(0, len(images), chunk)])


def to_grayscale(images: np.ndarray) -> np.ndarray:
    """RGB → luminance: ``[N, 3, H, W]`` uint8 to ``[N, 1, H, W]`` uint8.

    ``Y = 0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601,
    :data:`~neuroreg.data.simulated.LUMINANCE_WEIGHTS`, the weights the simulated
    population and the twins' stimulus transform use), rounded to the nearest level.
    Grey input ``[N, 1, H, W]`` is returned unchanged.

    Raises:
        ValueError: images that are not ``[N, 1 or 3, H, W]`` uint8.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.dtype != np.uint8:
        raise ValueError(f"images: expected [N, 1 or 3, H, W] uint8, found shape {images.shape} dtype {images.dtype}")
    if images.shape[1] == 1:
        return images
    w = np.asarray(LUMINANCE_WEIGHTS, dtype=np.float32)

    def grey(block: np.ndarray) -> np.ndarray:
        y = np.tensordot(w, block.astype(np.float32), axes=([0], [1]))[:, None]
        return np.clip(np.round(y), 0, 255).astype(np.uint8)

    return chunked(images, grey)


def match_channels_and_size(images: np.ndarray, channels: int, size: tuple[int, int]) -> np.ndarray:
    """``[M, 1 or 3, H, W]`` float32 images in [0, 1] converted to ``channels`` (grey is
    repeated to RGB; RGB becomes luminance) and to ``size`` (bilinear, clamped to [0, 1])."""
    x = np.asarray(images, dtype=np.float32)
    if x.shape[1] == 1 and channels == 3:
        x = np.repeat(x, 3, axis=1)
    elif x.shape[1] == 3 and channels == 1:
        x = np.tensordot(x, np.asarray(LUMINANCE_WEIGHTS, dtype=np.float32), axes=([1], [0]))[:, None]
    if tuple(x.shape[2:]) != tuple(size):
        t = torch.nn.functional.interpolate(torch.from_numpy(x), size=tuple(size), mode="bilinear", align_corners=False)
        x = t.clamp(0, 1).numpy()
    return x
