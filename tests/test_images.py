import gzip
import struct

import numpy as np
import pytest

from neuroreg.data.images import CIFAR10, MNIST, Digits, ImageSplitDataset


def test_digits_splits_are_disjoint_complete_and_seeded():
    d = Digits(size=32, split_seed=0)
    train, val, test = d.split("train"), d.split("validation"), d.split("test")
    keys = set(train.keys) | set(val.keys) | set(test.keys)
    assert len(keys) == len(train) + len(val) + len(test) == 1797
    assert train.images.shape[1:] == (1, 32, 32) and train.images.dtype == np.uint8
    assert (len(val), len(test)) == (270, 359)
    assert Digits(split_seed=0).fingerprint() == d.fingerprint()
    assert Digits(split_seed=1).fingerprint() != d.fingerprint()
    assert set(np.unique(train.labels)) == set(range(10))


def test_digits_dataset_items_are_float_in_unit_range():
    d = Digits()
    ds = ImageSplitDataset(d.split("test"))
    item = ds[0]
    assert item["image"].shape == (1, 32, 32) and 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert item["image"].max() > 0.5  # upsampled strokes keep their contrast


def test_bad_split_and_fractions():
    with pytest.raises(ValueError, match="val_fraction"):
        Digits(val_fraction=1.5)
    with pytest.raises(ValueError, match="split: expected one of"):
        Digits().split("holdout")


def _write_idx(path, array):
    """An MNIST idx file exactly as published (big-endian header, gzip)."""
    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def test_mnist_reads_local_idx_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 40), ("t10k", 10)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    for gz in raw.glob("*.gz"):  # torchvision reads the extracted files
        gz.with_suffix("").write_bytes(gzip.decompress(gz.read_bytes()))
    m = MNIST(data_dir=str(tmp_path), size=32, val_fraction=0.25)
    assert len(m.split("train")) == 30 and len(m.split("validation")) == 10 and len(m.split("test")) == 10
    assert m.split("test").images.shape == (10, 1, 32, 32)
    assert m.split("test").labels.tolist() == list(range(10))


def test_missing_torchvision_data_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"data_dir={tmp_path}.*download=True"):
        CIFAR10(data_dir=str(tmp_path)).split("train")
