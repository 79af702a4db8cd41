"""LazyRecording: batches read from HDF5 equal the in-memory recording, cached or not."""

import numpy as np
import pytest
from conftest import make_recording

from neuroreg.data.lazy import open_recording
from neuroreg.data.recording import NeuralRecording, RecordingError


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


def _chunked_copy(src, dst):
    """The same recording with chunked, compressed images and responses (an older or foreign writer)."""
    import h5py

    with h5py.File(src, "r") as f, h5py.File(dst, "w") as g:
        for key in f:
            if isinstance(f[key], h5py.Group):
                f.copy(key, g)
            elif key in ("images", "responses"):
                g.create_dataset(key, data=f[key][()], chunks=(1, *f[key].shape[1:]), compression="gzip")
            else:
                f.copy(key, g)
        g.attrs.update(dict(f.attrs))
    return dst


@pytest.mark.parametrize("prefetch", [True, False])
@pytest.mark.parametrize("layout", ["plain", "chunked"])
@pytest.mark.parametrize("cache_bytes", [1 << 30, 64])
def test_layouts_read_the_same(tmp_path, monkeypatch, layout, cache_bytes, prefetch):
    import h5py

    import neuroreg.data.lazy as lazy_module

    monkeypatch.setattr(lazy_module, "_STREAM_MIN_BYTES", 64)  # several read streams even for a small file

    from neuroreg.data.hdf5 import contiguous_offset

    rec = make_recording(n_images=30, n_neurons=7, repeats=(2,) * 30)
    path = rec.save(tmp_path / "r.h5")
    with h5py.File(path, "r") as f:  # saved as plain blocks, still ordinary HDF5
        assert contiguous_offset(f["images"]) is not None and contiguous_offset(f["responses"]) is not None
        np.testing.assert_array_equal(f["responses"][()], rec.responses)
    if layout == "chunked":
        path = _chunked_copy(path, tmp_path / "c.h5")
    loaded = NeuralRecording.load(path)
    np.testing.assert_array_equal(loaded.images, rec.images)
    np.testing.assert_array_equal(loaded.responses, rec.responses)
    rng = np.random.default_rng(1)
    with open_recording(path, cache_bytes=cache_bytes, block_rows=5, prefetch=prefetch) as lazy:
        reader = lazy._responses
        assert type(reader).__name__ == ("_PlainReader" if layout == "plain" else "_RowReader")
        if layout == "plain":
            assert len(reader._lo) == 4
        for _ in range(10):
            idx = rng.integers(0, rec.n_trials, 9)
            ims, resp = lazy.batch(idx)
            np.testing.assert_array_equal(ims, rec.images[rec.trial_image[idx]])
            np.testing.assert_array_equal(resp, rec.responses[idx])
        ims, resp = lazy.batch(np.array([], dtype=np.int64))
        assert ims.shape == (0, *rec.images.shape[1:]) and resp.shape == (0, rec.n_neurons)
        if cache_bytes > 64:
            lazy.batch(np.arange(rec.n_trials))
            assert reader.full is not None and reader.reads == (1 if layout == "plain" else reader.n_blocks)
        else:
            assert reader.full is None


def test_forked_worker_reads_its_own_copy(tmp_path):
    """A DataLoader worker forked while the reading thread runs reads the data itself."""
    import multiprocessing as mp

    rec = make_recording(n_images=20, n_neurons=6, repeats=(2,) * 20)
    path = rec.save(tmp_path / "r.h5")
    lazy = open_recording(path, prefetch=False)
    lazy._responses.start()
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_forked_batch, args=(lazy, [3, 1, 2], queue))  # fork: arguments are not pickled
    proc.start()
    got = queue.get(timeout=30)
    proc.join(timeout=30)
    np.testing.assert_array_equal(got, rec.responses[[3, 1, 2]])
    lazy.close()


def _forked_batch(lazy, idx, queue):
    queue.put(lazy.batch(np.asarray(idx))[1])


def test_read_at_names_the_file_when_it_ends_early(tmp_path):
    from neuroreg.data.hdf5 import read_at

    path = tmp_path / "short.bin"
    path.write_bytes(bytes(range(10)))
    out = np.empty(4, dtype=np.uint8)
    np.testing.assert_array_equal(read_at(path, 3, out, block_bytes=3), [3, 4, 5, 6])
    with pytest.raises(OSError, match="short.bin: file ends early"):
        read_at(path, 8, np.empty(4, dtype=np.uint8))
