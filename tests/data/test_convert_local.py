"""`neuroreg data convert` from local files, as a user types it: each friction point, exit codes, messages."""

import inspect
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neuroreg.cli import main
from neuroreg.data.readers.arrays import read_arrays
from neuroreg.data.readers._common import ReaderError
from neuroreg.data.recording import NeuralRecording, RecordingError, response_unit

META = ["--species", "macaque", "--area", "V4", "--unit", "spikes", "--pixels-per-degree", "30"]


@pytest.fixture
def files(tmp_path, monkeypatch):
    """R.npy [40, 5] one trial per image, I.npy [40, 192] flattened 3x8x8 images; RT/IT a test set with 3 repeats."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 3, 8, 8)).astype(np.uint8)
    np.save("I.npy", images.reshape(40, -1))
    np.save("R.npy", rng.poisson(3.0, (40, 5)).astype(np.float64))
    test_images = rng.integers(0, 256, (6, 3, 8, 8)).astype(np.uint8)
    test = rng.poisson(3.0, (3, 6, 5)).astype(np.float64)
    test[2, :2] = np.nan  # images 0, 1 were shown twice
    np.save("IT.npy", test_images)
    np.save("RT.npy", test)
    return {"images": images, "test_images": test_images, "test": test}


def convert(*args):
    return main(["data", "convert", *args])


def test_flattened_images_need_and_take_a_shape(files, capsys, tmp_path):
    assert convert("--responses", "R.npy", "--images", "I.npy", *META, "--split", "validation=0.2", "--out", "r.h5") == 1
    err = capsys.readouterr().err
    assert "I.npy: field 'images'" in err and "--image-shape C,H,W or H,W" in err and "found shape (40, 192)" in err
    assert "e.g. --image-shape 3,8,8" in err
    assert not list(tmp_path.glob("*.h5"))
    assert convert("--responses", "R.npy", "--images", "I.npy", "--image-shape", "3,8,8", *META, "--split", "validation=0.2",
                   "--out", "r.h5") == 0
    rec = NeuralRecording.load("r.h5")
    np.testing.assert_array_equal(rec.images, files["images"])
    assert convert("--responses", "R.npy", "--images", "I.npy", "--image-shape", "3,9,8", *META, "--out", "x.h5") == 1
    assert "expected 216 values per image" in capsys.readouterr().err
    assert convert("--responses", "R.npy", "--images", "I.npy", "--image-shape", "8x8", *META, "--out", "x.h5") == 1
    assert "--image-shape: expected C,H,W or H,W" in capsys.readouterr().err


def test_no_silent_metadata(files, capsys, tmp_path):
    assert convert("--responses", "R.npy", "--images", "I.npy", "--image-shape", "3,8,8", "--species", "macaque",
                   "--split", "validation=0.2", "--out", "r.h5") == 1
    err = capsys.readouterr().err
    assert "missing --area, --unit, --pixels-per-degree" in err and "--species" not in err.split("missing")[1].split(":")[0]
    assert not (tmp_path / "r.h5").exists()
    params = inspect.signature(read_arrays).parameters
    for name in ("species", "area", "response_unit", "pixels_per_degree"):
        assert params[name].default is inspect.Parameter.empty, name
    assert convert("--responses", "R.npy", "--images", "I.npy", "--image-shape", "3,8,8", *META[:-1], "thirty",
                   "--split", "validation=0.2", "--out", "r.h5") == 1
    assert "--pixels-per-degree: expected a positive number, found 'thirty'" in capsys.readouterr().err


def test_unit_spellings(files, capsys, tmp_path):
    meta = [*META[:4], "--pixels-per-degree", "30"]
    shape = ["--responses", "R.npy", "--images", "I.npy", "--image-shape", "3,8,8", "--split", "validation=0.2"]
    assert convert(*shape, *meta, "--unit", "spikes/sec", "--out", "r.h5") == 1
    err = capsys.readouterr().err
    assert "field '--unit'" in err and "'spikes/sec'" in err
    for spelling in ("'spikes'", "'dF/F'", "'deconvolved'", "'firing_rate'", "'a.u.'", "spike_count -> spikes", "dff -> dF/F"):
        assert spelling in err
    assert not (tmp_path / "r.h5").exists()
    assert convert(*shape, *meta, "--unit", "Spike_Count", "--out", "r.h5") == 0
    rec = NeuralRecording.load("r.h5")
    assert rec.response_unit == "spikes" and "response unit 'Spike_Count' read as 'spikes'" in rec.source
    assert response_unit("HZ") == "firing_rate" and response_unit("dF/F") == "dF/F"
    with pytest.raises(RecordingError, match="found 'volts'"):
        response_unit("volts")


def test_no_silent_split(files, capsys, tmp_path):
    base = ["--responses", "R.npy", "--images", "I.npy", "--image-shape", "3,8,8", *META]
    assert convert(*base, "--out", "r.h5") == 1
    err = capsys.readouterr().err
    assert "R.npy: no tiers for its 40 trials, and no split was asked for" in err
    assert "--split validation=0.1,test=0.2 --split-seed 0" in err and "--tiers FILE.npy" in err and "--test-responses" in err
    assert not (tmp_path / "r.h5").exists()
    assert convert(*base, "--split", "validation=0.1,test=0.2", "--split-seed", "3", "--out", "r.h5") == 0
    out = capsys.readouterr().out
    assert "validation      4 images" in out and "test            8 images" in out and "train          28 images" in out
    assert "split validation=0.1,test=0.2 (seed 3)" in out
    rec = NeuralRecording.load("r.h5")
    assert "split validation=0.1,test=0.2 (seed 3) of the 40 distinct images" in rec.source  # stored in the file
    assert [int((rec.trial_tier == t).sum()) for t in ("train", "validation", "test")] == [28, 4, 8]
    assert convert(*base, "--split", "validation=0.1,test=0.2", "--split-seed", "3", "--out", "same.h5") == 0
    assert convert(*base, "--split", "validation=0.1,test=0.2", "--split-seed", "4", "--out", "other.h5") == 0
    capsys.readouterr()
    assert NeuralRecording.load("same.h5").trial_tier.tolist() == rec.trial_tier.tolist()
    assert NeuralRecording.load("other.h5").trial_tier.tolist() != rec.trial_tier.tolist()
    for bad, message in (("validation=0.6,test=0.5", "summing below 1"), ("train=0.5", "held-out tiers"),
                         ("validation:0.1", "TIER=FRACTION"), ("validation=0.001", "leaves no image in ['validation']")):
        assert convert(*base, "--split", bad, "--out", "bad.h5") == 1
        assert message in capsys.readouterr().err, bad
    assert convert(*base, "--split-seed", "1", "--out", "bad.h5") == 1
    assert "--split-seed: given without --split" in capsys.readouterr().err
    assert not (tmp_path / "bad.h5").exists()


def test_duplicate_images_share_a_tier(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (30, 6, 6)).astype(np.uint8)
    images[15:] = images[:15]  # every image twice
    np.save(tmp_path / "I.npy", images)
    np.save(tmp_path / "R.npy", rng.normal(size=(30, 2)))
    rec = read_arrays(tmp_path / "R.npy", images=tmp_path / "I.npy", split={"test": 0.4}, species="mouse", area="V1",
                      response_unit="dF/F", pixels_per_degree=1.5)
    assert rec.trial_tier[:15].tolist() == rec.trial_tier[15:].tolist() and (rec.trial_tier == "test").sum() == 12


def test_tiers_given_and_split_refused(files, capsys, tmp_path):
    tiers = np.array(["train"] * 30 + ["validation"] * 5 + ["test"] * 5)
    np.save("T.npy", tiers)
    base = ["--responses", "R.npy", "--images", "I.npy", "--image-shape", "3,8,8", *META]
    assert convert(*base, "--tiers", "T.npy", "--split", "validation=0.1", "--out", "r.h5") == 1
    assert "field 'split': every trial already has a tier (tiers given by T.npy)" in capsys.readouterr().err
    assert convert(*base, "--tiers", "T.npy", "--out", "r.h5") == 0
    assert NeuralRecording.load("r.h5").trial_tier.tolist() == tiers.tolist()
    (tmp_path / "bad.txt").write_text("train\ndev\n" * 20)
    assert convert(*base, "--tiers", "bad.txt", "--out", "x.h5") == 1
    assert "bad.txt: field 'tiers': expected tier labels in" in capsys.readouterr().err and not (tmp_path / "x.h5").exists()


def test_separate_test_files(files, capsys, tmp_path):
    base = ["--responses", "R.npy", "--images", "I.npy", "--image-shape", "3,8,8", *META]
    assert convert(*base, "--test-responses", "RT.npy", "--test-images", "IT.npy", "--test-layout", "RNK", "--split", "validation=0.25",
                   "--out", "r.h5") == 0
    out = capsys.readouterr().out
    assert "tier 'test' for all trials of RT.npy+IT.npy" in out
    rec = NeuralRecording.load("r.h5")
    assert rec.n_images == 46 and rec.tiers == ["train", "validation", "test"]
    np.testing.assert_array_equal(rec.images[40:], files["test_images"])
    index, reps = rec.repeats("test")
    np.testing.assert_array_equal(index, np.arange(40, 46))
    np.testing.assert_allclose(reps, files["test"].transpose(1, 0, 2))  # images 0, 1 padded with NaN
    assert (rec.trial_tier[rec.trial_image < 40] != "test").all() and int((rec.trial_tier == "validation").sum()) == 10
    np.save("RT5.npy", files["test"][:, :, :4])  # 4 neurons, not 5
    assert convert(*base, "--test-responses", "RT5.npy", "--test-images", "IT.npy", "--test-layout", "RNK", "--split", "validation=0.25",
                   "--out", "x.h5") == 1
    assert "RT5.npy: field 'responses': expected 5 neurons (as in R.npy+I.npy), found 4" in capsys.readouterr().err
    assert convert(*base, "--test-images", "IT.npy", "--split", "validation=0.25", "--out", "x.h5") == 1
    assert "test_images / test_trial_image need the test responses" in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()


def test_trial_image_index(files, capsys, tmp_path):
    rng = np.random.default_rng(2)
    trial_image = np.repeat(np.arange(40), 2)
    np.save("RT2.npy", rng.poisson(2.0, (80, 5)).astype(np.float32))
    np.save("TI.npy", trial_image)
    base = ["--responses", "RT2.npy", "--images", "I.npy", "--image-shape", "3,8,8", *META, "--split", "validation=0.2"]
    assert convert(*base, "--trial-image", "TI.npy", "--out", "r.h5") == 0
    rec = NeuralRecording.load("r.h5")
    np.testing.assert_array_equal(rec.trial_image, trial_image)
    assert rec.repeats("validation")[1].shape == (8, 2, 5)
    np.save("TI_short.npy", trial_image[:-1])
    assert convert(*base, "--trial-image", "TI_short.npy", "--out", "x.h5") == 1
    assert "TI_short.npy: field 'trial_image': expected 80 entries (rows of responses RT2.npy), found 79" in capsys.readouterr().err
    np.save("TI_far.npy", trial_image + 1)
    assert convert(*base, "--trial-image", "TI_far.npy", "--out", "x.h5") == 1
    assert "TI_far.npy: field 'trial_image': expected indices in [0, 39] (40 images), found range [1, 40]" in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()


def test_standardize_is_recorded(files, capsys):
    base = ["--responses", "R.npy", "--images", "I.npy", "--image-shape", "3,8,8", *META, "--split", "validation=0.2"]
    assert convert(*base, "--standardize", "--out", "z.h5") == 0
    assert "responses standardised per neuron" in capsys.readouterr().out
    rec = NeuralRecording.load("z.h5")
    train = rec.responses[rec.trial_tier == "train"]
    np.testing.assert_allclose(train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(train.std(0), 1, atol=1e-5)
    raw = np.load("R.npy")
    np.testing.assert_allclose(rec.responses * rec.neurons["response_std"] + rec.neurons["response_mean"], raw, atol=1e-5)
    assert "responses standardised per neuron" in rec.source
    flat = np.load("R.npy")
    flat[:, 2] = 4.0
    np.save("R_flat.npy", flat)
    assert convert("--responses", "R_flat.npy", *base[2:], "--standardize", "--out", "x.h5") == 1
    err = capsys.readouterr().err
    assert "R_flat.npy: field 'responses'" in err and "1 constant or unrecorded neurons (ids [2])" in err


def test_npz_with_keys(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(3)
    np.savez("rec.npz", stim=rng.integers(0, 256, (12, 4, 4)).astype(np.uint8), spk=rng.poisson(1.0, (12, 3)),
             tiers=np.array(["train"] * 8 + ["validation"] * 2 + ["test"] * 2))
    assert convert("--arrays", "rec.npz", *META, "--out", "r.h5") == 1
    assert "rec.npz: missing required array 'images'; found ['spk', 'stim', 'tiers']" in capsys.readouterr().err
    assert convert("--arrays", "rec.npz", "--key", "images=stim", "--key", "responses=spk", *META, "--out", "r.h5") == 0
    rec = NeuralRecording.load("r.h5")
    assert rec.n_images == 12 and rec.tiers == ["train", "validation", "test"] and "tiers given by rec.npz" in rec.source
    assert convert("--arrays", "rec.npz", "--key", "stimuli=stim", *META, "--out", "x.h5") == 1
    assert "field 'keys': expected names among" in capsys.readouterr().err


def test_command_line_mistakes(files, capsys, tmp_path):
    assert convert(*META, "--out", "x.h5") == 1
    err = capsys.readouterr().err
    assert "expected a data set NAME, or local files: --arrays FILE.npz, or --responses R.npy --images I.npy" in err
    assert "neuroreg data convert --responses R.npy" in err  # an example to copy
    assert convert("--responses", "R.npy", *META, "--out", "x.h5") == 1
    assert "R.npy: a .npy holds the responses only: pass its images" in capsys.readouterr().err
    assert convert("--responses", "nope.npy", "--images", "I.npy", *META, "--out", "x.h5") == 1
    assert "array file not found: nope.npy" in capsys.readouterr().err
    assert convert("toyset", "--responses", "R.npy", "--out", "x.h5") == 1
    assert "--responses: options for local files, not for a manifest's data set ('toyset')" in capsys.readouterr().err
    assert convert("--responses", "R.npy", "--images", "I.npy", *META, "--option", "a=1", "--out", "x.h5") == 1
    assert "--option, --trust-pickle and --fetch are for a manifest's data set" in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()


def test_read_arrays_api_refuses_without_split(tmp_path):
    np.save(tmp_path / "R.npy", np.ones((4, 2)))
    np.save(tmp_path / "I.npy", np.zeros((4, 5, 5), np.uint8))
    with pytest.raises(ReaderError, match=r"no tiers for its 4 trials.*split=\{'validation': 0.1, 'test': 0.2\}"):
        read_arrays(tmp_path / "R.npy", images=tmp_path / "I.npy", species="mouse", area="V1", response_unit="spikes",
                    pixels_per_degree=1.0)


def _shared_data():
    base = os.environ.get("NEUROREG_TEST_DATA") or str(Path(__file__).resolve().parents[2] / ".." / "shared" / "data")
    folder = Path(base) / "cowley2023_v4" / "data_V4_responses"
    if not (folder / "responses_raw" / "responses_210325.npy").is_file():
        pytest.skip(f"no Cowley 2023 V4 files under {base} (set NEUROREG_TEST_DATA)")
    return folder


def test_real_v4_session_neurons_first(tmp_path, monkeypatch, capsys):
    """A real recording as its authors publish it: [neurons, images, repeats] spike counts, NaN-padded."""
    folder = _shared_data()
    monkeypatch.chdir(tmp_path)
    with zipfile.ZipFile(folder / "images" / "images_210325.zip") as z:
        names = {n.rsplit("/", 1)[-1]: n for n in z.namelist()}
        images = np.stack([np.asarray(Image.open(io.BytesIO(z.read(names[f"image{i:04d}.jpg"]))).convert("RGB"))
                           for i in range(1, 641)])
    np.save("I.npy", images)  # [640, 112, 112, 3]
    base = ["--responses", str(folder / "responses_raw" / "responses_210325.npy"), "--images", "I.npy",
            "--species", "macaque", "--area", "V4", "--unit", "spike_count", "--pixels-per-degree", "25",
            "--split", "validation=0.1,test=0.2", "--out", "v4.h5"]
    assert convert(*base) == 1
    err = capsys.readouterr().err
    assert "it could be RNK = 50 repeats x 640 images x 10 neurons; KNR = 50 neurons x 640 images x 10 repeats" in err
    assert "--layout RNK|KNR" in err and not Path("v4.h5").exists()
    assert convert(*base, "--layout", "KNR") == 0
    assert "layout KNR (given): 10 repeats x 640 images x 50 neurons" in capsys.readouterr().out
    rec = NeuralRecording.load("v4.h5")
    raw = np.load(folder / "responses_raw" / "responses_210325.npy")
    assert rec.n_neurons == 50 and rec.n_trials == int((~np.isnan(raw).all(axis=0)).sum())
    assert rec.images.shape == (640, 3, 112, 112) and rec.response_unit == "spikes"
    index, mean = rec.mean_per_image()
    averaged = np.load(folder / "responses_repeat_averaged" / "responses_210325.npy")  # [neurons, images]
    np.testing.assert_allclose(mean, averaged[:, index].T, rtol=1e-5, atol=1e-5)
