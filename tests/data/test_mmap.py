"""Memory-mapped recordings: NeuralRecording.load(mmap=True) and NeuralDataModule(mmap=True)."""

import dataclasses
import functools
import pickle
import tracemalloc

import h5py
import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from neuroreg.data.datamodules import NeuralDataModule
from neuroreg.data.recording import FileMap, NeuralRecording, RecordingError, ResponseSummary, row_blocks
from neuroreg.twin.cores import Stacked2dCore
from neuroreg.twin.losses import PoissonLoss
from neuroreg.twin.module import TwinModule
from neuroreg.twin.readouts import FactorizedReadout
from neuroreg.twin.transforms import StimulusTransform


def recording(n_trials=300, n_neurons=40, n_images=60, size=8, seed=0, dead=()):
    rng = np.random.default_rng(seed)
    responses = rng.gamma(1.0, 1.0, (n_trials, n_neurons)).astype(np.float32)
    responses[rng.random(responses.shape) < 0.01] = np.nan  # a few unrecorded trials
    for k in dead:
        responses[:, k] = np.nan
    trial_image = rng.integers(0, n_images, n_trials)
    tier = np.where(np.arange(n_trials) % 5 == 0, "validation", "train")
    tier[np.arange(n_trials) % 10 == 3] = "test"
    return NeuralRecording(
        images=rng.integers(0, 256, (n_images, 1, size, size), dtype=np.uint8), image_ids=np.arange(n_images),
        responses=responses, trial_image=trial_image, trial_tier=tier, neurons={"ids": np.arange(n_neurons)},
        species="mouse", area="V1", response_unit="deconvolved", pixels_per_degree=1.0, source="test",
    )


def test_load_mmap_maps_the_file_and_equals_the_in_memory_load(tmp_path):
    path = recording().save(tmp_path / "r.h5")
    mem, mapped = NeuralRecording.load(path), NeuralRecording.load(path, mmap=True)
    assert mapped.mapped and not mem.mapped
    base = mapped.responses
    while not isinstance(base, np.memmap) and base is not None:
        base = base.base
    assert isinstance(base, np.memmap) and str(base.filename) == str(path.resolve())
    assert not mapped.responses.flags.writeable
    np.testing.assert_array_equal(mapped.responses, mem.responses)
    np.testing.assert_array_equal(mapped.repeats("test")[1], mem.repeats("test")[1])
    assert (mapped.n_trials, mapped.n_neurons, mapped.tiers) == (mem.n_trials, mem.n_neurons, mem.tiers)


def test_load_mmap_refuses_a_chunked_file_and_names_it(tmp_path):
    rec = recording()
    path = rec.save(tmp_path / "r.h5")
    chunked = tmp_path / "chunked.h5"
    with h5py.File(path, "r") as src, h5py.File(chunked, "w") as dst:
        for key in src:
            src.copy(key, dst)
        for k, v in src.attrs.items():
            dst.attrs[k] = v
        del dst["responses"]
        dst.create_dataset("responses", data=rec.responses, chunks=(16, 40), compression="gzip")
    np.testing.assert_array_equal(NeuralRecording.load(chunked).responses, rec.responses)  # read in full as before
    with pytest.raises(RecordingError, match=r"chunked\.h5: dataset '/responses': expected a plain contiguous block"):
        NeuralRecording.load(chunked, mmap=True)


def test_load_mmap_still_refuses_inf(tmp_path):
    rec = recording()
    path = rec.save(tmp_path / "r.h5")
    with h5py.File(path, "r+") as f:
        f["responses"][7, 3] = np.inf
    with pytest.raises(RecordingError, match=r"r\.h5: field 'responses': expected finite values or NaN.*1 inf values"):
        NeuralRecording.load(path, mmap=True)


def test_row_blocks_cover_the_rows_in_order():
    a = np.arange(70 * 3, dtype=np.float32).reshape(70, 3)
    blocks = list(row_blocks(a, block_bytes=4 * 3 * 8))  # 8 rows per block
    assert [len(b) for b in blocks] == [8] * 8 + [6]
    np.testing.assert_array_equal(np.concatenate(blocks), a)
    rows = np.array([1, 4, 5, 30, 69])
    np.testing.assert_array_equal(np.concatenate(list(row_blocks(a, rows, block_bytes=24))), a[rows])


@pytest.mark.parametrize("workers", [0, 1])
def test_mmap_data_module_gives_the_same_batches(tmp_path, workers):
    path = recording().save(tmp_path / "r.h5")
    mem = NeuralDataModule(str(path), batch_size=32, seed=3)
    mapped = NeuralDataModule(str(path), batch_size=32, seed=3, mmap=True, num_workers=workers)
    assert mapped.recordings["default"].mapped
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        a, b = list(getattr(mem, loader)()), list(getattr(mapped, loader)())
        assert len(a) == len(b) > 0
        for x, y in zip(a, b, strict=True):
            assert x.keys() == y.keys()
            for key in x:
                if key == "dataset":
                    assert x[key] == y[key]
                else:
                    torch.testing.assert_close(x[key], y[key], equal_nan=True)
    np.testing.assert_allclose(mapped.mean_response("default"), mem.mean_response("default"), rtol=1e-6)


def test_batched_reads_equal_item_reads(tmp_path):
    path = recording().save(tmp_path / "r.h5")
    dm = NeuralDataModule(str(path), batch_size=16, seed=0, mmap=True)
    ds = dm.train_dataloader().dataset
    idx = [5, 3, 3, 120, 0]  # unsorted, with a repeat
    batch = ds.__getitems__(idx)
    items = [ds[i] for i in idx]
    torch.testing.assert_close(batch["response"], torch.stack([it["response"] for it in items]), equal_nan=True)
    torch.testing.assert_close(batch["image"], torch.stack([it["image"] for it in items]))
    assert batch["dataset"] == ["default"] * 5


def test_mmap_data_module_keeps_the_responses_on_disk(tmp_path, monkeypatch):
    path = recording(n_trials=2000, n_neurons=2000).save(tmp_path / "r.h5")  # 16 MB of responses
    nbytes = 2000 * 2000 * 4
    monkeypatch.setattr("neuroreg.data.recording._BLOCK_BYTES", 1 << 20)  # passes over the responses: 1 MiB blocks

    def peak(**kw):
        tracemalloc.start()
        dm = NeuralDataModule(str(path), batch_size=32, seed=0, **kw)
        next(iter(dm.train_dataloader()))
        dm.mean_response("default")
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    assert peak(mmap=True) < nbytes / 4
    assert peak() > nbytes  # the control: the in-memory module holds them all


def test_mmap_refuses_neurons_never_recorded_in_training(tmp_path):
    path = recording(dead=(4, 9)).save(tmp_path / "r.h5")
    with pytest.raises(RecordingError, match=r"r\.h5: field 'responses': 2 of 40 neurons are NaN.*ids \[4, 9\].*mmap: false"):
        _ = NeuralDataModule(str(path), mmap=True).recordings
    with pytest.warns(UserWarning, match="dropping 2 of 40 neurons"):
        assert NeuralDataModule(str(path)).num_neurons == 38


def test_poisson_check_counts_negatives_over_every_block():
    r = np.abs(np.random.default_rng(0).normal(size=(5000, 4000))).astype(np.float32)  # 80 MB: two blocks
    r[10, 1], r[4900, 7] = -0.5, -2.0
    with pytest.raises(ValueError, match=r"found 2 negative values \(min -2\)"):
        PoissonLoss().check(r, "rec")


def test_twin_fits_the_same_with_a_memory_mapped_recording(tmp_path):
    path = recording(n_trials=200, n_neurons=12).save(tmp_path / "r.h5")

    def fit(mmap):
        pl.seed_everything(0)
        model = TwinModule(
            core=Stacked2dCore(1, 4, input_kernel=3, hidden_kernel=3, layers=1), readout=FactorizedReadout,
            transform=StimulusTransform(size=(8, 8)), num_neurons=12, optimizer=functools.partial(torch.optim.Adam, lr=0.01),
        )
        trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                             enable_model_summary=False, enable_checkpointing=False)
        trainer.fit(model, datamodule=NeuralDataModule(str(path), batch_size=20, seed=0, mmap=mmap))
        return {k: float(v) for k, v in trainer.callback_metrics.items()}

    a, b = fit(False), fit(True)
    assert a.keys() == b.keys() and "val/correlation" in a
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key


def test_a_mapped_recording_and_its_datasets_pickle_the_file_not_its_data(tmp_path):
    path = recording(n_trials=1000, n_neurons=500).save(tmp_path / "r.h5")  # 2 MB of responses
    rec = NeuralRecording.load(path, mmap=True)
    blob = pickle.dumps(rec)
    assert len(blob) < 2_000_000 / 4
    back = pickle.loads(blob)
    assert back.mapped and FileMap.of(back.responses) is not None
    np.testing.assert_array_equal(back.responses, rec.responses)
    assert len(pickle.dumps(NeuralRecording.load(path))) > 2_000_000  # the control: in memory, the data travels

    dm = NeuralDataModule(str(path), batch_size=16, seed=0, mmap=True)
    ds = dm.train_dataloader().dataset
    assert len(pickle.dumps(ds)) < 2_000_000 / 4
    again = pickle.loads(pickle.dumps(ds))
    torch.testing.assert_close(again.__getitems__([3, 1, 600])["response"], ds.__getitems__([3, 1, 600])["response"], equal_nan=True)
    assert len(pickle.dumps(NeuralDataModule(str(path), batch_size=16, seed=0).train_dataloader().dataset)) > 2_000_000


def test_file_map_only_refers_to_whole_read_only_maps(tmp_path):
    a = np.arange(60, dtype=np.float32).reshape(20, 3)
    p = tmp_path / "a.bin"
    a.tofile(p)
    m = np.memmap(p, dtype=np.float32, mode="r", shape=(20, 3))
    assert FileMap.of(m) == FileMap(str(p), 0, "<f4", (20, 3))
    assert FileMap.of(np.asarray(m)) is not None
    assert FileMap.of(m[2:]) is None and FileMap.of(m[:, :2]) is None and FileMap.of(a) is None
    assert FileMap.of(np.memmap(p, dtype=np.float32, mode="r+", shape=(20, 3))) is None


def test_response_summary_matches_numpy_over_several_blocks(monkeypatch):
    import neuroreg.data.recording as recording_module

    monkeypatch.setattr(recording_module, "_BLOCK_BYTES", 40 * 4 * 7)  # 7 rows per block: 43 blocks with the tiers mixed
    rec = recording()
    r = rec.responses.copy()
    r[5, 3], r[250, 0] = -0.25, -3.0
    rec = dataclasses.replace(rec, responses=r)
    s = rec.response_summary()
    assert (s.inf, s.negative, s.min_negative) == (0, 2, -3.0)
    assert sorted(s.sums) == ["test", "train", "validation"]
    for tier in s.sums:
        rows = r[rec.trial_tier == tier]
        np.testing.assert_allclose(s.sums[tier], np.nansum(rows, axis=0, dtype=np.float64), rtol=1e-12)
        np.testing.assert_array_equal(s.counts[tier], (~np.isnan(rows)).sum(axis=0))
    assert rec.response_summary() is s  # kept, also through pickling (DataLoader workers, spawned ranks) ...
    back = pickle.loads(pickle.dumps(rec))
    assert back.__dict__["_summary"][0] == (id(back.responses), id(back.trial_tier))
    np.testing.assert_array_equal(back.response_summary().sums["train"], s.sums["train"])
    rec.responses = r.copy()
    assert rec.response_summary() is not s  # ... until the responses are replaced
    with pytest.raises(ValueError, match=r"found 2 negative values \(min -3\)"):
        PoissonLoss().check(s, "rec")
    full = np.nan_to_num(r, nan=1.5)  # no NaN in any block: the counts are the rows
    s_full = ResponseSummary.of(full, rec.trial_tier)
    for tier in s_full.sums:
        rows = full[rec.trial_tier == tier]
        np.testing.assert_allclose(s_full.sums[tier], rows.sum(axis=0, dtype=np.float64), rtol=1e-12)
        assert (s_full.counts[tier] == len(rows)).all()
    odd = ResponseSummary.of(np.array([[1.0, -np.inf], [np.nan, np.inf], [-1.0, 2.0]], dtype=np.float32))
    assert (odd.inf, odd.negative, odd.min_negative, odd.sums) == (2, 2, -np.inf, {})
    r[7, 1] = np.inf
    with pytest.raises(RecordingError, match="field 'responses'.*1 inf values"):
        dataclasses.replace(rec, responses=r, name="x.h5")


def test_a_mapped_twin_fit_passes_over_the_responses_once(tmp_path, monkeypatch):
    import neuroreg.data.recording as recording_module

    path = recording(n_trials=200, n_neurons=12).save(tmp_path / "r.h5")
    scans = []
    real = recording_module.ResponseSummary.of.__func__

    def counted(cls, responses, trial_tier=None):
        scans.append(responses.shape)
        return real(cls, responses, trial_tier)

    monkeypatch.setattr(recording_module.ResponseSummary, "of", classmethod(counted))
    model = TwinModule(core=Stacked2dCore(1, 4, input_kernel=3, hidden_kernel=3, layers=1), readout=FactorizedReadout,
                       transform=StimulusTransform(size=(8, 8)), num_neurons=12)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1, accelerator="cpu", logger=False,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(model, datamodule=NeuralDataModule(str(path), batch_size=20, seed=0, mmap=True))
    assert scans == [(200, 12)]  # validation, dead neurons, training mean and the Poisson check share one pass
