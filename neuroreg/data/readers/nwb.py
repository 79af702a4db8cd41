"""Generic NWB 2.x files via pynwb (optional extra: ``pip install neuroreg[nwb]``).

What is used::

    stimulus templates   an ``Images`` container of ``GrayscaleImage`` / ``RGBImage``
    presentations        an ``IndexSeries`` in ``stimulus`` (data = image index, one
                         timestamp per onset), or the trials table with an image-index
                         column and ``start_time``
    responses            a ``RoiResponseSeries`` (time-first) inside ``DfOverF`` or
                         ``Fluorescence`` of a processing module -> mean over a window
                         after onset; or ``units`` spike times -> counts in the window

Negative image indices are blanks and are dropped. No split is assumed: whole images
are drawn into validation / test with a seeded permutation.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..recording import NeuralRecording
from ._common import ReaderError, fail, split_groups, to_uint8_images


def _import_pynwb():
    try:
        import pynwb
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("reading NWB 2 files needs pynwb: pip install 'neuroreg[nwb]'") from err
    return pynwb


def _images(nwb, path, name: str | None):
    from pynwb.base import Images

    containers = {k: v for k, v in nwb.stimulus_template.items() if isinstance(v, Images)}
    if name is not None:
        if name not in containers:
            fail(path, f"stimulus_template/{name}", "an Images container", f"containers {sorted(containers)}")
        container = containers[name]
    elif len(containers) == 1:
        container = next(iter(containers.values()))
    else:
        fail(path, "stimulus_template", "exactly one Images container (or pass images=)", f"{sorted(containers)}")
    order = list(container.order_of_images) if container.order_of_images is not None else list(container.images.values())
    arrays = [np.asarray(im.data[()]) for im in order]
    if not arrays:
        fail(path, f"stimulus_template/{container.name}", "at least one image", "none")
    if len({a.shape for a in arrays}) != 1:
        fail(path, f"stimulus_template/{container.name}", "images of one shape", sorted({a.shape for a in arrays})[:3])
    return np.stack(arrays), [im.name for im in order]


def _presentations(nwb, path, name: str | None, image_column: str):
    from pynwb.image import IndexSeries

    series = {k: v for k, v in nwb.stimulus.items() if isinstance(v, IndexSeries)}
    if name is not None and name in series or (name is None and len(series) == 1):
        s = series[name] if name is not None else next(iter(series.values()))
        idx = np.asarray(s.data[()]).astype(np.int64).ravel()
        onsets = np.asarray(s.timestamps[()]) if s.timestamps is not None else s.starting_time + np.arange(len(idx)) / s.rate
        return idx, np.asarray(onsets, dtype=np.float64).ravel(), f"stimulus/{s.name}"
    if nwb.trials is not None and image_column in nwb.trials.colnames:
        idx = np.asarray(nwb.trials[image_column].data[()]).astype(np.int64).ravel()
        onsets = np.asarray(nwb.trials["start_time"].data[()], dtype=np.float64).ravel()
        return idx, onsets, f"trials/{image_column}"
    raise ReaderError(
        f"{path}: field 'stimulus': no image presentations: expected an IndexSeries "
        f"(found {sorted(series)}) or a trials column {image_column!r}"
    )


def _roi_series(nwb, path, name: str | None):
    from pynwb.ophys import DfOverF, Fluorescence, RoiResponseSeries

    found = []
    for module in nwb.processing.values():
        for iface in module.data_interfaces.values():
            if isinstance(iface, (DfOverF, Fluorescence)):
                for s in iface.roi_response_series.values():
                    found.append((isinstance(iface, DfOverF), s))
            elif isinstance(iface, RoiResponseSeries):
                found.append((False, iface))
    if name is not None:
        found = [f for f in found if f[1].name == name]
    if not found:
        return None, None
    found.sort(key=lambda f: not f[0])  # prefer dF/F
    return found[0][1], found[0][0]


def read_nwb(
    path: str | os.PathLike,
    *,
    window: float = 0.25,
    offset: float = 0.0,
    images: str | None = None,
    presentations: str | None = None,
    image_column: str = "image_index",
    responses: str | None = None,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    species: str = "mouse",
    area: str = "V1",
    pixels_per_degree: float = 1.0,
) -> NeuralRecording:
    """Read image presentations and responses from an NWB 2 file.

    Args:
        path: the ``.nwb`` file.
        window, offset: seconds; a trial's response is the mean of the ROI trace
            (or the spike count) in ``[onset + offset, onset + offset + window)``.
        images: name of the Images container in stimulus templates (default: the only one).
        presentations: name of the IndexSeries (default: the only one, else the trials table).
        image_column: trials-table column holding the image index.
        responses: name of the RoiResponseSeries (default: DfOverF first); units are
            used when there is no ROI series.
        validation_fraction, test_fraction, seed: image-level split.
        species, area, pixels_per_degree: attributes.
    """
    pynwb = _import_pynwb()
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"NWB file not found: {path}")
    try:
        io = pynwb.NWBHDF5IO(str(path), "r")
        nwb = io.read()
    except Exception as err:  # pynwb raises many types for unreadable files
        raise ReaderError(f"{path}: not a readable NWB 2 file ({type(err).__name__}: {err})") from err
    with io:
        ims, names = _images(nwb, path, images)
        idx, onsets, where = _presentations(nwb, path, presentations, image_column)
        if len(idx) != len(onsets):
            fail(path, where, f"{len(idx)} onsets (one per presentation)", len(onsets))
        keep = idx >= 0
        idx, onsets = idx[keep], onsets[keep] + offset
        if len(idx) == 0:
            fail(path, where, "at least one non-blank presentation", "none")
        if idx.max() >= len(ims):
            fail(path, where, f"image indices < {len(ims)} (images in the template)", f"max {idx.max()}")
        series, is_dff = _roi_series(nwb, path, responses)
        if series is not None:
            data = np.asarray(series.data[()], dtype=np.float32)
            if data.ndim == 1:
                data = data[:, None]
            t = np.asarray(series.timestamps[()]) if series.timestamps is not None else series.starting_time + np.arange(len(data)) / series.rate
            if len(t) != len(data):
                fail(path, series.name, f"{len(t)} rows (time-first, one per timestamp)", f"shape {data.shape}")
            lo = np.searchsorted(t, onsets, side="left")
            hi = np.searchsorted(t, onsets + window, side="left")
            if np.any(hi <= lo):
                fail(path, series.name, f"samples within every {window} s window", f"{int((hi <= lo).sum())} empty windows")
            csum = np.concatenate([np.zeros((1, data.shape[1]), np.float64), np.cumsum(data, axis=0, dtype=np.float64)])
            resp = ((csum[hi] - csum[lo]) / (hi - lo)[:, None]).astype(np.float32)
            unit = "dF/F" if is_dff else "a.u."
            neuron_ids = np.arange(resp.shape[1])
            try:
                neuron_ids = np.asarray(series.rois.table.id[()])[np.asarray(series.rois.data[()])]
            except (AttributeError, IndexError, KeyError, TypeError):
                neuron_ids = np.arange(resp.shape[1])  # rois region not resolvable: positional ids
        elif nwb.units is not None and len(nwb.units) > 0:
            resp = np.empty((len(idx), len(nwb.units)), np.float32)
            for k in range(len(nwb.units)):
                st = np.sort(np.asarray(nwb.units.get_unit_spike_times(k)))
                resp[:, k] = np.searchsorted(st, onsets + window, "left") - np.searchsorted(st, onsets, "left")
            unit = "spikes"
            neuron_ids = np.asarray(nwb.units.id[()])
        else:
            raise ReaderError(f"{path}: field 'processing': no RoiResponseSeries in DfOverF/Fluorescence and no units")
    images_arr = to_uint8_images(path, "stimulus_template", ims)
    tiers = split_groups(idx, {"validation": validation_fraction, "test": test_fraction}, seed=seed)
    return NeuralRecording(
        images=images_arr,
        image_ids=np.asarray(names, dtype=object),
        responses=resp,
        trial_image=idx,
        trial_tier=tiers,
        neurons={"ids": neuron_ids},
        species=species,
        area=area,
        response_unit=unit,
        pixels_per_degree=pixels_per_degree,
        source=f"nwb:{path.name}",
        name=str(path),
    )
