"""Image conversions shared by every package: grey ↔ RGB, resizing, block-mean downsampling.

Images are ``[N, C, H, W]`` with C = 1 (grey) or 3 (RGB), as numpy arrays or torch
tensors; each function returns the type it was given. Grey is the luminance
``Y = 0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601, :data:`LUMINANCE_WEIGHTS`): the weights
the simulated populations see through, the twins' stimulus transform and the grey image
sets use.

>>> import numpy as np
>>> rgb = np.full((2, 3, 4, 4), 0.5, dtype=np.float32)
>>> to_channels(rgb, 1).shape, to_channels(to_channels(rgb, 1), 3).shape
((2, 1, 4, 4), (2, 3, 4, 4))
>>> resize(rgb, (8, 8)).shape, block_mean(rgb, 2).shape
((2, 3, 8, 8), (2, 3, 2, 2))
>>> to_grayscale(np.full((1, 3, 1, 1), 200, dtype=np.uint8)).ravel()
array([200], dtype=uint8)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

#: ITU-R BT.601 luminance weights of R, G, B
LUMINANCE_WEIGHTS = (0.299, 0.587, 0.114)

#: images converted per block by :func:`to_grayscale` on uint8 input (bounds the float32 working memory)
GRAYSCALE_CHUNK = 4096

Images = TypeVar("Images", np.ndarray, "torch.Tensor")


def _is_tensor(images) -> bool:
    """Whether ``images`` is a torch tensor (torch is only imported once something else has)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(images, torch.Tensor)


def _check(images, what: str) -> None:
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"{what}: expected [N, 1 or 3, H, W], found shape {tuple(images.shape)}")


def to_grayscale(images: Images) -> Images:
    """RGB → luminance ``[N, 1, H, W]``; grey input is returned unchanged (the same object).

    - uint8 numpy: rounded to the nearest level, uint8 (computed in float32 blocks of
      :data:`GRAYSCALE_CHUNK` images as ``w · x``);
    - float numpy: ``x · w`` in float32 for float32 input;
    - torch: ``(x * w).sum(1)`` in the tensor's dtype and device.

    The numpy paths contract in different orders, which round differently in the last
    bit; each keeps the order its callers have always used, so stored images and
    simulated responses stay the same.

    Raises:
        ValueError: images that are not ``[N, 1 or 3, H, W]``, or integer numpy images
            other than uint8.
    """
    _check(images, "to_grayscale: images")
    if images.shape[1] == 1:
        return images
    if _is_tensor(images):
        import torch

        w = torch.tensor(LUMINANCE_WEIGHTS, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        return (images * w).sum(1, keepdim=True)
    w = np.asarray(LUMINANCE_WEIGHTS, dtype=np.float32)
    if images.dtype == np.uint8:
        def grey(block: np.ndarray) -> np.ndarray:
            y = np.tensordot(w, block.astype(np.float32), axes=([0], [1]))[:, None]
            return np.clip(np.round(y), 0, 255).astype(np.uint8)

        if len(images) <= GRAYSCALE_CHUNK:
            return grey(images)
        return np.concatenate([grey(images[i : i + GRAYSCALE_CHUNK]) for i in range(0, len(images), GRAYSCALE_CHUNK)])
    if images.dtype.kind != "f":
        raise ValueError(f"to_grayscale: images: expected uint8 or float, found dtype {images.dtype}")
    return np.tensordot(images, w, axes=([1], [0]))[:, None]


def to_rgb(images: Images) -> Images:
    """Grey → RGB ``[N, 3, H, W]`` by repeating the channel (numpy: a copy; torch: an
    ``expand``ed view); RGB input is returned unchanged.

    Raises:
        ValueError: images that are not ``[N, 1 or 3, H, W]``.
    """
    _check(images, "to_rgb: images")
    if images.shape[1] == 3:
        return images
    if _is_tensor(images):
        return images.expand(-1, 3, -1, -1)
    return np.repeat(images, 3, axis=1)


def to_channels(images: Images, channels: int) -> Images:
    """``images`` with ``channels`` channels (1: :func:`to_grayscale`, 3: :func:`to_rgb`).

    Raises:
        ValueError: ``channels`` not 1 or 3, or images that are not ``[N, 1 or 3, H, W]``.
    """
    if channels == 1:
        return to_grayscale(images)
    if channels == 3:
        return to_rgb(images)
    raise ValueError(f"to_channels: channels: expected 1 or 3, found {channels}")


def resize(images: Images, size: Sequence[int], antialias: bool = False) -> Images:
    """Bilinear resize (``align_corners=False``) of ``[N, C, h, w]`` float images to ``size = (H, W)``.

    Images already of that size are returned unchanged; numpy input is resized by torch
    and returned as numpy. Values are not clamped (the callers clamp to their range).

    Args:
        images: float images (numpy or torch).
        size: ``(H, W)``.
        antialias: low-pass before downscaling (torch's ``antialias``).
    """
    import torch
    from torch.nn import functional as F

    size = tuple(int(s) for s in size)
    if tuple(images.shape[-2:]) == size:
        return images
    if _is_tensor(images):
        return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=antialias)
    return F.interpolate(torch.from_numpy(images), size=size, mode="bilinear", align_corners=False, antialias=antialias).numpy()


def cover_crop(images: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Scale ``[N, C, h, w]`` so the image covers ``size = (H, W)`` (aspect kept), then centre-crop.

    Bilinear, antialiased when shrinking; images already of that size are returned
    unchanged.
    """
    from torch.nn import functional as F

    h, w = images.shape[2:]
    H, W = (int(s) for s in size)
    if (h, w) == (H, W):
        return images
    scale = max(H / h, W / w)
    nh, nw = max(H, round(h * scale)), max(W, round(w * scale))
    x = F.interpolate(images, size=(nh, nw), mode="bilinear", align_corners=False, antialias=scale < 1)
    top, left = (nh - H) // 2, (nw - W) // 2
    return x[:, :, top : top + H, left : left + W]


def block_mean(images: np.ndarray, factor: int) -> np.ndarray:
    """Block-mean downsampling of ``[N, C, H, W]`` by an integer factor (crops the remainder).

    Means are taken in float32; uint8 images are rounded back to uint8, others returned
    as float32. ``factor == 1`` returns the images unchanged.
    """
    if factor == 1:
        return images
    n, c, h, w = images.shape
    h2, w2 = h // factor, w // factor
    x = images[:, :, : h2 * factor, : w2 * factor].astype(np.float32)
    x = x.reshape(n, c, h2, factor, w2, factor).mean(axis=(3, 5))
    return np.round(x).astype(np.uint8) if images.dtype == np.uint8 else x.astype(np.float32)
