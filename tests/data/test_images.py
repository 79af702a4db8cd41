import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from neuroreg.data.images import CIFAR10, MNIST, ClutteredDigits, Digits, ImageSplitDataset


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


# ------------------------------------------------------------------ cluttered digits
@pytest.fixture(scope="module")
def cluttered():
    return ClutteredDigits(size=32, split_seed=0, seed=0)


def test_cluttered_digits_shapes_splits_and_labels(cluttered):
    assert (cluttered.channels, cluttered.num_classes, cluttered.image_size) == (3, 10, (32, 32))
    digits = Digits(size=32, split_seed=0)
    for name in ("train", "validation", "test"):
        split, plain = cluttered.split(name), digits.split(name)
        assert split.images.shape == (len(plain), 3, 32, 32) and split.images.dtype == np.uint8
        assert split.labels.dtype == np.int64
        # the same digits in the same split as Digits, so the classes are as balanced
        np.testing.assert_array_equal(split.labels, plain.labels)
        assert [k.split("/")[1] for k in split.keys] == [k.split("/")[1] for k in plain.keys]
        assert split.keys[0].startswith("cluttered_digits/")
    counts = np.bincount(cluttered.split("train").labels, minlength=10)
    assert counts.min() >= 0.8 * counts.mean()
    item = ImageSplitDataset(cluttered.split("test"))[0]
    assert item["image"].shape == (3, 32, 32) and 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    x = cluttered.split("train").images_float()
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.9 and x.min() < 0.1
    with pytest.raises(ValueError, match="size"):
        ClutteredDigits(size=4)
    with pytest.raises(ValueError, match="min_opacity"):
        ClutteredDigits(min_opacity=0.0)
    with pytest.raises(ValueError, match="val_fraction"):
        ClutteredDigits(val_fraction=1.5)


def test_cluttered_digits_are_deterministic_per_seed(cluttered):
    import subprocess
    import sys

    again = ClutteredDigits(size=32, split_seed=0, seed=0)
    assert again.fingerprint() == cluttered.fingerprint()
    # and in a fresh interpreter (no state shared with this one)
    code = "from neuroreg.data.images import ClutteredDigits; print(ClutteredDigits(seed=0).fingerprint())"
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert fresh == cluttered.fingerprint()
    other = ClutteredDigits(size=32, split_seed=0, seed=1)
    assert other.fingerprint() != cluttered.fingerprint()
    np.testing.assert_array_equal(other.split("train").labels, cluttered.split("train").labels)  # same split
    assert np.abs(other.split("train").images.astype(int) - cluttered.split("train").images).mean() > 20
    assert ClutteredDigits(split_seed=1, seed=0).fingerprint() != cluttered.fingerprint()


def test_cluttered_digits_are_coloured_cluttered_and_show_the_digit(cluttered):
    x = cluttered.split("train").images_float()  # [N, 3, H, W]
    # colour: the channels differ, pixel by pixel, in (nearly) every image
    spread = np.abs(x - x.mean(axis=1, keepdims=True)).mean(axis=(1, 2, 3))
    assert np.median(spread) > 0.05 and (spread > 0.01).mean() > 0.99
    # the background varies from image to image (mean colour) and inside an image (clutter)
    mask = Digits(size=32, split_seed=0).split("train").images_float()[:, 0]  # the digit strokes, [N, H, W]
    outside = mask < 0.05
    per_image = np.array([[x[i, c][outside[i]].mean() for c in range(3)] for i in range(len(x))])
    assert per_image.std(axis=0).min() > 0.1
    within = np.array([x[i][:, outside[i]].std(axis=1).mean() for i in range(len(x))])
    assert np.median(within) > 0.05
    # the digit: strokes differ in colour from the background around them, by a varying amount
    inside = mask > 0.5
    contrast = np.array([np.linalg.norm(x[i][:, inside[i]].mean(axis=1) - x[i][:, outside[i]].mean(axis=1)) for i in range(len(x))])
    assert np.median(contrast) > 0.2 and contrast.std() > 0.05


def test_cluttered_digits_are_harder_than_digits_but_learnable(cluttered):
    from sklearn.linear_model import LogisticRegression

    def accuracy(images):
        train, test = images.split("train"), images.split("test")
        flat = lambda s: s.images.reshape(len(s), -1).astype(np.float32) / 255.0  # noqa: E731
        return LogisticRegression(max_iter=100).fit(flat(train), train.labels).score(flat(test), test.labels)

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs may stop at max_iter: enough for this comparison
        plain, hard = accuracy(Digits(size=32, split_seed=0)), accuracy(cluttered)
    assert plain > 0.9
    assert 0.15 < hard < plain - 0.4


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


# ------------------------------------------------------------------ grayscale, archives
def _write_cifar10(root, n_train=20, n_test=6, seed=0):
    """A CIFAR-10 'python version' folder in torchvision's layout (pickled batches)."""
    import pickle

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    per = n_train // 5
    parts = {f"data_batch_{i}": per for i in range(1, 6)} | {"test_batch": n_test}
    rows = {}
    for name, n in parts.items():
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)  # [N, 3 * 32 * 32], channel-major
        rows[name] = data
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": (np.arange(n) % 10).tolist()}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    return rows


@pytest.fixture
def trust_cifar(monkeypatch):
    """torchvision checks the md5 of the published batch files; fake files cannot match it."""
    import torchvision.datasets.cifar

    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda path, md5=None: Path(path).is_file())


def test_to_grayscale_uses_bt601_luminance():
    from neuroreg.data.images import to_grayscale

    rgb = np.zeros((2, 3, 1, 3), dtype=np.uint8)
    rgb[0, 0], rgb[0, 1], rgb[0, 2] = 255, 255, 255  # white
    rgb[1, :, 0, 0] = (255, 0, 0)
    rgb[1, :, 0, 1] = (0, 255, 0)
    rgb[1, :, 0, 2] = (0, 0, 255)
    grey = to_grayscale(rgb)
    assert grey.shape == (2, 1, 1, 3) and grey.dtype == np.uint8
    assert grey[0].ravel().tolist() == [255, 255, 255]
    assert grey[1].ravel().tolist() == [76, 150, 29]  # round(255 * (0.299, 0.587, 0.114))
    assert to_grayscale(grey) is grey
    with pytest.raises(ValueError, match=r"expected \[N, 1 or 3, H, W\] uint8"):
        to_grayscale(rgb.astype(np.float32))


def test_cifar10_grayscale_option(tmp_path, trust_cifar):
    rows = _write_cifar10(tmp_path)
    rgb = CIFAR10(data_dir=str(tmp_path), val_fraction=0.25)
    grey = CIFAR10(data_dir=str(tmp_path), val_fraction=0.25, grayscale=True)
    assert rgb.channels == 3 and grey.channels == 1 and CIFAR10.channels == 3
    test_rgb, test_grey = rgb.split("test"), grey.split("test")
    assert test_rgb.images.shape == (6, 3, 32, 32) and test_grey.images.shape == (6, 1, 32, 32)
    np.testing.assert_array_equal(test_rgb.images, rows["test_batch"].reshape(6, 3, 32, 32))
    expected = np.round(np.tensordot([0.299, 0.587, 0.114], test_rgb.images.astype(np.float64), axes=([0], [1])))
    assert np.abs(test_grey.images[:, 0].astype(int) - expected).max() <= 1  # float32 rounding at .5
    assert test_grey.keys.tolist() == test_rgb.keys.tolist() and test_grey.labels.tolist() == test_rgb.labels.tolist()
    assert grey.fingerprint() != rgb.fingerprint()
    assert (len(grey.split("train")), len(grey.split("validation"))) == (15, 5)
    resized = CIFAR10(data_dir=str(tmp_path), grayscale=True, size=16).split("test")
    assert resized.images.shape == (6, 1, 16, 16)


def test_cifar10_unpacks_the_fetched_archive(tmp_path, trust_cifar):
    import tarfile

    src = tmp_path / "src"
    _write_cifar10(src)
    data_dir = tmp_path / "cifar10"
    data_dir.mkdir()
    with tarfile.open(data_dir / "cifar-10-python.tar.gz", "w:gz") as t:
        t.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    c = CIFAR10(data_dir=str(data_dir))
    assert len(c.split("test")) == 6
    assert sorted(p.name for p in data_dir.iterdir()) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]  # no temp left


def test_unpack_archive_refuses_an_archive_without_the_folder(tmp_path):
    import zipfile

    from neuroreg.data.images import unpack_archive

    archive = tmp_path / "x.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("other/file.txt", "x")
    with pytest.raises(ValueError, match=r"x.zip: expected a top folder 'tiny-imagenet-200' in the archive, found \['other'\]"):
        unpack_archive(archive, tmp_path / "out", "tiny-imagenet-200")
    assert list((tmp_path / "out").iterdir()) == []
    (tmp_path / "y.zip").write_text("not an archive")
    with pytest.raises(ValueError, match="expected a zip or tar archive"):
        unpack_archive(tmp_path / "y.zip", tmp_path / "out", "tiny-imagenet-200")


# ------------------------------------------------------------------------ Tiny ImageNet
WNIDS = ["n02124075", "n01443537", "n09246464"]  # deliberately unsorted, as in the published wnids.txt


def _jpeg(path, rng, size=64, mode="RGB"):
    from PIL import Image

    shape = (size, size, 3) if mode == "RGB" else (size, size)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(path, format="JPEG", quality=95)


def _write_tiny_imagenet(root, n_train=4, size=64, seed=0):
    """A tiny-imagenet-200 folder in the published layout: 3 classes x n_train training
    images, 2 validation images per class, one unlabelled test image, one grey JPEG."""
    rng = np.random.default_rng(seed)
    top = root / "tiny-imagenet-200"
    (top / "val" / "images").mkdir(parents=True)
    (top / "test" / "images").mkdir(parents=True)
    (top / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    for wnid in WNIDS:
        folder = top / "train" / wnid / "images"
        folder.mkdir(parents=True)
        (top / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for i in range(n_train):
            _jpeg(folder / f"{wnid}_{i}.JPEG", rng, size, mode="L" if (wnid, i) == (WNIDS[0], 1) else "RGB")
    lines = []
    for i in range(2 * len(WNIDS)):
        _jpeg(top / "val" / "images" / f"val_{i}.JPEG", rng, size)
        lines.append(f"val_{i}.JPEG\t{WNIDS[i % len(WNIDS)]}\t0\t0\t{size - 1}\t{size - 1}")
    (top / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    _jpeg(top / "test" / "images" / "test_0.JPEG", rng, size)
    return top


def test_tiny_imagenet_reads_the_published_layout(tmp_path):
    from PIL import Image

    from neuroreg.data.images import TinyImageNet

    top = _write_tiny_imagenet(tmp_path)
    tiny = TinyImageNet(data_dir=str(tmp_path), val_fraction=0.25, split_seed=0)
    assert tiny.num_classes == 3 and tiny.wnids == sorted(WNIDS) and tiny.channels == 3
    train, val, test = tiny.split("train"), tiny.split("validation"), tiny.split("test")
    assert (len(train), len(val), len(test)) == (9, 3, 6)
    assert train.images.shape[1:] == (3, 64, 64) and train.images.dtype == np.uint8
    assert sorted(train.keys.tolist() + val.keys.tolist()) == sorted(
        f"tinyimagenet/train/{w}_{i}" for w in WNIDS for i in range(4)
    )
    labels = dict(zip(train.keys.tolist() + val.keys.tolist(), train.labels.tolist() + val.labels.tolist()))
    assert all(labels[f"tinyimagenet/train/{w}_0"] == sorted(WNIDS).index(w) for w in WNIDS)
    assert test.keys.tolist() == [f"tinyimagenet/val/val_{i}" for i in range(6)]
    assert test.labels.tolist() == [sorted(WNIDS).index(WNIDS[i % 3]) for i in range(6)]
    with Image.open(top / "val" / "images" / "val_4.JPEG") as im:
        np.testing.assert_array_equal(test.images[4], np.asarray(im.convert("RGB")).transpose(2, 0, 1))
    grey_key = f"tinyimagenet/train/{WNIDS[0]}_1"  # stored as a one-channel JPEG
    where = [train, val][0 if grey_key in train.keys else 1]
    img = where.images[where.keys.tolist().index(grey_key)]
    assert img.shape == (3, 64, 64) and (img[0] == img[1]).all() and (img[1] == img[2]).all()
    # the same folder, passed directly; a seeded split; a fingerprint that follows content
    same = TinyImageNet(data_dir=str(top), val_fraction=0.25, split_seed=0)
    assert same.fingerprint() == tiny.fingerprint()
    assert TinyImageNet(data_dir=str(tmp_path), val_fraction=0.25, split_seed=1).fingerprint() != tiny.fingerprint()
    small = TinyImageNet(data_dir=str(tmp_path), val_fraction=0.25, size=32, grayscale=True)
    assert small.channels == 1 and small.split("test").images.shape == (6, 1, 32, 32)


def test_tiny_imagenet_feeds_a_datamodule(tmp_path):
    from neuroreg.data.datamodules import RegularizedDataModule
    from neuroreg.data.images import TinyImageNet

    _write_tiny_imagenet(tmp_path)
    dm = RegularizedDataModule(images=TinyImageNet(data_dir=str(tmp_path), val_fraction=0.25), batch_size=4)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 64, 64) and 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert dm.num_classes == 3 and dm.image_size == 64 and dm.channels == 3


def test_tiny_imagenet_unpacks_the_fetched_archive(tmp_path):
    import zipfile

    from neuroreg.data.images import TinyImageNet

    top = _write_tiny_imagenet(tmp_path / "src")
    data_dir = tmp_path / "tinyimagenet"
    data_dir.mkdir()
    with zipfile.ZipFile(data_dir / "tiny-imagenet-200.zip", "w") as z:
        for p in sorted(top.rglob("*")):
            z.write(p, p.relative_to(top.parent).as_posix())
    tiny = TinyImageNet(data_dir=str(data_dir))
    assert len(tiny.split("test")) == 6
    assert sorted(p.name for p in data_dir.iterdir()) == ["tiny-imagenet-200", "tiny-imagenet-200.zip"]


def test_tiny_imagenet_missing_or_partial_folders_are_named(tmp_path):
    from neuroreg.data.images import TinyImageNet

    with pytest.raises(FileNotFoundError, match=rf"data_dir={tmp_path}: expected the unpacked folder .*tiny-imagenet-200.*neuroreg data fetch tinyimagenet"):
        TinyImageNet(data_dir=str(tmp_path)).split("train")
    top = _write_tiny_imagenet(tmp_path)
    (top / "val" / "val_annotations.txt").rename(top / "val" / "annotations.bak")
    with pytest.raises(FileNotFoundError, match=r"val_annotations.txt: expected one .* line per validation image"):
        TinyImageNet(data_dir=str(tmp_path)).split("test")
    (top / "val" / "annotations.bak").rename(top / "val" / "val_annotations.txt")
    (top / "train" / WNIDS[2] / "images").rename(top / "train" / WNIDS[2] / "moved")
    with pytest.raises(FileNotFoundError, match=rf"{WNIDS[2]}/images: expected the training images of class {WNIDS[2]}"):
        TinyImageNet(data_dir=str(tmp_path)).split("train")
    (top / "train" / WNIDS[2] / "moved").rename(top / "train" / WNIDS[2] / "images")
    (top / "wnids.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"wnids.txt: expected the class ids"):
        _ = TinyImageNet(data_dir=str(tmp_path)).num_classes


def test_tiny_imagenet_bad_annotations_and_images_are_named(tmp_path):
    from neuroreg.data.images import TinyImageNet

    top = _write_tiny_imagenet(tmp_path)
    table = top / "val" / "val_annotations.txt"
    good = table.read_text()
    table.write_text(good + "val_9.JPEG\tn99999999\t0\t0\t63\t63\n")
    with pytest.raises(ValueError, match=r"val_annotations.txt: line 7: expected a class id listed in wnids.txt, found 'n99999999'"):
        TinyImageNet(data_dir=str(tmp_path)).split("test")
    table.write_text(good + f"val_9.JPEG\t{WNIDS[0]}\t0\t0\t63\t63\n")
    with pytest.raises(FileNotFoundError, match=r"expected the 7 images annotated in val_annotations.txt, found 1 missing \(e.g. \['val_9.JPEG'\]\)"):
        TinyImageNet(data_dir=str(tmp_path)).split("test")
    table.write_text("\n".join(good.splitlines()[:-1]) + "\n")
    with pytest.raises(ValueError, match=r"expected a line for every image in .*found 1 without \(e.g. \['val_5.JPEG'\]\)"):
        TinyImageNet(data_dir=str(tmp_path)).split("test")
    table.write_text(good)
    odd = top / "train" / WNIDS[0] / "images" / f"{WNIDS[0]}_2.JPEG"
    _jpeg(odd, np.random.default_rng(1), size=48)
    with pytest.raises(ValueError, match=rf"{WNIDS[0]}_2.JPEG: expected 64x64 pixels like {WNIDS[1]}_0.JPEG, found 48x48"):
        TinyImageNet(data_dir=str(tmp_path)).split("train")
    odd.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=rf"{WNIDS[0]}_2.JPEG: expected a readable JPEG image"):
        TinyImageNet(data_dir=str(tmp_path)).split("train")
