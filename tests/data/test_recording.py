import os

import h5py
import numpy as np
import pytest

from neuroreg.data.recording import NeuralRecording, RecordingError
from conftest import make_recording


def test_roundtrip_preserves_every_field(tmp_path, recording):
    rec = make_recording(image_ids=np.array(["a", "b", "c", "d", "e", "f"]))
    rec.responses[2, 1] = np.nan
    path = rec.save(tmp_path / "rec.h5")
    back = NeuralRecording.load(path)
    np.testing.assert_array_equal(back.images, rec.images)
    assert back.images.dtype == np.uint8
    assert back.image_ids.tolist() == ["a", "b", "c", "d", "e", "f"]
    np.testing.assert_array_equal(back.responses, rec.responses)  # NaN compared equal positionally
    assert np.isnan(back.responses[2, 1])
    np.testing.assert_array_equal(back.trial_image, rec.trial_image)
    assert back.trial_tier.tolist() == rec.trial_tier.tolist()
    assert back.neurons["area"].tolist() == ["V1"] * 4
    assert (back.species, back.area, back.response_unit, back.pixels_per_degree) == ("mouse", "V1", "spikes", 0.5)
    assert back.name == str(path)


def test_repeats_tensor_groups_trials_and_pads_with_nan(recording):
    idx, reps = recording.repeats()
    assert idx.tolist() == [0, 1, 2, 3, 4, 5]
    assert reps.shape == (6, 3, 4)
    # image 2 was shown 3 times: trials 3, 4, 5 in order
    np.testing.assert_array_equal(reps[2], recording.responses[3:6])
    # image 0 shown once: slots 1, 2 are NaN padding
    np.testing.assert_array_equal(reps[0, 0], recording.responses[0])
    assert np.isnan(reps[0, 1:]).all()


def test_mean_per_image_ignores_nan_trials(recording):
    recording.responses[4, 0] = np.nan  # image 2, second repeat, neuron 0
    idx, mean = recording.mean_per_image()
    assert mean[2, 0] == pytest.approx(np.mean(recording.responses[[3, 5], 0]))
    assert mean[2, 1] == pytest.approx(np.mean(recording.responses[3:6, 1]))
    test_idx, test_mean = recording.mean_per_image("test")
    assert test_idx.tolist() == [4, 5]
    np.testing.assert_allclose(test_mean[0], recording.responses[7:9].mean(0))


def test_mean_is_nan_where_neuron_never_recorded():
    rec = make_recording(repeats=(1, 1, 1, 1, 1, 1))
    rec.responses[0, 3] = np.nan
    _, mean = rec.mean_per_image()
    assert np.isnan(mean[0, 3]) and not np.isnan(mean[1, 3])


@pytest.mark.parametrize(
    "override, field",
    [
        ({"trial_image": np.array([0, 1, 2])}, "trial_image"),
        ({"trial_tier": np.array(["train"] * 9 + ["holdout"] + [])}, "trial_tier"),
        ({"responses": np.zeros((10, 4, 2), np.float32)}, "responses"),
        ({"images": np.full((6, 1, 8, 8), np.nan, np.float32)}, "images"),
        ({"images": np.zeros((6, 8, 8), np.uint8)}, "images"),
        ({"image_ids": np.arange(5)}, "image_ids"),
        ({"neurons": {"area": np.array(["V1"] * 4)}}, "neurons"),
        ({"neurons": {"ids": np.arange(3)}}, "neurons/ids"),
        ({"response_unit": "volts"}, "response_unit"),
        ({"trial_image": np.array([0, 1, 1, 2, 2, 2, 3, 4, 4, 9])}, "trial_image"),
    ],
)
def test_bad_fields_raise_naming_the_field(override, field):
    with pytest.raises(RecordingError, match=f"field '{field}'"):
        make_recording(**override)


def test_unknown_tier_message_lists_expected_and_found():
    tiers = np.array(["train"] * 9 + ["holdout"])
    with pytest.raises(RecordingError, match=r"unknown tiers \['holdout'\]"):
        make_recording(trial_tier=tiers)


def test_load_rejects_missing_dataset_with_file_name(tmp_path, recording):
    path = recording.save(tmp_path / "rec.h5")
    with h5py.File(path, "a") as f:
        del f["trial_image"]
    with pytest.raises(RecordingError, match=r"rec\.h5: missing dataset '/trial_image'"):
        NeuralRecording.load(path)


def test_load_validates_content(tmp_path, recording):
    path = recording.save(tmp_path / "rec.h5")
    with h5py.File(path, "a") as f:
        del f["trial_tier"]
        f.create_dataset("trial_tier", data=["train"] * 9 + ["bogus"], dtype=h5py.string_dtype())
    with pytest.raises(RecordingError, match=r"rec\.h5: field 'trial_tier'.*bogus"):
        NeuralRecording.load(path)


def test_load_missing_file_and_non_hdf5(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        NeuralRecording.load(tmp_path / "nope.h5")
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    with pytest.raises(RecordingError, match="bad.h5: not a readable HDF5"):
        NeuralRecording.load(bad)


def test_failed_save_leaves_nothing(tmp_path, recording, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(h5py.Group, "create_group", fail)
    with pytest.raises(OSError, match="disk full"):
        recording.save(tmp_path / "rec.h5")
    assert os.listdir(tmp_path) == []
