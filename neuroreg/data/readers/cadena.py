"""Cadena et al. 2019 macaque V1 pickle (``cadena_ploscb_data.pkl``, or a zip holding it).

Keys used::

    images       (N, H, W)      values 0..255 (7250 × 140 × 140)
    responses    (R, N, K)      (repeat, image, neuron) spike counts, NaN where not recorded
    repetitions  (K,)           2 or 4 (optional)
    image_ids    (N,)           1-based (optional)
    subject_id   scalar or (K,) (optional)

Each (repeat, image) with at least one recorded neuron becomes a trial. The split
follows the paper: the last ``n_test`` images are ``test``; of the rest, whole groups
of five consecutive images go to ``validation`` with probability
``validation_fraction`` (seeded).

The pickle is unpickled only after its sha256 matches ``sha256`` or with
``trust_pickle=True`` (unpickling runs code).
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np

from ...imageops import block_mean
from ..recording import NeuralRecording
from ._common import (
    ReaderError,
    fail,
    load_trusted_pickle,
    split_groups,
    to_uint8_images,
)

PKL_NAME = "cadena_ploscb_data.pkl"


def _pickle_bytes(path: Path, raw: bytes) -> bytes:
    """The pickle inside ``raw`` (the bytes of ``path``): its zip member, or ``raw`` itself."""
    if zipfile.is_zipfile(io.BytesIO(raw)):
        try:
            with zipfile.ZipFile(io.BytesIO(raw)) as zf:
                members = [n for n in zf.namelist() if n.endswith(PKL_NAME) and not n.startswith("__MACOSX")]
                if len(members) != 1:
                    fail(path, PKL_NAME, f"exactly one member named {PKL_NAME} in the zip", f"{len(members)}")
                return zf.read(members[0])
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise ReaderError(f"{path}: not a readable zip file (truncated or corrupt: {err})") from err
    return raw


def read_cadena(
    path: str | os.PathLike,
    *,
    sha256: str | None = None,
    trust_pickle: bool = False,
    n_test: int = 1450,
    validation_fraction: float = 0.2,
    seed: int = 0,
    crop: int = 0,
    downsample: int = 1,
    pixels_per_degree: float = 35.0,
) -> NeuralRecording:
    """Read the Cadena 2019 data into a NeuralRecording.

    Args:
        path: the ``.pkl`` or a zip containing it.
        sha256: expected sha256 of ``path`` (the file as downloaded).
        trust_pickle: unpickle without a matching checksum.
        n_test: number of final images forming the test tier.
        validation_fraction: fraction of the remaining groups of five images used
            for validation.
        seed: seed of the validation draw.
        crop: pixels cropped on every side (the paper: 30).
        downsample: integer block-mean downsampling after cropping (the paper: 2).
        pixels_per_degree: at full resolution (the paper's 140 px span ~4 degrees:
            35 px/deg; approximate), divided by ``downsample``.

    Returns:
        NeuralRecording with images ``[N, 1, H, W]`` uint8, responses ``[T, K]`` spike
        counts (one trial per recorded (repeat, image)), tiers train/validation/test.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Cadena data not found: {path}")
    data = load_trusted_pickle(path, sha256=sha256, trust_pickle=trust_pickle,  # the checksum covers the file as downloaded
                               extract=lambda raw: _pickle_bytes(path, raw))
    if not isinstance(data, dict):
        fail(path, "<top level>", "a dict", type(data).__name__)
    for key in ("images", "responses"):
        if key not in data:
            raise ReaderError(f"{path}: missing required array '{key}'; found keys {sorted(map(str, data))}")
    images = np.asarray(data["images"])
    responses = np.asarray(data["responses"], dtype=np.float32)
    if responses.ndim != 3:
        fail(path, "responses", "(repeats, images, neurons)", f"shape {responses.shape}")
    _n_rep, n_img, n_neu = responses.shape
    if images.ndim not in (3, 4) or len(images) != n_img:
        fail(path, "images", f"{n_img} images (axis 1 of responses)", f"shape {images.shape}")
    if not 0 <= n_test <= n_img:
        fail(path, "n_test", f"0..{n_img}", n_test)
    images = to_uint8_images(path, "images", images)
    if crop:
        images = images[:, :, crop:-crop, crop:-crop]
    images = block_mean(images, downsample)
    image_ids = np.asarray(data.get("image_ids", np.arange(1, n_img + 1))).ravel()
    if len(image_ids) != n_img:
        fail(path, "image_ids", f"{n_img} entries", f"{len(image_ids)}")
    recorded = ~np.all(np.isnan(responses), axis=2)  # [R, N]
    rep_idx, img_idx = np.nonzero(recorded)
    order = np.lexsort((rep_idx, img_idx))  # trials grouped by image, repeats in order
    rep_idx, img_idx = rep_idx[order], img_idx[order]
    trial_resp = responses[rep_idx, img_idx]
    tiers = np.full(n_img, "train", dtype=object)
    tiers[n_img - n_test :] = "test"
    head = np.arange(n_img - n_test)
    tiers[head] = split_groups(head // 5, {"validation": validation_fraction}, seed=seed)
    neurons = {"ids": np.arange(n_neu)}
    if "repetitions" in data:
        reps = np.asarray(data["repetitions"]).ravel()
        if len(reps) != n_neu:
            fail(path, "repetitions", f"{n_neu} entries (one per neuron)", f"{len(reps)}")
        neurons["repetitions"] = reps.astype(np.int64)
    subject = data.get("subject_id")
    if subject is not None and np.ndim(subject) == 1 and len(subject) == n_neu:
        neurons["subject_id"] = np.asarray(subject)
    return NeuralRecording(
        images=images,
        image_ids=image_ids,
        responses=trial_resp,
        trial_image=img_idx,
        trial_tier=tiers[img_idx],
        neurons=neurons,
        species="macaque",
        area="V1",
        response_unit="spikes",
        pixels_per_degree=pixels_per_degree / downsample,
        source=f"cadena2019:{path.name}",
        name=str(path),
    )
