"""Cowley et al. 2023 V4 reader: the real session files, and small broken files."""

from __future__ import annotations

import io
import logging
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neuroreg.data.readers._common import ReaderError
from neuroreg.data.readers.cowley2023 import DroppedNeuronsWarning, content_split, read_cowley2023, session_files
from neuroreg.data.recording import NeuralRecording

ROOT = Path(__file__).resolve().parents[2]


def _data_dir() -> Path | None:
    env = os.environ.get("NEUROREG_TEST_DATA")
    for base in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data"]:
        folder = base / "cowley2023_v4" / "data_V4_responses"
        if folder.is_dir():
            return folder
    return None


DATA = _data_dir()
real = pytest.mark.skipif(DATA is None, reason="Cowley 2023 files not found (set NEUROREG_TEST_DATA to the shared data folder)")


def _read(session: str, raw: bool = False, averaged: bool = True, **kw) -> NeuralRecording:
    files = session_files(DATA, session)
    return read_cowley2023(
        files["images"],
        files["responses"] if averaged else None,
        files["raw_responses"] if raw else None,
        session=session,
        pixels_per_degree=kw.pop("pixels_per_degree", 20.0),
        **kw,
    )


def _tier_of(rec: NeuralRecording) -> np.ndarray:
    """``[N]`` tier of each image (every image has trials in these sessions)."""
    tiers = np.empty(rec.n_images, dtype=object)
    tiers[rec.trial_image] = rec.trial_tier
    return tiers


# ------------------------------------------------------------------ real files
@real
def test_trial_level_session_matches_the_averaged_file(caplog):
    with caplog.at_level(logging.WARNING, logger="neuroreg.data.readers.cowley2023"):
        rec = _read("210325", raw=True)
    raw = np.load(DATA / "responses_raw" / "responses_210325.npy")
    avg = np.load(DATA / "responses_repeat_averaged" / "responses_210325.npy")
    assert raw.shape == (50, 640, 10)
    assert (rec.n_images, rec.n_neurons) == (640, 50)
    assert rec.n_trials == int((~np.isnan(raw).all(axis=0)).sum())
    _, reps = rec.repeats()
    per_image = (~np.isnan(reps).all(axis=2)).sum(axis=1)
    assert per_image.min() == 6 and per_image.max() == 10
    index, mean = rec.mean_per_image()
    np.testing.assert_allclose(mean, avg[:, index].T, atol=1e-4)
    assert rec.images.shape == (640, 3, 112, 112) and rec.images.dtype == np.uint8
    assert (rec.species, rec.area, rec.response_unit) == ("macaque", "V4", "spikes")
    assert rec.image_ids[0] == 1 and rec.image_ids[-1] == 640
    assert rec.neurons["ids"][0] == "210325/0"
    assert "trial-level" in rec.source and "not stated" in rec.source
    counts = {t: int(np.isin(np.arange(640), rec.trial_image[rec.trial_tier == t]).sum()) for t in rec.tiers}
    assert sum(counts.values()) == 640 and 0.6 < counts["train"] / 640 < 0.8
    assert "content split" in caplog.text and "near-duplicate groups" in caplog.text


@real
def test_averaged_session_has_one_trial_per_image_and_near_duplicates_share_a_tier():
    rec = _read("210305")
    assert rec.n_trials == rec.n_images == 400 and rec.n_neurons == 70
    assert "repeat-averaged" in rec.source
    tiers = _tier_of(rec)
    # images 101..150 come back 50 and 100 images later, slightly changed
    for i in range(100, 150):
        assert tiers[i] == tiers[i + 50] == tiers[i + 100], i
    # the groups do not swamp the split: about the given fractions
    assert 0.6 < (tiers == "train").mean() < 0.8


@real
def test_exact_duplicates_share_a_tier_and_sessions_agree():
    tiers_925 = _tier_of(_read("190925"))
    np.testing.assert_array_equal(tiers_925[900:1200], tiers_925[:300])
    assert len(set(tiers_925[:300])) == 3
    tiers_322 = _tier_of(_read("210322"))
    tiers_325 = _tier_of(_read("210325"))
    np.testing.assert_array_equal(tiers_322[600:1200], tiers_325[:600])
    # another seed gives another split of the same images
    assert (_tier_of(_read("210322", seed=1)) != tiers_322).mean() > 0.2


@real
def test_zip_order_and_subfolder_do_not_matter(tmp_path):
    src = DATA / "images" / "images_210305.zip"
    moved = tmp_path / "images_210305.zip"
    with zipfile.ZipFile(src) as zf, zipfile.ZipFile(moved, "w") as out:
        names = zf.namelist()
        for name in reversed(names):
            out.writestr(f"images_210305/{name}", zf.read(name))
    resp = DATA / "responses_repeat_averaged" / "responses_210305.npy"
    a = read_cowley2023(src, resp, session="210305", pixels_per_degree=20.0)
    b = read_cowley2023(moved, resp, session="210305", pixels_per_degree=20.0)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.trial_tier, b.trial_tier)


@real
def test_downsample_and_save_roundtrip(tmp_path):
    rec = _read("210325", raw=True, downsample=2, pixels_per_degree=30.0)
    assert rec.images.shape[2:] == (56, 56) and rec.pixels_per_degree == 15.0
    back = NeuralRecording.load(rec.save(tmp_path / "s.h5"))
    np.testing.assert_array_equal(back.responses, rec.responses)
    assert back.source == rec.source


# ----------------------------------------------------------------- small files
def _jpeg(value: int) -> bytes:
    rng = np.random.default_rng(value)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _session(tmp_path, n=6, members=None, neurons=3, raw_shape=None):
    zpath = tmp_path / "images_x.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for i in members or range(1, n + 1):
            zf.writestr(f"image{i:04d}.jpg", _jpeg(i))
    rng = np.random.default_rng(0)
    raw = rng.poisson(2.0, size=raw_shape or (neurons, n, 4)).astype(float)
    raw[:, 0, 3] = np.nan
    rpath, apath = tmp_path / "raw.npy", tmp_path / "avg.npy"
    np.save(rpath, raw)
    np.save(apath, np.nanmean(raw, axis=2))
    return zpath, apath, rpath, raw


def test_small_session_trials_and_dropped_neurons(tmp_path):
    zpath, apath, rpath, raw = _session(tmp_path)
    raw[1] = np.nan
    np.save(rpath, raw)
    with pytest.warns(DroppedNeuronsWarning, match="dropping 1 of 3 neurons"):
        rec = read_cowley2023(zpath, None, rpath, session="x", pixels_per_degree=10.0)
    assert rec.n_neurons == 2 and rec.n_trials == 6 * 4 - 1
    assert rec.neurons["ids"].tolist() == ["x/0", "x/2"]


@pytest.mark.parametrize(
    "case, match",
    [
        ("count", r"images_x\.zip: field 'image members': expected 6 JPEG images .* found 5"),
        ("missing", r"images_x\.zip: field 'image0006\.jpg'"),
        ("truncated", r"images_x\.zip: not a readable zip file"),
        ("rank", r"avg\.npy: field 'responses': expected rank 2"),
        ("mismatch", r"raw\.npy: field 'raw_responses': expected a NaN-aware mean over repeats equal to avg\.npy"),
        ("corrupt_jpeg", r"images_x\.zip: field 'image0002\.jpg': expected a readable JPEG"),
    ],
)
def test_bad_input_names_file_and_field(tmp_path, case, match):
    zpath, apath, rpath, raw = _session(tmp_path)
    if case == "count":
        _session(tmp_path, members=range(1, 6))
        np.save(apath, np.nanmean(raw, axis=2))
    elif case == "missing":
        zpath, *_ = _session(tmp_path, members=[1, 2, 3, 4, 5, 7])
        np.save(apath, np.nanmean(raw, axis=2))
    elif case == "truncated":
        data = zpath.read_bytes()
        zpath.write_bytes(data[: len(data) // 2])
    elif case == "rank":
        np.save(apath, raw)
    elif case == "mismatch":
        avg = np.nanmean(raw, axis=2)
        avg[0, 0] += 1.0
        np.save(apath, avg)
    elif case == "corrupt_jpeg":
        with zipfile.ZipFile(zpath, "w") as zf:
            for i in range(1, 7):
                zf.writestr(f"image{i:04d}.jpg", b"not a jpeg" if i == 2 else _jpeg(i))
    out = tmp_path / "out.h5"
    with pytest.raises(ReaderError, match=match):
        rec = read_cowley2023(zpath, apath, rpath if case == "mismatch" else None, session="x", pixels_per_degree=10.0)
        rec.save(out)
    assert not out.exists()


def test_options_are_checked(tmp_path):
    zpath, apath, _, _ = _session(tmp_path)
    with pytest.raises(ValueError, match="pixels_per_degree"):
        read_cowley2023(zpath, apath, session="x", pixels_per_degree=float("nan"))
    with pytest.raises(ValueError, match="neither"):
        read_cowley2023(zpath, session="x", pixels_per_degree=10.0)
    with pytest.raises(TypeError, match="pixels_per_degree"):
        read_cowley2023(zpath, apath, session="x")


def test_content_split_depends_on_pixels_only():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (300, 3, 16, 16), dtype=np.uint8)
    tiers, report = content_split(imgs, validation_fraction=0.1, test_fraction=0.2, seed=0, near_duplicate_threshold=0.9)
    perm = rng.permutation(300)
    tiers_perm, _ = content_split(imgs[perm], validation_fraction=0.1, test_fraction=0.2, seed=0, near_duplicate_threshold=0.9)
    np.testing.assert_array_equal(tiers_perm, tiers[perm])
    assert report["exact"] == [] and report["near"] == []
    assert 40 < report["counts"]["test"] < 80
    # a slightly changed copy joins its original's tier
    copy = np.clip(imgs[:1].astype(int) + 3, 0, 255).astype(np.uint8)
    tiers2, report2 = content_split(np.concatenate([imgs, copy]), validation_fraction=0.1, test_fraction=0.2, seed=0,
                                    near_duplicate_threshold=0.9)
    assert report2["near"] == [[0, 300]] and tiers2[300] == tiers2[0]
