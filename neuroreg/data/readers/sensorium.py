"""Sensorium 2022 / neuralpredictors static file tree (zip or folder) and the older single HDF5.

File tree under ``<name>/`` (in a zip every entry carries that prefix)::

    data/images/{i}.npy        (1, H, W)    one file per trial i = 0..T-1
    data/responses/{i}.npy     (K,)
    data/behavior/{i}.npy      (3,) / (1, 3)   not stored (no per-trial field in NeuralRecording)
    data/pupil_center/{i}.npy  (2,)            not stored
    meta/trials/tiers.npy            [T] strings in {train, validation, test, final_test}
    meta/trials/frame_image_id.npy   [T] image id (repeats share an id)
    meta/neurons/unit_ids.npy        [K] (+ area, layer, animal_ids, sessions, scan_idx)
    meta/neurons/cell_motor_coordinates.npy  [K, 3]

Competition mice publish test / final_test responses as zeros: those trials become NaN
(see :func:`~neuroreg.data.readers._common.withhold_zero_trials`).
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from pathlib import Path

import numpy as np

from ...imageops import block_mean
from ..hdf5 import open_hdf5
from ..recording import NeuralRecording
from ._common import (
    ReaderError,
    check_tiers,
    fail,
    to_uint8_images,
    withhold_zero_trials,
)

_NEURON_FIELDS = ("area", "layer", "animal_ids", "sessions", "scan_idx")


class _Tree:
    """Uniform access to ``<prefix>/relative/path.npy`` in a zip or a folder."""

    def __init__(self, path: Path):
        self.path = path
        self.zip: zipfile.ZipFile | None = None
        if path.is_dir():
            root = path
            if not (root / "meta").is_dir():
                subs = [p for p in path.iterdir() if p.is_dir() and (p / "meta").is_dir()]
                if len(subs) != 1:
                    fail(path, "meta/", "a folder with data/ and meta/ (or exactly one such subfolder)", f"{len(subs)} candidates")
                root = subs[0]
            self.root = root
            self.names = {str(p.relative_to(root)).replace(os.sep, "/") for p in root.rglob("*.npy")}
        else:
            try:
                self.zip = zipfile.ZipFile(path)  # members are CRC-checked as they are read
            except (zipfile.BadZipFile, OSError, EOFError) as err:
                raise ReaderError(f"{path}: not a readable zip file (truncated or corrupt: {err})") from err
            names = [n for n in self.zip.namelist() if not n.startswith("__MACOSX")]
            anchors = [n for n in names if n.endswith("meta/trials/tiers.npy")]
            if len(anchors) != 1:
                fail(path, "meta/trials/tiers.npy", "exactly one tiers file in the zip", f"{len(anchors)}")
            self.prefix = anchors[0][: -len("meta/trials/tiers.npy")]
            self.names = {n[len(self.prefix) :] for n in names if n.startswith(self.prefix) and n.endswith(".npy")}

    def where(self, rel: str) -> str:
        return f"{self.path}:{self.prefix if self.zip else ''}{rel}" if self.zip else str(self.root / rel)

    def has(self, rel: str) -> bool:
        return rel in self.names

    def load(self, rel: str, required: bool = True) -> np.ndarray | None:
        if rel not in self.names:
            if required:
                raise ReaderError(f"{self.path}: missing required array '{rel}'")
            return None
        try:
            if self.zip is not None:
                return np.load(io.BytesIO(self.zip.read(self.prefix + rel)), allow_pickle=False)
            return np.load(self.root / rel, allow_pickle=False)
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
            raise ReaderError(f"{self.where(rel)}: field '{rel}': unreadable .npy ({err})") from err

    def indices(self, folder: str) -> list[int]:
        pat = re.compile(rf"^{re.escape(folder)}/(\d+)\.npy$")
        return sorted(int(m.group(1)) for n in self.names if (m := pat.match(n)))

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()


def _dedupe_images(path, trial_images: np.ndarray, image_id: np.ndarray | None):
    """Store each distinct image once: ``(images [N,...], image_ids [N], trial_image [T])``."""
    if image_id is None:
        return trial_images, np.arange(len(trial_images)), np.arange(len(trial_images))
    ids, first, inverse = np.unique(image_id, return_index=True, return_inverse=True)
    return trial_images[first], ids, inverse.ravel()


def _neurons(tree_load, path, n_neurons: int) -> dict[str, np.ndarray]:
    ids = tree_load("meta/neurons/unit_ids.npy", required=False)
    neurons = {"ids": np.arange(n_neurons) if ids is None else np.asarray(ids).ravel()}
    for key in _NEURON_FIELDS:
        v = tree_load(f"meta/neurons/{key}.npy", required=False)
        if v is not None:
            v = np.asarray(v).ravel()
            neurons[key] = v if v.dtype.kind not in "SO" else np.asarray([x.decode() if isinstance(x, bytes) else str(x) for x in v])
    coords = tree_load("meta/neurons/cell_motor_coordinates.npy", required=False)
    if coords is not None:
        neurons["cell_motor_coordinates"] = np.asarray(coords, dtype=np.float32)
    for key, v in neurons.items():
        if v.shape[:1] != (n_neurons,):
            fail(path, f"meta/neurons/{key}", f"{n_neurons} entries (one per neuron in responses)", f"shape {v.shape}")
    return neurons


def read_sensorium(
    path: str | os.PathLike,
    *,
    downsample: int = 1,
    withhold_zero_test: bool = True,
    area: str = "V1",
    pixels_per_degree: float = 2.0,
    response_unit: str = "deconvolved",
) -> NeuralRecording:
    """Read a Sensorium 2022 / neuralpredictors static data set (zip or unpacked folder).

    Args:
        path: the ``static....zip`` file or its unpacked folder.
        downsample: integer block-mean downsampling of the images (4: 144×256 -> 36×64).
        withhold_zero_test: set all-zero test / final_test trials to NaN (warns).
        area, pixels_per_degree, response_unit: attributes of the recording
            (pixels per degree at full resolution; divided by ``downsample``).

    Returns:
        A NeuralRecording: images ``[N, 1, H, W]`` (one per distinct ``frame_image_id``),
        responses ``[T, K]``, tiers from ``meta/trials/tiers.npy``.

    Raises:
        ReaderError: missing required array, truncated zip, unknown tiers, images and
            responses of different lengths, neuron metadata of the wrong length.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Sensorium data not found: {path}")
    tree = _Tree(path)
    try:
        img_idx = tree.indices("data/images")
        resp_idx = tree.indices("data/responses")
        if not resp_idx:
            raise ReaderError(f"{path}: missing required array 'data/responses/<i>.npy' (no trial files)")
        if not img_idx:
            raise ReaderError(f"{path}: missing required array 'data/images/<i>.npy' (no trial files)")
        if img_idx != resp_idx:
            fail(path, "data/images vs data/responses", "one image and one response file per trial",
                 f"{len(img_idx)} image files and {len(resp_idx)} response files")
        n = len(resp_idx)
        if resp_idx != list(range(n)):
            fail(path, "data/responses", f"files 0.npy .. {n - 1}.npy", f"indices {resp_idx[:3]}..{resp_idx[-3:]}")
        tiers = check_tiers(tree.where("meta/trials/tiers.npy"), "meta/trials/tiers.npy", tree.load("meta/trials/tiers.npy"))
        if len(tiers) != n:
            fail(path, "meta/trials/tiers.npy", f"{n} entries (one per trial file)", f"{len(tiers)}")
        frame_id = tree.load("meta/trials/frame_image_id.npy", required=False)
        if frame_id is not None:
            frame_id = np.asarray(frame_id).ravel()
            if len(frame_id) != n:
                fail(path, "meta/trials/frame_image_id.npy", f"{n} entries", f"{len(frame_id)}")
        responses = [np.asarray(tree.load(f"data/responses/{i}.npy"), dtype=np.float32).ravel() for i in range(n)]
        sizes = {r.shape[0] for r in responses}
        if len(sizes) != 1:
            fail(path, "data/responses", "the same number of neurons on every trial", f"sizes {sorted(sizes)}")
        responses = np.stack(responses)
        first = tree.load("data/images/0.npy")
        trial_images = np.empty((n, *np.squeeze(first).shape), dtype=first.dtype)
        for i in range(n):
            im = np.squeeze(tree.load(f"data/images/{i}.npy"))
            if im.shape != trial_images.shape[1:]:
                fail(path, f"data/images/{i}.npy", f"shape {trial_images.shape[1:]} like 0.npy", f"{im.shape}")
            trial_images[i] = im
        neurons = _neurons(tree.load, path, responses.shape[1])
    finally:
        tree.close()
    return _assemble(
        path, 'data/images', trial_images, responses, tiers, frame_id, neurons,
        withhold_zero_test=withhold_zero_test, downsample=downsample, area=area,
        response_unit=response_unit, pixels_per_degree=pixels_per_degree, source=f"sensorium:{path.name}",
    )


def read_static_hdf5(
    path: str | os.PathLike,
    *,
    downsample: int = 1,
    withhold_zero_test: bool = True,
    area: str = "V1",
    pixels_per_degree: float = 2.0,
    response_unit: str = "deconvolved",
) -> NeuralRecording:
    """Read the older single-file ``StaticImageSet`` HDF5.

    Layout: datasets ``images`` ``[T, 1, H, W]`` (or ``[T, H, W]``), ``responses``
    ``[T, K]``, ``tiers`` ``[T]``, optional ``behavior`` / ``pupil_center``; groups
    ``item_info`` (``frame_image_id`` …), ``neurons`` (``unit_ids``, ``area`` …),
    ``statistics``. Arguments as in :func:`read_sensorium`.
    """
    path = Path(path)
    with open_hdf5(path, "static HDF5", ReaderError) as f:
        for key in ("images", "responses", "tiers"):
            if key not in f:
                raise ReaderError(f"{path}: missing required array '/{key}'; found {sorted(f.keys())}")
        trial_images = f["images"][()]
        responses = np.asarray(f["responses"][()], dtype=np.float32)
        if responses.ndim != 2:
            fail(path, "responses", "[trials, neurons]", f"shape {responses.shape}")
        n = responses.shape[0]
        if len(trial_images) != n:
            fail(path, "images", f"{n} images (one per row of responses)", f"{len(trial_images)}")
        tiers = check_tiers(path, "tiers", f["tiers"][()])
        if len(tiers) != n:
            fail(path, "tiers", f"{n} entries", f"{len(tiers)}")
        frame_id = None
        if "item_info" in f and "frame_image_id" in f["item_info"]:
            frame_id = np.asarray(f["item_info/frame_image_id"][()]).ravel()
            if len(frame_id) != n:
                fail(path, "item_info/frame_image_id", f"{n} entries", f"{len(frame_id)}")

        def load(rel, required=False):
            key = rel.replace("meta/neurons/", "neurons/").removesuffix(".npy")
            return f[key][()] if key in f else None

        neurons = _neurons(load, path, responses.shape[1])
    return _assemble(
        path, 'images', trial_images, responses, tiers, frame_id, neurons,
        withhold_zero_test=withhold_zero_test, downsample=downsample, area=area,
        response_unit=response_unit, pixels_per_degree=pixels_per_degree, source=f"static-hdf5:{path.name}",
    )


def _assemble(path, images_field, trial_images, responses, tiers, frame_id, neurons, *, withhold_zero_test,
              downsample, area, response_unit, pixels_per_degree, source) -> NeuralRecording:
    """Per-trial images and responses of either Sensorium layout → a NeuralRecording."""
    if withhold_zero_test:
        withhold_zero_trials(path, responses, tiers)
    images = block_mean(to_uint8_images(path, images_field, trial_images), downsample)
    images, image_ids, trial_image = _dedupe_images(path, images, frame_id)
    return NeuralRecording(
        images=images,
        image_ids=image_ids,
        responses=responses,
        trial_image=trial_image,
        trial_tier=tiers,
        neurons=neurons,
        species="mouse",
        area=area,
        response_unit=response_unit,
        pixels_per_degree=pixels_per_degree / downsample,
        source=source,
        name=str(path),
    )
