"""Allen Brain Observatory NWB 1 natural scenes (h5py-built file) and plain arrays."""

import h5py
import numpy as np
import pytest
from scipy.io import savemat

from neuroreg.data.readers._common import ReaderError
from neuroreg.data.readers.allen import read_allen_natural_scenes
from neuroreg.data.readers.arrays import read_arrays

P = "/processing/brain_observatory_pipeline"


def allen_file(path, suffix="_stimulus", n_cells=4, n_frames=400, with_ns=True, seed=0):
    rng = np.random.default_rng(seed)
    stim = np.array([0, 1, -1, 2, 0, 1, 2, -1, 0, 1, 2, 3, 3, 3, 0, 1, 2, 3, 0, 1])
    starts = 10 + 15 * np.arange(len(stim))
    frames = np.stack([starts, starts + 7], 1)
    dff = rng.normal(0, 0.5, (n_cells, n_frames)).astype(np.float32)  # negative values allowed
    with h5py.File(path, "w") as f:
        f[f"{P}/DfOverF/imaging_plane_1/data"] = dff
        f[f"{P}/DfOverF/imaging_plane_1/timestamps"] = np.arange(n_frames) / 30.0
        f[f"{P}/ImageSegmentation/cell_specimen_ids"] = np.arange(500, 500 + n_cells)
        if with_ns:
            f[f"/stimulus/presentation/natural_scenes{suffix}/data"] = stim.astype(np.float32)
            f[f"/stimulus/presentation/natural_scenes{suffix}/frame_duration"] = frames
        f["/stimulus/presentation/spontaneous_stimulus/data"] = np.zeros(3)
        f["/general/targeted_structure"] = np.bytes_(b"VISl")
        f["/general/session_type"] = np.bytes_(b"three_session_B" if with_ns else b"three_session_A")
        f["/stimulus/templates/natural_scenes_image_stack/data"] = rng.integers(0, 256, (4, 6, 8)).astype(np.uint8)
    return path, stim, starts, dff


@pytest.mark.parametrize("suffix", ["_stimulus", ""])
def test_allen_trials(tmp_path, suffix):
    p, stim, starts, dff = allen_file(tmp_path / "exp.nwb", suffix)
    rec = read_allen_natural_scenes(p, window=8, offset=2, validation_fraction=0.25, test_fraction=0.25)
    keep = stim >= 0
    assert rec.n_trials == keep.sum() and rec.n_images == 4 and rec.n_neurons == 4
    expected = np.stack([dff[:, s + 2 : s + 10].mean(1) for s in starts[keep]])
    np.testing.assert_allclose(rec.responses, expected, rtol=1e-5)
    np.testing.assert_array_equal(rec.trial_image, stim[keep])
    np.testing.assert_array_equal(rec.neurons["ids"], np.arange(500, 504))
    assert rec.response_unit == "dF/F" and (rec.responses < 0).any() and rec.area == "VISl"
    for i in range(4):  # whole images per tier
        assert len(set(rec.trial_tier[rec.trial_image == i])) == 1
    assert set(rec.trial_tier) == {"train", "validation", "test"}


def test_allen_without_natural_scenes(tmp_path):
    p, *_ = allen_file(tmp_path / "gratings.nwb", with_ns=False)
    with pytest.raises(ReaderError, match=r"gratings.nwb: field '/stimulus/presentation/natural_scenes_stimulus'.*three_session_A.*spontaneous_stimulus"):
        read_allen_natural_scenes(p)


def test_allen_window_past_end(tmp_path):
    p, *_ = allen_file(tmp_path / "short.nwb", n_frames=300)
    with pytest.raises(ReaderError, match="frames for the last window"):
        read_allen_natural_scenes(p)


def test_allen_cell_ids_mismatch(tmp_path):
    p, *_ = allen_file(tmp_path / "e.nwb")
    with h5py.File(p, "a") as f:
        del f[f"{P}/ImageSegmentation/cell_specimen_ids"]
        f[f"{P}/ImageSegmentation/imaging_plane_1/cell_specimen_ids"] = np.arange(3)
    with pytest.raises(ReaderError, match="cell_specimen_ids"):
        read_allen_natural_scenes(p)


# ---------------------------------------------------------------- plain arrays
META = {"species": "mouse", "area": "V1", "response_unit": "dF/F", "pixels_per_degree": 2.0}


def _images(n=5, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 6, 6)).astype(np.uint8)


def test_arrays_nk_npz(tmp_path):
    ims, resp = _images(), np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
    np.savez(tmp_path / "a.npz", images=ims, responses=resp, tiers=np.array(["train"] * 3 + ["test"] * 2))
    rec = read_arrays(tmp_path / "a.npz", **META)
    assert rec.n_trials == 5 and list(rec.trial_tier) == ["train"] * 3 + ["test"] * 2
    np.testing.assert_array_equal(rec.images[:, 0], ims)
    np.testing.assert_allclose(rec.responses, resp)


@pytest.mark.parametrize("layout", ["RNK", "NRK"])
def test_arrays_repeats_with_nan_padding(tmp_path, layout):
    rng = np.random.default_rng(2)
    reps = rng.normal(size=(3, 5, 4)).astype(np.float32)  # R, N, K
    reps[2, :2] = np.nan  # images 0, 1 have only 2 repeats
    data = reps if layout == "RNK" else reps.transpose(1, 0, 2)
    np.save(tmp_path / "r.npy", data)
    np.save(tmp_path / "i.npy", _images())
    with pytest.raises(ReaderError, match=r"it could be RNK = 3 repeats x 5 images x 4 neurons; KNR = 3 neurons x 5 images x 4 repeats"
                       if layout == "RNK" else "it could be NRK = 5 images x 3 repeats x 4 neurons; NKR = 5 images x 3 neurons x 4 repeats"):
        read_arrays(tmp_path / "r.npy", images=tmp_path / "i.npy", split={"validation": 0.2}, **META)  # ambiguous
    rec = read_arrays(tmp_path / "r.npy", images=tmp_path / "i.npy", layout=layout, split={"validation": 0.2}, **META)
    assert rec.n_trials == 13
    _idx, r = rec.repeats()
    np.testing.assert_allclose(r, reps.transpose(1, 0, 2))


def test_arrays_trial_level_mat(tmp_path):
    ims = np.random.default_rng(3).integers(0, 256, (4, 5, 5, 3)).astype(np.uint8)  # N, H, W, C
    savemat(tmp_path / "m.mat", {"stim": ims, "spk": np.ones((6, 2)), "tix": np.array([0, 0, 1, 2, 3, 3])})
    rec = read_arrays(tmp_path / "m.mat", keys={"images": "stim", "responses": "spk", "trial_image": "tix"},
                      split={"test": 0.25}, split_seed=1, **META)
    assert rec.images.shape == (4, 3, 5, 5) and rec.n_trials == 6
    np.testing.assert_array_equal(rec.trial_image, [0, 0, 1, 2, 3, 3])


def test_arrays_bad_input(tmp_path):
    np.savez(tmp_path / "a.npz", images=_images(), responses=np.zeros((4, 3)))
    with pytest.raises(ReaderError, match=r"a.npz: field 'responses': expected \[5, K\]"):
        read_arrays(tmp_path / "a.npz", **META)
    np.savez(tmp_path / "b.npz", images=_images())
    with pytest.raises(ReaderError, match="missing required array 'responses'"):
        read_arrays(tmp_path / "b.npz", **META)
    np.savez(tmp_path / "c.npz", images=_images(), responses=np.zeros((5, 3)), tiers=np.array(["train", "dev", "test", "test", "test"]))
    with pytest.raises(ReaderError, match=r"unknown labels \['dev'\]"):
        read_arrays(tmp_path / "c.npz", **META)
