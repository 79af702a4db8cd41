"""Tiny ImageNet read from its official folder layout (or the fetched archive)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .archives import unpack_archive
from .base import ImageData, ImageSplit, split_train
from .colour import chunked, resize_uint8, to_grayscale


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
            images = chunked(images, lambda block: resize_uint8(block.astype(np.float32) / 255.0, self.size))
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
        train, validation = split_train(
            self.name, self._finish(train_images), train_labels, train_keys, self.val_fraction, self.split_seed
        )
        return {"train": train, "validation": validation, "test": ImageSplit(self._finish(test_images), val_labels, test_keys)}
