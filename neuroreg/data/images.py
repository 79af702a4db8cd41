"""Classification image sets with fixed, seeded splits.

Every image set exposes three splits (``train``, ``validation``, ``test``) of uint8
images ``[N, C, H, W]``, integer labels ``[N]`` and stable string keys ``[N]`` (the
keys TargetSets are aligned by), plus a content fingerprint used in cache keys.
Images are handed to models as float32 in [0, 1]; normalisation lives in the model.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..imageops import LUMINANCE_WEIGHTS

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


def _chunked(images: np.ndarray, fn, chunk: int = 4096) -> np.ndarray:
    """``fn`` applied to blocks of ``chunk`` images (bounds the float32 working memory)."""
    if len(images) <= chunk:
        return fn(images)
    return np.concatenate([fn(images[i : i + chunk]) for i in range(0, len(images), chunk)])


def to_grayscale(images: np.ndarray) -> np.ndarray:
    """RGB → luminance: ``[N, 3, H, W]`` uint8 to ``[N, 1, H, W]`` uint8.

    ``Y = 0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601,
    :data:`~neuroreg.imageops.LUMINANCE_WEIGHTS`, the weights the simulated
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

    return _chunked(images, grey)


def _split_train(
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


def unpack_archive(archive: Path, dest: Path, folder: str) -> Path:
    """Unpack ``archive`` (zip or tar, e.g. as ``neuroreg data fetch`` leaves it) so that
    its top folder ``folder`` becomes ``dest/folder``.

    The archive is unpacked into a temporary folder inside ``dest`` and its top folder
    renamed into place, so an interrupted unpack never leaves a partial ``dest/folder``.
    Tar members are unpacked with the ``data`` filter (no absolute paths, links out of
    the folder or device files).

    Returns:
        ``dest/folder``.

    Raises:
        ValueError: not a zip or tar archive, or it has no top folder ``folder``.
    """
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder}.", suffix=".unpack", dir=dest))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                z.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as t:
                t.extractall(tmp, filter="data")
        else:
            raise ValueError(f"{archive}: expected a zip or tar archive, found neither")
        if not (tmp / folder).is_dir():
            found = sorted(p.name for p in tmp.iterdir())
            raise ValueError(f"{archive}: expected a top folder {folder!r} in the archive, found {found}")
        target = dest / folder
        if not target.exists():  # another process may have finished first
            os.replace(tmp / folder, target)
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
        >>> images.split("train").images.shape            # doctest: +SKIP
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
        _split_indices(10, val_fraction, test_fraction, split_seed)  # validates the fractions now
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
        idx = _split_indices(n, self.val_fraction, self.test_fraction, self.split_seed)
        return {s: ImageSplit(images[i], labels[i], keys[i]) for s, i in idx.items()}


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
            data = _chunked(data, lambda block: _resize_uint8(block.astype(np.float32) / 255.0, self.size))
        return np.ascontiguousarray(data, dtype=np.uint8), labels

    def _load(self) -> dict[str, ImageSplit]:
        train_images, train_labels = self._arrays(self._open(train=True))
        test_images, test_labels = self._arrays(self._open(train=False))
        train_keys = np.array([f"{self.name}/train/{i:05d}" for i in range(len(train_labels))])
        test_keys = np.array([f"{self.name}/test/{i:05d}" for i in range(len(test_labels))])
        train, validation = _split_train(self.name, train_images, train_labels, train_keys, self.val_fraction, self.split_seed)
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


class TinyImageNet(ImageData):
    """Tiny ImageNet (200 classes, 64×64 RGB) read from the official folder layout.

    Reads ``tiny-imagenet-200/`` exactly as ``tiny-imagenet-200.zip`` unpacks::

        wnids.txt                          class ids (WordNet ids), one per line
        train/<wnid>/images/*.JPEG         the training images of each class (500 each)
        val/images/*.JPEG                  the labelled official validation images (10,000)
        val/val_annotations.txt            <file>\\t<wnid>\\t<x0>\\t<y0>\\t<x1>\\t<y1> per image

    (``test/`` has no labels and is not read). As for the torchvision sets, the labelled
    official validation set is the ``test`` split and ``val_fraction`` of the training
    images (seeded) become ``validation``. Label ``i`` is the ``i``-th wnid in sorted
    order; keys are ``tinyimagenet/train/<file stem>`` and ``tinyimagenet/val/<file stem>``.
    Grey JPEGs (a few hundred in the set) are converted to RGB.

    Args:
        data_dir: the folder holding ``tiny-imagenet-200/`` (or that folder itself). When
            only the archive ``tiny-imagenet-200.zip`` lies there (``neuroreg data fetch
            tinyimagenet`` puts it in ``data/tinyimagenet``), it is unpacked on first use.
        val_fraction: fraction of the training images held out as ``validation``.
        split_seed: seed of that split.
        size: output side length (bilinear resize), ``None`` to keep 64.
        grayscale: convert to one luminance channel (:func:`to_grayscale`).

    Raises:
        FileNotFoundError: (on first use) no folder or archive under ``data_dir``, or a
            part of the layout missing (names the path).
        ValueError: (on first use) a malformed ``wnids.txt`` / ``val_annotations.txt``
            (names file and line), an annotation without its image or an image without
            annotation, an unreadable image or one whose size differs from the others.

    Example:
        >>> tiny = TinyImageNet("data/tinyimagenet")      # doctest: +SKIP
        >>> tiny.split("test").images.shape               # doctest: +SKIP
        (10000, 3, 64, 64)
    """

    name = "tinyimagenet"
    channels = 3
    folder = "tiny-imagenet-200"
    archive = "tiny-imagenet-200.zip"
    image_suffixes = (".jpeg", ".jpg")

    def __init__(
        self,
        data_dir: str = "data/tinyimagenet",
        val_fraction: float = 0.1,
        split_seed: int = 0,
        size: int | None = None,
        grayscale: bool = False,
    ):
        super().__init__()
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction: expected a fraction in (0, 1), found {val_fraction}")
        if size is not None and size < 8:
            raise ValueError(f"size: expected at least 8 pixels or None, found {size}")
        self.data_dir = Path(data_dir)
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.size = size
        self.grayscale = grayscale
        self.channels = 1 if grayscale else 3
        self._wnids: list[str] | None = None

    # ---------------------------------------------------------------- layout
    def root(self) -> Path:
        """The ``tiny-imagenet-200`` folder (unpacking the fetched archive if that is all there is)."""
        for candidate in (self.data_dir, self.data_dir / self.folder):
            if (candidate / "wnids.txt").is_file():
                return candidate
        if (self.data_dir / self.folder).is_dir():
            self._need(self.data_dir / self.folder / "wnids.txt", "the class ids, one per line")
        if (self.data_dir / self.archive).is_file():
            return unpack_archive(self.data_dir / self.archive, self.data_dir, self.folder)
        found = sorted(p.name for p in self.data_dir.iterdir()) if self.data_dir.is_dir() else "no such folder"
        raise FileNotFoundError(
            f"TinyImageNet: data_dir={self.data_dir}: expected the unpacked folder {self.data_dir / self.folder} "
            f"with wnids.txt, train/ and val/ (or the archive {self.data_dir / self.archive}), found {found}. "
            "Fetch it with `neuroreg data fetch tinyimagenet` (files land in data/tinyimagenet)."
        )

    @staticmethod
    def _need(path: Path, what: str) -> Path:
        if not path.exists():
            raise FileNotFoundError(f"TinyImageNet: {path}: expected {what}, found nothing (a partial copy of tiny-imagenet-200?)")
        return path

    @property
    def wnids(self) -> list[str]:
        """The class ids in label order (sorted), read from ``wnids.txt``."""
        if self._wnids is None:
            path = self._need(self.root() / "wnids.txt", "the class ids, one per line")
            ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            if not ids:
                raise ValueError(f"{path}: expected class ids (one per line), found none")
            dup = sorted({w for w in ids if ids.count(w) > 1})
            if dup:
                raise ValueError(f"{path}: expected unique class ids, found duplicates {dup[:3]}")
            self._wnids = sorted(ids)
        return self._wnids

    @property
    def num_classes(self) -> int:
        """Number of classes (200 for the published set), from ``wnids.txt``."""
        return len(self.wnids)

    def _images(self, folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir() if p.suffix.lower() in self.image_suffixes)

    def _train_files(self, root: Path) -> tuple[list[Path], np.ndarray]:
        files, labels = [], []
        for label, wnid in enumerate(self.wnids):
            folder = self._need(root / "train" / wnid / "images", f"the training images of class {wnid} (listed in wnids.txt)")
            found = self._images(folder)
            if not found:
                raise FileNotFoundError(f"TinyImageNet: {folder}: expected the JPEG images of class {wnid}, found none")
            files += found
            labels += [label] * len(found)
        return files, np.asarray(labels, dtype=np.int64)

    def _val_files(self, root: Path) -> tuple[list[Path], np.ndarray]:
        folder = self._need(root / "val" / "images", "the official validation images")
        table = self._need(root / "val" / "val_annotations.txt", "one '<file>\\t<wnid>\\t...' line per validation image")
        index = {w: i for i, w in enumerate(self.wnids)}
        labels: dict[str, int] = {}
        for number, line in enumerate(table.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            fields = line.split("\t") if "\t" in line else line.split()
            if len(fields) < 2:
                raise ValueError(f"{table}: line {number}: expected '<file>\\t<wnid>\\t...', found {line!r}")
            name, wnid = fields[0].strip(), fields[1].strip()
            if wnid not in index:
                raise ValueError(f"{table}: line {number}: expected a class id listed in wnids.txt, found {wnid!r}")
            if name in labels:
                raise ValueError(f"{table}: line {number}: expected one line per image, found {name!r} again")
            labels[name] = index[wnid]
        present = {p.name: p for p in self._images(folder)}
        missing = sorted(set(labels) - set(present))
        if missing:
            raise FileNotFoundError(
                f"TinyImageNet: {folder}: expected the {len(labels)} images annotated in {table.name}, "
                f"found {len(missing)} missing (e.g. {missing[:3]})"
            )
        unlabelled = sorted(set(present) - set(labels))
        if unlabelled:
            raise ValueError(f"{table}: expected a line for every image in {folder}, found {len(unlabelled)} without (e.g. {unlabelled[:3]})")
        names = sorted(labels)
        return [present[n] for n in names], np.asarray([labels[n] for n in names], dtype=np.int64)

    # --------------------------------------------------------------- decoding
    def _decode(self, files: list[Path], shape: tuple[int, int] | None) -> np.ndarray:
        """``[N, 3, H, W]`` uint8 RGB; every image must have the size of the first (or ``shape``)."""
        if not files:
            raise FileNotFoundError(f"TinyImageNet: {self.root()}: expected JPEG images, found none")
        from PIL import Image, UnidentifiedImageError

        out = None
        for i, path in enumerate(files):
            try:
                with Image.open(path) as im:
                    pixels = np.asarray(im.convert("RGB"))
            except (OSError, UnidentifiedImageError) as err:
                raise ValueError(f"{path}: expected a readable JPEG image, found an unreadable file ({err})") from err
            if out is None:
                shape = shape or pixels.shape[:2]
                out = np.empty((len(files), 3, *shape), dtype=np.uint8)
            if pixels.shape[:2] != tuple(shape):
                raise ValueError(
                    f"{path}: expected {shape[0]}x{shape[1]} pixels like {files[0].name}, found {pixels.shape[0]}x{pixels.shape[1]}"
                )
            out[i] = pixels.transpose(2, 0, 1)
        return out

    def _finish(self, images: np.ndarray) -> np.ndarray:
        if self.grayscale:
            images = to_grayscale(images)
        if self.size is not None and images.shape[2:] != (self.size, self.size):
            images = _chunked(images, lambda block: _resize_uint8(block.astype(np.float32) / 255.0, self.size))
        return np.ascontiguousarray(images)

    def _load(self) -> dict[str, ImageSplit]:
        root = self.root()
        train_files, train_labels = self._train_files(root)
        val_files, val_labels = self._val_files(root)
        train_images = self._decode(train_files, None)
        test_images = self._decode(val_files, tuple(train_images.shape[2:]))
        train_keys = np.array([f"{self.name}/train/{p.stem}" for p in train_files])
        test_keys = np.array([f"{self.name}/val/{p.stem}" for p in val_files])
        if len(set(train_keys.tolist())) != len(train_keys):
            raise ValueError(f"TinyImageNet: {root / 'train'}: expected unique image file names, found duplicates")
        train, validation = _split_train(
            self.name, self._finish(train_images), train_labels, train_keys, self.val_fraction, self.split_seed
        )
        return {"train": train, "validation": validation, "test": ImageSplit(self._finish(test_images), val_labels, test_keys)}
