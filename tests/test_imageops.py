"""neuroreg.imageops: grey ↔ RGB, resizing and block means against naive references, and
against the exact expressions of the copies they replaced (so stored images, simulated
responses and twin inputs keep their numbers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuroreg.imageops import (
    GRAYSCALE_CHUNK,
    LUMINANCE_WEIGHTS,
    block_mean,
    cover_crop,
    resize,
    to_channels,
    to_grayscale,
    to_rgb,
)


@pytest.fixture
def rgb() -> np.ndarray:
    return np.random.default_rng(0).random((5, 3, 9, 7), dtype=np.float32)


def naive_luminance(images: np.ndarray) -> np.ndarray:
    """Pixel by pixel, in float64."""
    n, _, h, w = images.shape
    out = np.empty((n, 1, h, w))
    for i in range(n):
        for y in range(h):
            for x in range(w):
                r, g, b = (float(images[i, c, y, x]) for c in range(3))
                out[i, 0, y, x] = 0.299 * r + 0.587 * g + 0.114 * b
    return out


def naive_bilinear(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize with half-pixel centres (``align_corners=False``), in float64."""
    n, c, h, w = images.shape
    H, W = size

    def taps(out: int, inp: int):
        for o in range(out):
            src = max((o + 0.5) * inp / out - 0.5, 0.0)
            i0 = min(int(np.floor(src)), inp - 1)
            i1 = min(i0 + 1, inp - 1)
            yield o, i0, i1, src - i0

    out = np.empty((n, c, H, W))
    for oy, y0, y1, ly in taps(H, h):
        for ox, x0, x1, lx in taps(W, w):
            top = (1 - lx) * images[:, :, y0, x0] + lx * images[:, :, y0, x1]
            bottom = (1 - lx) * images[:, :, y1, x0] + lx * images[:, :, y1, x1]
            out[:, :, oy, ox] = (1 - ly) * top + ly * bottom
    return out


def test_luminance_weights_are_bt601():
    assert LUMINANCE_WEIGHTS == (0.299, 0.587, 0.114) and sum(LUMINANCE_WEIGHTS) == pytest.approx(1.0)


def test_float_grayscale_matches_naive_and_the_former_expression(rgb):
    grey = to_grayscale(rgb)
    assert grey.shape == (5, 1, 9, 7) and grey.dtype == np.float32
    np.testing.assert_allclose(grey, naive_luminance(rgb), atol=1e-6)
    former = np.tensordot(rgb, np.asarray([0.299, 0.587, 0.114], dtype=np.float32), axes=([1], [0]))[:, None]
    assert np.array_equal(grey, former)  # data/simulated.py, data/datamodules.py
    assert to_grayscale(grey) is grey


def test_uint8_grayscale_rounds_and_matches_the_former_expression():
    rgb = np.random.default_rng(1).integers(0, 256, (GRAYSCALE_CHUNK + 3, 3, 2, 2), dtype=np.uint8)
    grey = to_grayscale(rgb)
    assert grey.shape == (len(rgb), 1, 2, 2) and grey.dtype == np.uint8
    ref = naive_luminance(rgb[:64])
    assert np.abs(grey[:64].astype(float) - ref).max() <= 0.5 + 1e-4
    w = np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
    former = np.clip(np.round(np.tensordot(w, rgb.astype(np.float32), axes=([0], [1]))[:, None]), 0, 255).astype(np.uint8)
    assert np.array_equal(grey, former)  # data/images.py's to_grayscale
    assert to_grayscale(np.full((1, 3, 1, 1), 255, dtype=np.uint8)).item() == 255


def test_torch_grayscale_matches_numpy_naive_and_keeps_dtype(rgb):
    x = torch.from_numpy(rgb)
    grey = to_grayscale(x)
    assert isinstance(grey, torch.Tensor) and grey.dtype == torch.float32
    np.testing.assert_allclose(grey.numpy(), naive_luminance(rgb), atol=1e-6)
    former = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    assert torch.equal(grey, former)  # twin/transforms.py, evaluation/brain.py
    assert to_grayscale(x.double()).dtype == torch.float64


def test_to_rgb_repeats_the_channel(rgb):
    grey = to_grayscale(rgb)
    out = to_rgb(grey)
    assert out.shape == (5, 3, 9, 7) and all(np.array_equal(out[:, c], grey[:, 0]) for c in range(3))
    t = to_rgb(torch.from_numpy(grey))
    assert t.shape == (5, 3, 9, 7) and torch.equal(t[:, 2], torch.from_numpy(grey[:, 0]))
    assert to_rgb(rgb) is rgb
    assert to_channels(grey, 3).shape == (5, 3, 9, 7) and to_channels(rgb, 1).shape == (5, 1, 9, 7)


@pytest.mark.parametrize("bad", [np.zeros((2, 2, 4, 4), np.float32), np.zeros((2, 3, 4), np.float32)])
def test_bad_shapes_are_refused(bad):
    with pytest.raises(ValueError, match="expected \\[N, 1 or 3, H, W\\], found shape"):
        to_grayscale(bad)
    with pytest.raises(ValueError, match="expected \\[N, 1 or 3, H, W\\]"):
        to_rgb(bad)


def test_bad_channels_and_dtype_are_refused(rgb):
    with pytest.raises(ValueError, match="channels: expected 1 or 3, found 2"):
        to_channels(rgb, 2)
    with pytest.raises(ValueError, match="expected uint8 or float, found dtype int32"):
        to_grayscale(rgb.astype(np.int32))


@pytest.mark.parametrize("size", [(18, 14), (4, 3), (9, 10)])
def test_resize_is_bilinear_with_half_pixel_centres(rgb, size):
    out = resize(rgb, size)
    assert isinstance(out, np.ndarray) and out.shape == (5, 3, *size) and out.dtype == np.float32
    np.testing.assert_allclose(out, naive_bilinear(rgb.astype(np.float64), size), atol=1e-5)
    t = resize(torch.from_numpy(rgb), size)
    assert torch.equal(t, torch.from_numpy(out))
    former = torch.nn.functional.interpolate(torch.from_numpy(rgb), size=size, mode="bilinear", align_corners=False)
    assert torch.equal(t, former)
    assert resize(rgb, (9, 7)) is rgb


def test_cover_crop_scales_to_cover_and_centres():
    x = torch.rand(2, 1, 10, 20)
    out = cover_crop(x, (10, 10))  # already covers in height: width cropped, no scaling
    assert torch.equal(out, x[:, :, :, 5:15])
    up = cover_crop(x, (20, 20))  # scale 2: 20 x 40, then the middle 20 columns
    full = torch.nn.functional.interpolate(x, size=(20, 40), mode="bilinear", align_corners=False)
    assert torch.equal(up, full[:, :, :, 10:30])
    down = cover_crop(x, (5, 5))  # scale 0.5, antialiased
    ref = torch.nn.functional.interpolate(x, size=(5, 10), mode="bilinear", align_corners=False, antialias=True)
    assert torch.equal(down, ref[:, :, :, 2:7])
    assert cover_crop(x, (10, 20)) is x


def test_block_mean_matches_naive_and_rounds_uint8():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (3, 2, 7, 9), dtype=np.uint8)
    out = block_mean(images, 2)
    assert out.shape == (3, 2, 3, 4) and out.dtype == np.uint8
    naive = np.empty((3, 2, 3, 4))
    for y in range(3):
        for x in range(4):
            naive[:, :, y, x] = images[:, :, 2 * y : 2 * y + 2, 2 * x : 2 * x + 2].astype(float).mean(axis=(2, 3))
    assert np.abs(out - naive).max() <= 0.5
    floats = images.astype(np.float64) / 255
    np.testing.assert_allclose(block_mean(floats, 2), naive / 255, atol=1e-6)
    assert block_mean(floats, 2).dtype == np.float32
    assert block_mean(images, 1) is images


def test_imageops_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, neuroreg.imageops, neuroreg.data.simulated; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
