"""Cadena 2019 pickle and sinzlab monkey session pickles: layout, NaN padding, pickle trust."""

import hashlib
import pickle
import zipfile

import numpy as np
import pytest

from neuroreg.data.readers._common import ReaderError
from neuroreg.data.readers.cadena import read_cadena
from neuroreg.data.readers.monkey import read_monkey_session

N_IMG, K = 20, 6


def cadena_dict(seed=0):
    rng = np.random.default_rng(seed)
    resp = rng.poisson(3.0, (4, N_IMG, K)).astype(np.float64)
    reps = np.array([4, 4, 2, 4, 2, 4])
    resp[2:, :, reps == 2] = np.nan  # 2-repeat neurons: NaN in slots 2-3
    resp[:, :5, 5] = np.nan  # neuron 5 never saw images 0..4
    resp[3, 7, :] = np.nan  # (repeat 3, image 7) not recorded at all -> no trial
    return {
        "images": rng.integers(0, 256, (N_IMG, 12, 12)).astype(np.float64),
        "responses": resp,
        "repetitions": reps,
        "image_ids": np.arange(1, N_IMG + 1),
        "image_types": np.array(["original", "conv1", "conv2", "conv3", "conv4"] * 4),
        "image_numbers": np.repeat(np.arange(4), 5),
        "subject_id": np.array([1, 1, 2, 2, 2, 1]),
    }


def write_pickle(path, obj):
    path.write_bytes(pickle.dumps(obj))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_cadena_fields(tmp_path):
    d = cadena_dict()
    p, sha = write_pickle(tmp_path / "cadena_ploscb_data.pkl", d)
    rec = read_cadena(p, sha256=sha, n_test=5, validation_fraction=0.25)
    assert rec.species == "macaque" and rec.area == "V1" and rec.response_unit == "spikes"
    assert rec.images.shape == (N_IMG, 1, 12, 12) and rec.images.dtype == np.uint8
    np.testing.assert_array_equal(rec.images[:, 0], d["images"].astype(np.uint8))
    np.testing.assert_array_equal(rec.image_ids, d["image_ids"])
    # 4 repeats x 20 images minus the one fully missing (repeat 3, image 7)
    assert rec.n_trials == 79
    _, reps = rec.repeats()
    assert reps.shape == (N_IMG, 4, K)
    np.testing.assert_allclose(reps[0], d["responses"][:, 0, :])  # image 0: NaN pattern preserved
    assert np.isnan(reps[:, 2:, 2]).all() and np.isnan(reps[:5, :, 5]).all()
    # split: last 5 images test; validation = whole groups of five
    tier_of_image = {int(i): t for i, t in zip(rec.trial_image, rec.trial_tier)}
    assert all(tier_of_image[i] == "test" for i in range(15, 20))
    groups = {i // 5: tier_of_image[i] for i in range(15)}
    assert all(tier_of_image[i] == groups[i // 5] for i in range(15))
    assert sorted(groups.values()).count("validation") == 1
    np.testing.assert_array_equal(rec.neurons["repetitions"], d["repetitions"])


def test_cadena_crop_downsample_and_zip(tmp_path):
    d = cadena_dict()
    raw = pickle.dumps(d)
    zp = tmp_path / "cadena.zip"
    with zipfile.ZipFile(zp, "w") as zf:
        zf.writestr("Cadena_PlosCB19_data/data_binned_responses/cadena_ploscb_data.pkl", raw)
    sha = hashlib.sha256(zp.read_bytes()).hexdigest()
    rec = read_cadena(zp, sha256=sha, n_test=5, crop=2, downsample=2, pixels_per_degree=10)
    assert rec.images.shape == (N_IMG, 1, 4, 4) and rec.pixels_per_degree == 5
    with pytest.raises(ReaderError, match="refusing to unpickle: sha256 expected"):
        read_cadena(zp, sha256="0" * 64)


def test_cadena_pickle_trust(tmp_path):
    p, sha = write_pickle(tmp_path / "c.pkl", cadena_dict())
    with pytest.raises(ReaderError, match="without a confirmed sha256.*--trust-pickle"):
        read_cadena(p, n_test=5)
    with pytest.raises(ReaderError, match=f"expected {'1' * 64}, found {sha}"):
        read_cadena(p, sha256="1" * 64, n_test=5)
    assert read_cadena(p, trust_pickle=True, n_test=5).n_images == N_IMG


def test_cadena_bad_input(tmp_path):
    d = cadena_dict()
    del d["responses"]
    p, sha = write_pickle(tmp_path / "c.pkl", d)
    with pytest.raises(ReaderError, match="missing required array 'responses'"):
        read_cadena(p, sha256=sha)
    d = cadena_dict()
    d["images"] = d["images"][:-1]
    p, sha = write_pickle(tmp_path / "d.pkl", d)
    with pytest.raises(ReaderError, match="d.pkl: field 'images': expected 20 images"):
        read_cadena(p, sha256=sha, n_test=5)


def monkey_session(tmp_path, time_binned=False, seed=0):
    rng = np.random.default_rng(seed)
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    for i in range(1, 11):
        np.save(img_dir / f"{i:06d}.npy", rng.integers(0, 256, (10, 10)).astype(np.uint8))
    train_ids = np.array([1, 2, 3, 4, 5, 6, 7, 8])
    test_ids = np.array([9, 10, 9, 10, 9])
    if time_binned:
        tr = rng.poisson(1.0, (K, 3, len(train_ids))).astype(float)
        te = rng.poisson(1.0, (K, 3, len(test_ids))).astype(float)
    else:
        tr = rng.poisson(1.0, (len(train_ids), K)).astype(float)
        te = rng.poisson(1.0, (len(test_ids), K)).astype(float)
    d = {
        "subject_id": 7,
        "session_id": 3653663964522,
        "training_responses": tr,
        "testing_responses": te,
        "training_image_ids": train_ids,
        "testing_image_ids": test_ids,
    }
    p, sha = write_pickle(tmp_path / "session.pkl", d)
    return p, sha, img_dir, d


def test_monkey_session(tmp_path):
    p, sha, img_dir, d = monkey_session(tmp_path)
    rec = read_monkey_session(p, image_dir=img_dir, sha256=sha, validation_fraction=0.25)
    assert rec.n_images == 10 and rec.n_trials == 13
    np.testing.assert_array_equal(rec.image_ids, np.arange(1, 11))
    np.testing.assert_allclose(rec.responses[:8], d["training_responses"])
    np.testing.assert_allclose(rec.responses[8:], d["testing_responses"])
    assert list(rec.trial_tier[8:]) == ["test"] * 5
    assert (rec.trial_tier[:8] == "validation").sum() == 2
    np.testing.assert_array_equal(rec.images[rec.trial_image[0], 0], np.load(img_dir / "000001.npy"))
    _, reps = rec.repeats("test")
    assert reps.shape == (2, 3, K) and np.isnan(reps[1, 2]).all()
    assert rec.source == "monkey-session:3653663964522"


def test_monkey_time_bins_and_errors(tmp_path):
    p, sha, img_dir, d = monkey_session(tmp_path, time_binned=True)
    rec = read_monkey_session(p, image_dir=img_dir, sha256=sha, time_bins=[0, 1])
    np.testing.assert_allclose(rec.responses[:8], d["training_responses"][:, :2].sum(1).T)
    with pytest.raises(ReaderError, match="refusing to unpickle"):
        read_monkey_session(p, image_dir=img_dir)
    (img_dir / "000010.npy").unlink()
    with pytest.raises(ReaderError, match="1 missing"):
        read_monkey_session(p, image_dir=img_dir, trust_pickle=True)


def test_the_sha256_a_refusal_shows_verifies_the_download(tmp_path):
    """The hint names the hash of the file the manifest checks (the zip, not the pickle inside):
    copied into the manifest, it confirms the genuine download, which converts and is not moved aside."""
    import re

    import yaml

    from neuroreg.data.commands import convert
    from neuroreg.data.manifests import default_manifest_dir, parse_manifest

    raw = yaml.safe_load((default_manifest_dir() / "cadena2019.yaml").read_text())
    zp = tmp_path / "data" / raw["name"] / raw["files"][0]["name"]
    zp.parent.mkdir(parents=True)
    with zipfile.ZipFile(zp, "w") as zf:
        zf.writestr("Cadena_PlosCB19_data/data_binned_responses/cadena_ploscb_data.pkl", pickle.dumps(cadena_dict()))
    options = {"n_test": 5, "crop": 0, "downsample": 1}
    with pytest.warns(UserWarning), pytest.raises(ReaderError, match="without a confirmed sha256") as refusal:
        convert(parse_manifest(raw), tmp_path / "out.h5", tmp_path / "data", options=options)
    (seen,) = re.findall(r"sha256 seen: ([0-9a-f]{64})", str(refusal.value))
    assert seen == hashlib.sha256(zp.read_bytes()).hexdigest()
    raw["files"][0].update(sha256=seen, sha256_status="confirmed")
    rec = convert(parse_manifest(raw), tmp_path / "out.h5", tmp_path / "data", options=options)
    assert rec.n_images == N_IMG and zp.is_file() and (tmp_path / "out.h5").is_file()
