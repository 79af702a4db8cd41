"""BrainIO netCDF-4 assemblies (flat coordinates on netCDF dimension scales) + stimulus CSV/zip."""

import csv
import io
import zipfile

import h5py
import numpy as np
import pytest
from PIL import Image

from neuroreg.data.readers._common import ReaderError
from neuroreg.data.readers.brainio import read_brainio

STIMS = ["aa01", "bb02", "cc03", "dd04", "ee05"]
REPS = 3
K = 4


def _dim(f, name, n):
    d = f.create_dataset(name, (n,), dtype="f4")
    d.make_scale(name)
    d.attrs["NAME"] = np.bytes_(b"This is a netCDF dimension but not a netCDF variable.")
    return d


def _coord(f, name, values, dim, fixed_chars=False):
    if fixed_chars:  # netCDF char array (n, strlen) of S1
        width = max(len(v) for v in values)
        arr = np.array([list(v.ljust(width)) for v in values], dtype="S1")
        ds = f.create_dataset(name, data=arr)
        ds.dims[1].attach_scale(_dim(f, f"string{width}", width))
    elif isinstance(values[0], str):
        ds = f.create_dataset(name, data=np.array(values, dtype=object), dtype=h5py.string_dtype())
    else:
        ds = f.create_dataset(name, data=np.asarray(values))
    ds.dims[0].attach_scale(f[dim])
    return ds


def assembly(path, fixed_chars=False, time_bins=2, seed=0):
    rng = np.random.default_rng(seed)
    pres_stim = [s for r in range(REPS) for s in STIMS]
    n_pres = len(pres_stim)
    data = rng.normal(5, 2, (K, n_pres, time_bins)).astype(np.float32)
    with h5py.File(path, "w") as f:
        dims = {"neuroid": _dim(f, "neuroid", K), "presentation": _dim(f, "presentation", n_pres), "time_bin": _dim(f, "time_bin", time_bins)}
        v = f.create_dataset("__xarray_dataarray_variable__", data=data)
        for i, name in enumerate(("neuroid", "presentation", "time_bin")):
            v.dims[i].attach_scale(dims[name])
        _coord(f, "stimulus_id", pres_stim, "presentation", fixed_chars)
        _coord(f, "repetition", np.repeat(np.arange(REPS), len(STIMS)), "presentation")
        _coord(f, "object_name", ["obj"] * n_pres, "presentation")
        _coord(f, "neuroid_id", [f"Chabo_L_A_{i}" for i in range(K)], "neuroid", fixed_chars)
        _coord(f, "region", ["IT", "IT", "V4", "V4"], "neuroid", fixed_chars)
        _coord(f, "animal", ["Chabo"] * K, "neuroid")
        _coord(f, "row", np.arange(K), "neuroid")
        _coord(f, "time_bin_start", np.array([70, 120])[:time_bins], "time_bin")
    return path, data, pres_stim


def stimuli(tmp_path, rgb=False, drop=None):
    rng = np.random.default_rng(1)
    pix = {}
    with zipfile.ZipFile(tmp_path / "stim.zip", "w") as zf:
        for s in STIMS:
            if s == drop:
                continue
            arr = rng.integers(0, 256, (8, 8, 3) if rgb else (8, 8)).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="PNG")
            zf.writestr(f"images/{s}.png", buf.getvalue())
            pix[s] = arr
    with open(tmp_path / "stim.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["stimulus_id", "filename", "object_name"])
        for s in STIMS:
            w.writerow([s, f"{s}.png", "obj"])
    return tmp_path / "stim.csv", tmp_path / "stim.zip", pix


@pytest.mark.parametrize("fixed_chars", [False, True])
def test_brainio_fields(tmp_path, fixed_chars):
    p, data, pres_stim = assembly(tmp_path / "assy.nc", fixed_chars)
    csv_p, zip_p, pix = stimuli(tmp_path)
    rec = read_brainio(p, stimulus_csv=csv_p, stimulus_zip=zip_p, degrees=4.0)
    assert rec.n_trials == len(pres_stim) and rec.n_neurons == K and rec.n_images == len(STIMS)
    assert list(rec.image_ids) == sorted(STIMS)
    np.testing.assert_array_equal(rec.image_ids[rec.trial_image], pres_stim)
    np.testing.assert_allclose(rec.responses, data.mean(axis=2).T, rtol=1e-6)
    for j, s in enumerate(rec.image_ids):
        np.testing.assert_array_equal(rec.images[j, 0], pix[s])
    assert list(rec.neurons["ids"]) == [f"Chabo_L_A_{i}" for i in range(K)]
    assert list(rec.neurons["region"]) == ["IT", "IT", "V4", "V4"]
    assert rec.area == "IT+V4" and rec.response_unit == "firing_rate" and rec.pixels_per_degree == 2.0
    _, reps = rec.repeats()
    assert reps.shape == (len(STIMS), REPS, K)


def test_brainio_region_time_bin_resize(tmp_path):
    p, data, _ = assembly(tmp_path / "assy.nc")
    csv_p, zip_p, _ = stimuli(tmp_path, rgb=True)
    rec = read_brainio(p, stimulus_csv=csv_p, stimulus_zip=zip_p, region="V4", time_bins=1, image_size=4)
    assert rec.area == "V4" and rec.n_neurons == 2
    np.testing.assert_allclose(rec.responses, data[2:, :, 1].T)
    assert rec.images.shape == (len(STIMS), 3, 4, 4)


def test_brainio_bad_input(tmp_path):
    p, *_ = assembly(tmp_path / "assy.nc")
    csv_p, zip_p, _ = stimuli(tmp_path, drop="cc03")
    with pytest.raises(ReaderError, match="cc03.png"):
        read_brainio(p, stimulus_csv=csv_p, stimulus_zip=zip_p)
    csv_p, zip_p, _ = stimuli(tmp_path)
    with pytest.raises(ReaderError, match="field 'region'"):
        read_brainio(p, stimulus_csv=csv_p, stimulus_zip=zip_p, region="V1")
    with h5py.File(p, "a") as f:
        del f["stimulus_id"]
    with pytest.raises(ReaderError, match="missing required array 'stimulus_id'"):
        read_brainio(p, stimulus_csv=csv_p, stimulus_zip=zip_p)


def test_brainio_written_by_xarray(tmp_path):
    xr = pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    pres_stim = [s for r in range(REPS) for s in STIMS]
    data = np.random.default_rng(0).normal(size=(K, len(pres_stim), 1)).astype(np.float32)
    da = xr.DataArray(
        data,
        dims=("neuroid", "presentation", "time_bin"),
        coords={
            "stimulus_id": ("presentation", pres_stim),
            "repetition": ("presentation", np.repeat(np.arange(REPS), len(STIMS))),
            "neuroid_id": ("neuroid", [f"n{i}" for i in range(K)]),
            "region": ("neuroid", ["IT"] * K),
            "time_bin_start": ("time_bin", [70]),
            "time_bin_end": ("time_bin", [170]),
        },
    )
    da.to_netcdf(tmp_path / "x.nc", engine="h5netcdf")
    csv_p, zip_p, _ = stimuli(tmp_path)
    rec = read_brainio(tmp_path / "x.nc", stimulus_csv=csv_p, stimulus_zip=zip_p)
    np.testing.assert_allclose(rec.responses, data[:, :, 0].T)
    assert list(rec.neurons["ids"]) == [f"n{i}" for i in range(K)] and rec.area == "IT"
