"""Sensorium 2022 / neuralpredictors file tree (zip with folder prefix, folder) and static HDF5."""


import h5py
import numpy as np
import pytest

from neuroreg.data.readers._common import ReaderError, WithheldResponsesWarning
from neuroreg.data.readers.sensorium import read_sensorium, read_static_hdf5
from neuroreg.data.recording import NeuralRecording

from _sensorium import K, PREFIX, tree, write_folder, write_zip

def check(rec, responses, frame_id, tiers, base):
    assert isinstance(rec, NeuralRecording)
    assert rec.species == "mouse" and rec.response_unit == "deconvolved"
    assert list(rec.image_ids) == sorted(set(frame_id.tolist()))
    assert rec.images.shape == (len(base), 1, 8, 16) and rec.images.dtype == np.uint8
    for j, img_id in enumerate(rec.image_ids):
        np.testing.assert_array_equal(rec.images[j, 0], base[img_id][0])
    np.testing.assert_array_equal(rec.image_ids[rec.trial_image], frame_id)
    np.testing.assert_allclose(rec.responses, responses)
    assert list(rec.trial_tier) == list(tiers)
    np.testing.assert_array_equal(rec.neurons["ids"], np.arange(1, K + 1))
    assert rec.neurons["cell_motor_coordinates"].shape == (K, 3)
    assert list(rec.neurons["area"]) == ["V1"] * K
    _, reps = rec.repeats("test")
    assert reps.shape == (2, 1, K)


def test_zip_with_prefix(tmp_path):
    files, responses, frame_id, tiers, base = tree()
    rec = read_sensorium(write_zip(tmp_path / f"{PREFIX}.zip", files))
    check(rec, responses, frame_id, tiers, base)
    _, reps = rec.repeats()
    assert reps.shape[1] == 2  # images 90 and 91 shown twice


def test_folder_and_roundtrip(tmp_path):
    files, responses, frame_id, tiers, base = tree()
    root = write_folder(tmp_path, files)
    for p in (root, root / PREFIX):
        check(read_sensorium(p), responses, frame_id, tiers, base)
    out = read_sensorium(root).save(tmp_path / "out.h5")
    check(NeuralRecording.load(out), responses, frame_id, tiers, base)


def test_float_images_and_downsample(tmp_path):
    files, *_ = tree(image_dtype=np.float32)
    rec = read_sensorium(write_zip(tmp_path / "a.zip", files), downsample=4, pixels_per_degree=2.0)
    assert rec.images.shape[2:] == (2, 4) and rec.images.dtype == np.uint8
    assert rec.pixels_per_degree == 0.5


def test_zero_test_responses_are_withheld(tmp_path):
    files, responses, *_ = tree(zero_test=True)
    with pytest.warns(WithheldResponsesWarning, match="4 trials"):
        rec = read_sensorium(write_zip(tmp_path / "a.zip", files))
    held = np.isin(rec.trial_tier, ["test", "final_test"])
    assert np.isnan(rec.responses[held]).all()
    np.testing.assert_allclose(rec.responses[~held], responses[~held])
    _, mean = rec.mean_per_image("test")
    assert np.isnan(mean).all()


def test_truncated_zip(tmp_path):
    files, *_ = tree()
    p = write_zip(tmp_path / "a.zip", files)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ReaderError, match="a.zip: not a readable zip"):
        read_sensorium(p)


def test_missing_required_array(tmp_path):
    files, *_ = tree()
    del files["meta/trials/tiers.npy"]
    with pytest.raises(ReaderError, match="tiers.npy"):
        read_sensorium(write_zip(tmp_path / "a.zip", files))
    files, *_ = tree()
    files = {k: v for k, v in files.items() if not k.startswith("data/responses")}
    with pytest.raises(ReaderError, match="missing required array 'data/responses"):
        read_sensorium(write_folder(tmp_path / "f", files))


def test_unknown_tiers(tmp_path):
    files, *_ = tree(tiers=np.array(["train"] * 10 + ["holdout"] * 2))
    with pytest.raises(ReaderError, match=r"tiers.npy'.*unknown labels \['holdout'\]"):
        read_sensorium(write_zip(tmp_path / "a.zip", files))


def test_images_and_responses_of_different_lengths(tmp_path):
    files, *_ = tree()
    del files["data/images/11.npy"]
    with pytest.raises(ReaderError, match="11 image files and 12 response files"):
        read_sensorium(write_zip(tmp_path / "a.zip", files))


def test_neuron_metadata_length(tmp_path):
    files, *_ = tree()
    files["meta/neurons/unit_ids.npy"] = np.arange(K + 1)
    with pytest.raises(ReaderError, match="meta/neurons/ids"):
        read_sensorium(write_zip(tmp_path / "a.zip", files))


def write_static(path, files, responses, frame_id, tiers):
    n = len(responses)
    with h5py.File(path, "w") as f:
        f["images"] = np.stack([files[f"data/images/{i}.npy"] for i in range(n)])
        f["responses"] = responses
        f["behavior"] = np.zeros((n, 3))
        f["pupil_center"] = np.zeros((n, 2))
        f["tiers"] = np.asarray(tiers).astype("S")  # byte strings
        f["item_info/frame_image_id"] = frame_id
        f["neurons/unit_ids"] = np.arange(1, K + 1)
        f["neurons/area"] = np.array([b"V1"] * K)
        f["neurons/cell_motor_coordinates"] = files["meta/neurons/cell_motor_coordinates.npy"]
        f["statistics/responses/all/mean"] = responses.mean(0)
    return path


def test_static_hdf5(tmp_path):
    files, responses, frame_id, tiers, base = tree()
    rec = read_static_hdf5(write_static(tmp_path / "s.h5", files, responses, frame_id, tiers))
    check(rec, responses, frame_id, tiers, base)


def test_static_hdf5_bad(tmp_path):
    files, responses, frame_id, tiers, _ = tree()
    p = write_static(tmp_path / "s.h5", files, responses, frame_id, tiers)
    with h5py.File(p, "a") as f:
        del f["tiers"]
    with pytest.raises(ReaderError, match="missing required array '/tiers'"):
        read_static_hdf5(p)
    p = write_static(tmp_path / "t.h5", files, responses, frame_id, tiers)
    with h5py.File(p, "a") as f:
        del f["responses"]
        f["responses"] = responses[:-1]
    with pytest.raises(ReaderError, match="field 'images': expected 11 images"):
        read_static_hdf5(p)
