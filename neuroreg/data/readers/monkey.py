"""sinzlab monkey session pickles (nnvision style) with a folder of ``.npy`` images.

Keys used::

    subject_id, session_id
    training_responses   (T_train, K)  or (K, time_bins, T_train)
    testing_responses    (T_test, K)   or (K, time_bins, T_test)
    training_image_ids   (T_train,)    one image id per trial (repeats share an id)
    testing_image_ids    (T_test,)
    unit_ids             (K,)          optional

Images are ``<image_dir>/<zero-padded id>.npy`` (e.g. ``000123.npy``), each ``(H, W)``
or ``(C, H, W)``. Time-binned responses are summed over ``time_bins`` (default all).
The pickle is unpickled only after its sha256 matches ``sha256`` or with
``trust_pickle=True``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..recording import NeuralRecording
from ._common import (
    ReaderError,
    fail,
    load_trusted_pickle,
    split_groups,
    to_uint8_images,
)


def _trials(path, key: str, r: np.ndarray, n_ids: int, time_bins) -> np.ndarray:
    r = np.asarray(r, dtype=np.float32)
    if r.ndim == 3:  # (neurons, time_bins, trials)
        sel = r if time_bins is None else r[:, list(time_bins), :]
        r = sel.sum(axis=1).T
    if r.ndim != 2:
        fail(path, key, "(trials, neurons) or (neurons, time_bins, trials)", f"shape {r.shape}")
    if r.shape[0] != n_ids and r.shape[1] == n_ids:
        r = r.T
    if r.shape[0] != n_ids:
        fail(path, key, f"{n_ids} trials (one per image id)", f"shape {r.shape}")
    return r


def read_monkey_session(
    path: str | os.PathLike,
    *,
    image_dir: str | os.PathLike,
    sha256: str | None = None,
    trust_pickle: bool = False,
    time_bins: list[int] | None = None,
    validation_fraction: float = 0.2,
    seed: int = 0,
    area: str = "V1",
    pixels_per_degree: float = 1.0,
    response_unit: str = "spikes",
) -> NeuralRecording:
    """Read one monkey session pickle and the images it refers to.

    Args:
        path: the session ``.pkl``.
        image_dir: folder with ``<id>.npy`` image files.
        sha256, trust_pickle: see :func:`~neuroreg.data.readers._common.load_trusted_pickle`.
        time_bins: indices of time bins summed for time-binned responses (None: all).
        validation_fraction, seed: training images drawn into ``validation``.
        area, pixels_per_degree, response_unit: attributes of the recording.

    Returns:
        NeuralRecording: training trials -> train / validation, testing trials -> test.
    """
    path, image_dir = Path(path), Path(image_dir)
    if not path.exists():
        raise FileNotFoundError(f"session pickle not found: {path}")
    data = load_trusted_pickle(path, sha256=sha256, trust_pickle=trust_pickle)
    if not isinstance(data, dict):
        fail(path, "<top level>", "a dict", type(data).__name__)
    for key in ("training_responses", "testing_responses", "training_image_ids", "testing_image_ids"):
        if key not in data:
            raise ReaderError(f"{path}: missing required array '{key}'; found keys {sorted(map(str, data))}")
    train_ids = np.asarray(data["training_image_ids"]).ravel().astype(np.int64)
    test_ids = np.asarray(data["testing_image_ids"]).ravel().astype(np.int64)
    r_train = _trials(path, "training_responses", data["training_responses"], len(train_ids), time_bins)
    r_test = _trials(path, "testing_responses", data["testing_responses"], len(test_ids), time_bins)
    if r_train.shape[1] != r_test.shape[1]:
        fail(path, "testing_responses", f"{r_train.shape[1]} neurons like training_responses", r_test.shape[1])
    all_ids = np.concatenate([train_ids, test_ids])
    ids, trial_image = np.unique(all_ids, return_inverse=True)
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image folder not found: {image_dir}")
    by_id = {}
    for p in image_dir.glob("*.npy"):
        if p.stem.isdigit():
            by_id[int(p.stem)] = p
    missing = [int(i) for i in ids if int(i) not in by_id]
    if missing:
        fail(image_dir, "<images>", "an <id>.npy file for every image id", f"{len(missing)} missing, e.g. {missing[:3]}")
    images = [np.load(by_id[int(i)], allow_pickle=False) for i in ids]
    if len({im.shape for im in images}) != 1:
        fail(image_dir, "<images>", "images of one shape", sorted({im.shape for im in images})[:3])
    images = to_uint8_images(image_dir, "<images>", np.stack(images))
    tiers = np.empty(len(all_ids), dtype=object)
    tiers[: len(train_ids)] = split_groups(train_ids, {"validation": validation_fraction}, seed=seed)
    tiers[len(train_ids) :] = "test"
    overlap = np.intersect1d(train_ids, test_ids)
    if len(overlap):
        fail(path, "testing_image_ids", "ids disjoint from training_image_ids", f"{len(overlap)} shared, e.g. {overlap[:3]}")
    k = r_train.shape[1]
    unit_ids = np.asarray(data.get("unit_ids", np.arange(k))).ravel()
    if len(unit_ids) != k:
        fail(path, "unit_ids", f"{k} entries", len(unit_ids))
    return NeuralRecording(
        images=images,
        image_ids=ids,
        responses=np.concatenate([r_train, r_test]),
        trial_image=trial_image.ravel(),
        trial_tier=tiers,
        neurons={"ids": unit_ids},
        species="macaque",
        area=area,
        response_unit=response_unit,
        pixels_per_degree=pixels_per_degree,
        source=f"monkey-session:{data.get('session_id', path.stem)}",
        name=str(path),
    )
