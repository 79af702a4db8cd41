"""Allen Brain Observatory natural scenes from an NWB 1.x experiment file (read with h5py).

Paths used::

    /processing/brain_observatory_pipeline/DfOverF/imaging_plane_1/data       (cells, frames)
    /processing/brain_observatory_pipeline/DfOverF/imaging_plane_1/timestamps (frames,)
    /processing/brain_observatory_pipeline/ImageSegmentation/.../cell_specimen_ids  (cells,)
    /stimulus/presentation/natural_scenes[_stimulus]/data            (n,) image index, -1 = blank
    /stimulus/presentation/natural_scenes[_stimulus]/frame_duration  (n, 2) start / end frame
    /stimulus/templates/natural_scenes_image_stack[/data]            (118, H, W)

A trial's response is the mean dF/F over ``window`` frames starting ``offset`` frames
after onset; blank presentations are dropped. No split is published: whole images are
drawn into validation / test with a seeded permutation.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from ...imageops import block_mean
from ..hdf5 import open_hdf5
from ..recording import NeuralRecording
from ._common import ReaderError, fail, split_groups, to_uint8_images

PIPELINE = "/processing/brain_observatory_pipeline"
PRESENTATIONS = ("/stimulus/presentation/natural_scenes_stimulus", "/stimulus/presentation/natural_scenes")
TEMPLATES = ("/stimulus/templates/natural_scenes_image_stack/data", "/stimulus/templates/natural_scenes_image_stack")


def _dataset(f: h5py.File, candidates, path, field: str, what: str) -> h5py.Dataset:
    for c in candidates:
        if c in f and isinstance(f[c], h5py.Dataset):
            return f[c]
    raise ReaderError(f"{path}: field '{field}': {what} not found; looked for {list(candidates)}")


def _text(f: h5py.File, key: str) -> str:
    if key not in f or not isinstance(f[key], h5py.Dataset):
        return ""
    v = f[key][()]
    v = v.ravel()[0] if isinstance(v, np.ndarray) and v.size else v
    return v.decode() if isinstance(v, bytes) else str(v)


def _find_named(group: h5py.Group, name: str) -> h5py.Dataset | None:
    found = []
    group.visititems(lambda k, v: found.append(v) if isinstance(v, h5py.Dataset) and k.split("/")[-1] == name else None)
    return found[0] if found else None


def read_allen_natural_scenes(
    path: str | os.PathLike,
    *,
    window: int = 8,
    offset: int = 0,
    plane: str = "imaging_plane_1",
    downsample: int = 1,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    area: str | None = None,
    pixels_per_degree: float = 7.6,
) -> NeuralRecording:
    """Read natural-scenes trials of one Allen Brain Observatory experiment (NWB 1).

    Args:
        path: the experiment's ``.nwb`` file.
        window: frames averaged after onset (8 frames ≈ 250 ms at 30 Hz).
        offset: frames skipped after onset before the window starts.
        plane: imaging plane group under ``DfOverF``.
        downsample: integer block-mean downsampling of the 918×1174 templates.
        validation_fraction, test_fraction, seed: image-level split.
        area: visual area; None reads ``/general/targeted_structure`` (e.g. ``VISp``),
            ``"unknown"`` when the file lacks it.
        pixels_per_degree: of the templates at full resolution (approximate), divided by
            ``downsample``.

    Returns:
        NeuralRecording: images ``[118, 1, H, W]`` uint8, responses ``[T, cells]`` dF/F.

    Raises:
        ReaderError: no natural-scenes presentations, missing dF/F, lengths that
            disagree, or a window running past the end of the recording.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"NWB file not found: {path}")
    if window < 1 or offset < 0:
        raise ReaderError(f"{path}: field 'window/offset': expected window >= 1 and offset >= 0, found {window}, {offset}")
    with open_hdf5(path, "NWB file", ReaderError, kind="HDF5/NWB") as f:
        pres = next((f[p] for p in PRESENTATIONS if p in f), None)
        session = _text(f, "/general/session_type")
        if area is None:
            area = _text(f, "/general/targeted_structure") or "unknown"
        if pres is None:
            have = sorted(f["/stimulus/presentation"].keys()) if "/stimulus/presentation" in f else []
            raise ReaderError(
                f"{path}: field '/stimulus/presentation/natural_scenes_stimulus': no natural-scenes presentations "
                f"in this experiment (session type {session or 'not recorded'}; three_session_B has them); "
                f"presentations found: {have}"
            )
        for key in ("data", "frame_duration"):
            if key not in pres:
                raise ReaderError(f"{path}: missing required array '{pres.name}/{key}'")
        stim = np.asarray(pres["data"][()]).reshape(-1).astype(np.int64) if pres["data"].ndim == 1 else np.asarray(pres["data"][()])[:, 0].astype(np.int64)
        frames = np.asarray(pres["frame_duration"][()])
        if frames.shape != (len(stim), 2):
            fail(path, f"{pres.name}/frame_duration", f"shape ({len(stim)}, 2)", f"shape {frames.shape}")
        dff_group = f"{PIPELINE}/DfOverF/{plane}"
        dff = _dataset(f, [f"{dff_group}/data"], path, f"{dff_group}/data", "dF/F traces")[()]
        ts = f[f"{dff_group}/timestamps"][()] if f"{dff_group}/timestamps" in f else None
        if dff.ndim != 2:
            fail(path, f"{dff_group}/data", "(cells, frames)", f"shape {dff.shape}")
        if ts is not None and dff.shape[0] == len(ts) and dff.shape[1] != len(ts):
            dff = dff.T  # stored time-first
        n_cells, n_frames = dff.shape
        seg = f.get(f"{PIPELINE}/ImageSegmentation")
        ids_ds = _find_named(seg, "cell_specimen_ids") if seg is not None else None
        ids = np.asarray(ids_ds[()]).ravel() if ids_ds is not None else np.arange(n_cells)
        if len(ids) != n_cells:
            fail(path, "ImageSegmentation/cell_specimen_ids", f"{n_cells} ids (rows of dF/F)", f"{len(ids)}")
        templates = _dataset(f, TEMPLATES, path, TEMPLATES[0], "natural scenes image stack")[()]
    keep = stim >= 0
    stim, starts = stim[keep], frames[keep, 0].astype(np.int64) + offset
    if len(stim) == 0:
        raise ReaderError(f"{path}: field '{pres.name}/data': only blank presentations (-1)")
    if stim.max() >= len(templates):
        fail(path, f"{pres.name}/data", f"image indices < {len(templates)} (templates)", f"max {stim.max()}")
    if starts.max() + window > n_frames:
        fail(path, f"{dff_group}/data", f"at least {starts.max() + window} frames for the last window", f"{n_frames}")
    idx = starts[:, None] + np.arange(window)[None, :]  # [T, window]
    responses = dff[:, idx].mean(axis=2).T.astype(np.float32)  # [T, cells]
    images = block_mean(to_uint8_images(path, TEMPLATES[0], templates), downsample)
    tiers = split_groups(stim, {"validation": validation_fraction, "test": test_fraction}, seed=seed)
    return NeuralRecording(
        images=images,
        image_ids=np.arange(len(images)),
        responses=responses,
        trial_image=stim,
        trial_tier=tiers,
        neurons={"ids": ids},
        species="mouse",
        area=area,
        response_unit="dF/F",
        pixels_per_degree=pixels_per_degree / downsample,
        source=f"allen-brain-observatory:{path.name}",
        name=str(path),
    )
