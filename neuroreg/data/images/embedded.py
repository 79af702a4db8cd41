"""Image sets embedded with scikit-learn, needing no download: :class:`Digits`, :class:`ClutteredDigits`."""

from __future__ import annotations

import numpy as np
import torch

from .base import ImageData, ImageSplit, split_indices
from .colour import resize_uint8


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
        split_indices(10, val_fraction, test_fraction, split_seed)  # validates the fractions now
        self.size = size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed

    def _load(self) -> dict[str, ImageSplit]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        raw = (digits.images / 16.0)[:, None]  # [N, 1, 8, 8] in [0, 1]
        images = resize_uint8(raw, self.size)
        labels = digits.target.astype(np.int64)
        keys = np.array([f"digits/{i:04d}" for i in range(len(labels))])
        idx = split_indices(len(labels), self.val_fraction, self.test_fraction, self.split_seed)
        return {s: ImageSplit(images[i], labels[i], keys[i]) for s, i in idx.items()}


class ClutteredDigits(ImageData):
    """scikit-learn's 1,797 digits drawn in colour over crops of two photographs (RGB).

    An embedded stand-in for CIFAR-like *inputs*: three colour channels and cluttered
    natural-image backgrounds, at 32×32, with no download. It is **not** a set of
    natural object categories: the ten classes are still the digits 0–9 (labels as in
    :class:`Digits`), so it tests how a method copes with colour and clutter, not with
    object recognition.

    Image ``i`` is rendered as follows, every random draw coming from one generator
    seeded with ``seed``:

    - background: a square crop of one of scikit-learn's two sample photographs
      (``china.jpg``, ``flower.jpg`` from :func:`sklearn.datasets.load_sample_images`,
      first reduced 4× to 107×160 by box averaging), chosen at random, of side
      ``U(0.25, 1) · 107`` pixels at a random position, resized to ``size`` (bilinear,
      antialiased) and mirrored left-right with probability ½;
    - digit: the 8×8 digit bilinearly upsampled to ``size`` as in :class:`Digits`,
      giving a mask ``m ∈ [0, 1]``;
    - colour and contrast: a colour ``c ∈ [0, 1]³`` drawn uniformly, redrawn (up to 8
      candidates, else the farthest) until its Euclidean distance to the mean background
      colour under the digit is at least ``min_color_distance``; an opacity
      ``a ~ U(min_opacity, 1)``;
    - composite: ``x = (1 − a·m) · background + a·m · c``, rounded to uint8.

    The digit's contrast against its background thus varies from image to image in
    luminance and in hue (some digits differ from the background almost only in
    colour). A logistic regression on raw pixels scores about 0.3 on the test split
    (0.97 on :class:`Digits`; chance 0.1); the small ResNet of the ``nassar2020`` recipe
    reaches about 0.87 validation accuracy in 16 epochs (0.71 in 8). The split is that
    of :class:`Digits` (the same images in each split for the same fractions and
    ``split_seed``); the rendering is fixed by ``seed``. Rendering takes about 0.5 s.

    Args:
        size: output side length in pixels.
        val_fraction, test_fraction: fractions of the 1,797 images held out.
        split_seed: seed of the permutation that defines the split.
        seed: seed of the rendering (crops, colours, opacities).
        min_opacity: lower end of the digit's opacity, in (0, 1].
        min_color_distance: least RGB distance (in [0, 1] units) between the digit's
            colour and the mean background colour under it, in [0, 1].

    Example:
        >>> images = ClutteredDigits(seed=0)
        >>> images.split("train").images.shape
        (1168, 3, 32, 32)
    """

    name = "cluttered_digits"
    num_classes = 10
    channels = 3
    #: reduction of the sample photographs before cropping (427×640 → 107×160)
    photo_reduction = 4
    #: smallest and largest crop side, as a fraction of the reduced photograph's height
    crop_fraction = (0.25, 1.0)
    #: colour candidates drawn per image for the distance rule
    color_candidates = 8

    def __init__(
        self,
        size: int = 32,
        val_fraction: float = 0.15,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        seed: int = 0,
        min_opacity: float = 0.7,
        min_color_distance: float = 0.45,
    ):
        super().__init__()
        if size < 8:
            raise ValueError(f"size: expected at least 8 pixels, found {size}")
        if not 0.0 < min_opacity <= 1.0:
            raise ValueError(f"min_opacity: expected a value in (0, 1], found {min_opacity}")
        if not 0.0 <= min_color_distance <= 1.0:
            raise ValueError(f"min_color_distance: expected a value in [0, 1], found {min_color_distance}")
        split_indices(10, val_fraction, test_fraction, split_seed)  # validates the fractions now
        self.size = size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self.seed = seed
        self.min_opacity = min_opacity
        self.min_color_distance = min_color_distance

    def _backgrounds(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``[n, 3, size, size]`` float32 in [0, 1]: random crops of the sample photographs."""
        from PIL import Image
        from sklearn.datasets import load_sample_images

        photos = [Image.fromarray(p).reduce(self.photo_reduction) for p in load_sample_images().images]
        which = rng.integers(0, len(photos), n)
        lo, hi = self.crop_fraction
        side = rng.uniform(lo, hi, n)
        fx, fy = rng.random(n), rng.random(n)
        flip = rng.random(n) < 0.5
        out = np.empty((n, self.size, self.size, 3), dtype=np.uint8)
        for i in range(n):
            photo = photos[which[i]]
            width, height = photo.size
            c = side[i] * min(width, height)
            x0, y0 = fx[i] * (width - c), fy[i] * (height - c)
            crop = photo.resize((self.size, self.size), Image.Resampling.BILINEAR, box=(x0, y0, x0 + c, y0 + c))
            if flip[i]:
                crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            out[i] = np.asarray(crop)
        return out.transpose(0, 3, 1, 2).astype(np.float32) / 255.0

    def _load(self) -> dict[str, ImageSplit]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        n = len(digits.target)
        rng = np.random.default_rng(self.seed)
        background = self._backgrounds(rng, n)  # [n, 3, s, s]
        raw = torch.from_numpy((digits.images / 16.0)[:, None].astype(np.float32))
        mask = torch.nn.functional.interpolate(raw, size=(self.size, self.size), mode="bilinear", align_corners=False)
        mask = mask.clamp(0, 1).numpy()  # [n, 1, s, s]
        under = (mask * background).sum(axis=(2, 3)) / np.maximum(mask.sum(axis=(2, 3)), 1e-6)  # [n, 3]
        candidates = rng.random((n, self.color_candidates, 3)).astype(np.float32)
        distance = np.linalg.norm(candidates - under[:, None], axis=2)
        ok = distance >= self.min_color_distance
        pick = np.where(ok.any(axis=1), ok.argmax(axis=1), distance.argmax(axis=1))
        color = candidates[np.arange(n), pick]  # [n, 3]
        opacity = rng.uniform(self.min_opacity, 1.0, n).astype(np.float32)
        alpha = opacity[:, None, None, None] * mask
        images = (1.0 - alpha) * background + alpha * color[:, :, None, None]
        images = np.clip(np.round(images * 255.0), 0, 255).astype(np.uint8)
        labels = digits.target.astype(np.int64)
        keys = np.array([f"{self.name}/{i:04d}" for i in range(n)])
        idx = split_indices(n, self.val_fraction, self.test_fraction, self.split_seed)
        return {s: ImageSplit(images[i], labels[i], keys[i]) for s, i in idx.items()}
