"""Brain-Score / BrainIO netCDF-4 assemblies (e.g. MajajHong2015 public), read with h5py.

The file holds one DataArray with dims ``(neuroid, presentation, time_bin)`` (netCDF
dimension scales). Index levels are flat coordinate variables along one dim:
presentation -> ``stimulus_id`` / ``image_id``, ``repetition``, ...; neuroid ->
``neuroid_id``, ``region``, ``animal``, ``arr``, ``row``, ``col``. Strings are stored
as variable-length strings or as fixed ``S1`` character arrays (joined here).

Stimuli come as a CSV (``stimulus_id`` or ``image_id``, ``filename``) and a zip of
images. Presentations of the same stimulus are its repeats; each presentation is
one trial.
"""

from __future__ import annotations

import csv
import io
import os
import zipfile
from pathlib import Path

import h5py
import numpy as np

from ..hdf5 import open_hdf5
from ..recording import NeuralRecording
from ._common import ReaderError, fail, split_groups, to_uint8_images

_NEUROID_FIELDS = ("region", "animal", "arr", "row", "col", "subregion", "electrode")


def _dim_names(ds: h5py.Dataset) -> list[str | None]:
    names: list[str | None] = []
    for dim in ds.dims:
        try:
            names.append(dim[0].name.rsplit("/", 1)[-1] if len(dim) else None)
        except (RuntimeError, KeyError, IndexError):
            names.append(None)
    return names


def _decode(values: np.ndarray) -> np.ndarray:
    """vlen bytes/str or fixed ``S1`` char arrays -> 1-D object array of ``str``; numbers unchanged."""
    if values.dtype.kind == "S" and values.ndim == 2 and values.dtype.itemsize == 1:
        return np.asarray([b"".join(row).decode() for row in values], dtype=object)
    if values.dtype.kind in "OSU":
        return np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in values.ravel()], dtype=object)
    return values


def _coords(f: h5py.File, dim: str, length: int) -> dict[str, np.ndarray]:
    out = {}
    for key, ds in f.items():
        if not isinstance(ds, h5py.Dataset) or key == dim:
            continue
        dims = _dim_names(ds)
        if dims and dims[0] == dim and (ds.ndim == 1 or (ds.ndim == 2 and ds.dtype.kind == "S")):
            values = _decode(ds[()])
            if len(values) == length:
                out[key] = values
    return out


def _data_variable(f: h5py.File, path) -> tuple[h5py.Dataset, list[str]]:
    candidates = []
    for key, ds in f.items():
        if isinstance(ds, h5py.Dataset) and ds.ndim in (2, 3):
            dims = _dim_names(ds)
            if "neuroid" in dims and "presentation" in dims:
                candidates.append((key, ds, dims))
    if not candidates:
        raise ReaderError(
            f"{path}: missing required array: no variable with dims (neuroid, presentation[, time_bin]); "
            f"variables: {sorted(f.keys())}"
        )
    candidates.sort(key=lambda c: (c[0] != "__xarray_dataarray_variable__", -c[1].size))
    return candidates[0][1], candidates[0][2]


def _read_stimuli(csv_path: Path, zip_path: Path, ids: np.ndarray, image_size: int | None) -> np.ndarray:
    from PIL import Image

    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        fail(csv_path, "<rows>", "one row per stimulus", "an empty CSV")
    id_col = "stimulus_id" if "stimulus_id" in rows[0] else "image_id" if "image_id" in rows[0] else None
    file_col = next((c for c in ("filename", "image_file_name", "image_path") if c in rows[0]), None)
    if id_col is None or file_col is None:
        fail(csv_path, "<header>", "columns stimulus_id (or image_id) and filename", list(rows[0]))
    filename = {r[id_col]: Path(r[file_col]).name for r in rows}
    missing = [i for i in ids if i not in filename]
    if missing:
        fail(csv_path, id_col, "a row for every stimulus in the assembly", f"{len(missing)} missing, e.g. {missing[:3]}")
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as err:
        raise ReaderError(f"{zip_path}: not a readable zip file (truncated or corrupt: {err})") from err
    with zf:
        members = {Path(n).name: n for n in zf.namelist() if not n.endswith("/")}
        images = []
        for i in ids:
            name = filename[i]
            if name not in members:
                fail(zip_path, name, f"an image file for stimulus {i}", "no such member")
            im = Image.open(io.BytesIO(zf.read(members[name])))
            im = im.convert("L") if im.mode in ("L", "I", "I;16", "F", "1", "P") else im.convert("RGB")
            if image_size is not None:
                im = im.resize((image_size, image_size), Image.BILINEAR)
            images.append(np.asarray(im))
    shapes = {a.shape for a in images}
    if len(shapes) != 1:
        fail(zip_path, "<images>", "images of one size (set image_size)", f"sizes {sorted(shapes)[:3]}")
    return np.stack(images)


def read_brainio(
    assembly: str | os.PathLike,
    *,
    stimulus_csv: str | os.PathLike,
    stimulus_zip: str | os.PathLike,
    region: str | None = None,
    time_bins: str | int = "mean",
    image_size: int | None = None,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    species: str = "macaque",
    degrees: float = 8.0,
) -> NeuralRecording:
    """Read a BrainIO neuronal assembly and its stimulus set.

    Args:
        assembly: the ``.nc`` file.
        stimulus_csv, stimulus_zip: the stimulus set's CSV and image zip.
        region: keep only neuroids with this ``region`` (e.g. ``"IT"``, ``"V4"``).
        time_bins: ``"mean"`` over the time-bin axis or the index of one bin.
        image_size: resize images to ``image_size`` squared (None: keep).
        validation_fraction, test_fraction, seed: image-level split.
        species: attribute of the recording.
        degrees: visual angle spanned by the image width (HvM: 8); pixels per degree
            is the stored width divided by it.

    Returns:
        NeuralRecording with one trial per presentation (``[T, K]`` firing rates).
    """
    assembly = Path(assembly)
    with open_hdf5(assembly, "assembly", ReaderError, kind="netCDF-4/HDF5") as f:
        var, dims = _data_variable(f, assembly)
        data = np.asarray(var[()], dtype=np.float32)
        if "time_bin" in dims:
            axis = dims.index("time_bin")
            if time_bins == "mean":
                data = data.mean(axis=axis)
            elif isinstance(time_bins, int) and 0 <= time_bins < data.shape[axis]:
                data = np.take(data, time_bins, axis=axis)
            else:
                fail(assembly, "time_bins", f"'mean' or an index < {data.shape[axis]}", time_bins)
            dims = [d for d in dims if d != "time_bin"]
        elif data.ndim == 3:
            fail(assembly, var.name, "dims (neuroid, presentation, time_bin)", dims)
        responses = data if dims == ["presentation", "neuroid"] else data.T  # [T, K]
        n_trials, n_neurons = responses.shape
        pres = _coords(f, "presentation", n_trials)
        neur = _coords(f, "neuroid", n_neurons)
    stim_key = "stimulus_id" if "stimulus_id" in pres else "image_id" if "image_id" in pres else None
    if stim_key is None:
        raise ReaderError(f"{assembly}: missing required array 'stimulus_id' (or 'image_id') along presentation; found {sorted(pres)}")
    stim = np.asarray([str(s) for s in pres[stim_key]], dtype=object)
    neuron_ids = neur.get("neuroid_id", np.arange(n_neurons))
    neurons = {"ids": neuron_ids, **{k: v for k, v in neur.items() if k in _NEUROID_FIELDS}}
    if region is not None:
        if "region" not in neur:
            fail(assembly, "region", "a neuroid 'region' coordinate to select by", "none")
        keep = neur["region"] == region
        if not keep.any():
            fail(assembly, "region", f"neuroids in region {region!r}", f"regions {sorted(set(neur['region']))}")
        responses = responses[:, keep]
        neurons = {k: v[keep] for k, v in neurons.items()}
    ids, trial_image = np.unique(stim, return_inverse=True)
    images = to_uint8_images(stimulus_csv, "<images>", _read_stimuli(Path(stimulus_csv), Path(stimulus_zip), ids, image_size))
    tiers = split_groups(trial_image, {"validation": validation_fraction, "test": test_fraction}, seed=seed)
    area = region if region is not None else "+".join(sorted(set(neur.get("region", ["unknown"]))))
    return NeuralRecording(
        images=images,
        image_ids=ids,
        responses=responses,
        trial_image=trial_image.ravel(),
        trial_tier=tiers,
        neurons=neurons,
        species=species,
        area=area,
        response_unit="firing_rate",
        pixels_per_degree=images.shape[-1] / degrees,
        source=f"brainio:{assembly.name}",
        name=str(assembly),
    )
