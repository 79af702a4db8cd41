"""LazyRecording: batches read from HDF5 equal the in-memory recording, cached or not."""

import numpy as np
import pytest
from conftest import make_recording

from neuroreg.data.lazy import open_recording
from neuroreg.data.recording import RecordingError


@pytest.mark.parametrize("cache_bytes", [1 << 30, 64])
def test_batches_match_memory(tmp_path, cache_bytes):
    rec = make_recording(n_images=12, n_neurons=5, repeats=(3,) * 12)
    path = rec.save(tmp_path / "r.h5")
    rng = np.random.default_rng(0)
    with open_recording(path, cache_bytes=cache_bytes, block_rows=4) as lazy:
        assert (lazy.n_trials, lazy.n_images, lazy.n_neurons) == (rec.n_trials, rec.n_images, rec.n_neurons)
        assert lazy.species == "mouse" and list(lazy.trial_tier) == list(rec.trial_tier)
        for _ in range(20):
            idx = rng.integers(0, rec.n_trials, 7)  # unsorted, with repeats
            ims, resp = lazy.batch(idx)
            np.testing.assert_array_equal(ims, rec.images[rec.trial_image[idx]])
            np.testing.assert_array_equal(resp, rec.responses[idx])
        np.testing.assert_array_equal(lazy.trials("test"), np.flatnonzero(rec.trial_tier == "test"))
        assert (lazy._responses.full is not None) == (cache_bytes > 64)
        with pytest.raises(IndexError):
            lazy.batch([rec.n_trials])


def test_open_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_recording(tmp_path / "none.h5")
    (tmp_path / "bad.h5").write_bytes(b"nope")
    with pytest.raises(RecordingError, match="not a readable HDF5"):
        open_recording(tmp_path / "bad.h5")
