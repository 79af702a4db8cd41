"""NWB 2 files written with pynwb: Images templates, IndexSeries / trials, ROI series, units."""

from datetime import datetime, timezone

import numpy as np
import pytest

pynwb = pytest.importorskip("pynwb")

from neuroreg.data.readers._common import ReaderError  # noqa: E402 (after importorskip)
from neuroreg.data.readers.nwb import read_nwb  # noqa: E402

RATE = 30.0
IDX = np.array([0, 1, 2, -1, 0, 1, 2, 0, 1, 2])
ONSETS = 1.0 + 0.5 * np.arange(len(IDX))


def _nwbfile(with_index_series=True, with_trials=False, rois=True, units=False, seed=0):
    from pynwb.base import Images
    from pynwb.image import GrayscaleImage, IndexSeries
    from pynwb.ophys import (
        DfOverF,
        ImageSegmentation,
        OpticalChannel,
        RoiResponseSeries,
    )

    rng = np.random.default_rng(seed)
    nwb = pynwb.NWBFile("test", "id0", datetime(2024, 1, 1, tzinfo=timezone.utc))
    pix = [rng.integers(0, 256, (6, 7)).astype(np.uint8) for _ in range(3)]
    imgs = [GrayscaleImage(name=f"img{i}", data=p) for i, p in enumerate(pix)]
    images = Images(name="natural_images", images=imgs, description="stimuli")
    nwb.add_stimulus_template(images)
    if with_index_series:
        nwb.add_stimulus(
            IndexSeries(name="presentations", data=IDX.astype(np.int64), indexed_images=images, unit="N/A", timestamps=ONSETS)
        )
    if with_trials:
        nwb.add_trial_column("image_index", "image shown")
        for t, i in zip(ONSETS, IDX):
            nwb.add_trial(start_time=float(t), stop_time=float(t) + 0.25, image_index=int(i))
    trace = rng.normal(size=(int(7 * RATE), 4)).astype(np.float32)
    if rois:
        device = nwb.create_device("scope")
        plane = nwb.create_imaging_plane(
            name="plane",
            optical_channel=OpticalChannel(name="ch", description="green", emission_lambda=510.0),
            description="plane",
            device=device,
            excitation_lambda=920.0,
            imaging_rate=RATE,
            indicator="GCaMP6f",
            location="V1",
        )
        seg = ImageSegmentation()
        ps = seg.create_plane_segmentation("cells", plane, name="cells")
        for k in range(4):
            mask = np.zeros((5, 5))
            mask[k, k] = 1
            ps.add_roi(image_mask=mask)
        module = nwb.create_processing_module("ophys", "ophys")
        module.add(seg)
        region = ps.create_roi_table_region("all", region=list(range(4)))
        module.add(DfOverF(RoiResponseSeries(name="dff", data=trace, rois=region, unit="1", rate=RATE)))
    if units:
        for _ in range(3):
            nwb.add_unit(spike_times=np.sort(rng.uniform(0, 7, 200)))
    return nwb, pix, trace


def _write(tmp_path, **kw):
    nwb, pix, trace = _nwbfile(**kw)
    path = tmp_path / "f.nwb"
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path, pix, trace, nwb


def test_nwb_roi_series(tmp_path):
    path, pix, trace, _ = _write(tmp_path)
    rec = read_nwb(path, window=0.25, offset=0.1)
    keep = IDX >= 0
    t = np.arange(len(trace)) / RATE
    expected = []
    for on in ONSETS[keep] + 0.1:
        sel = (t >= on - 1e-9) & (t < on + 0.25 - 1e-9)
        expected.append(trace[sel].mean(0))
    np.testing.assert_allclose(rec.responses, np.stack(expected), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(rec.trial_image, IDX[keep])
    assert list(rec.image_ids) == ["img0", "img1", "img2"]
    for i in range(3):
        np.testing.assert_array_equal(rec.images[i, 0], pix[i])
    assert rec.response_unit == "dF/F" and rec.n_neurons == 4


def test_nwb_trials_table_and_units(tmp_path):
    path, *_ , _nwb = _write(tmp_path, with_index_series=False, with_trials=True, rois=False, units=True)
    rec = read_nwb(path, window=0.5)
    assert rec.response_unit == "spikes" and rec.n_neurons == 3 and rec.n_trials == 9
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        f = io.read()
        st = np.asarray(f.units.get_unit_spike_times(1))
    on = ONSETS[IDX >= 0]
    counts = [((st >= o) & (st < o + 0.5)).sum() for o in on]
    np.testing.assert_array_equal(rec.responses[:, 1], counts)


def test_nwb_without_presentations(tmp_path):
    path, *_ = _write(tmp_path, with_index_series=False)
    with pytest.raises(ReaderError, match="f.nwb: field 'stimulus': no image presentations"):
        read_nwb(path)


def test_nwb_not_a_file(tmp_path):
    (tmp_path / "x.nwb").write_bytes(b"not hdf5")
    with pytest.raises(ReaderError, match="not a readable NWB 2 file"):
        read_nwb(tmp_path / "x.nwb")
