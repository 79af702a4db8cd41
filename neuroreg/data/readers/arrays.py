"""Plain arrays: ``.npz`` / ``.mat`` holding everything, or ``.npy`` responses + ``.npy`` images.

Accepted response layouts (``layout="auto"`` infers them from the number of images N):

- ``"NK"``  ``[N, K]`` mean responses, one trial per image;
- ``"RNK"`` ``[R, N, K]`` repeats, NaN-padded (a (repeat, image) that is all NaN is no trial);
- ``"NRK"`` ``[N, R, K]`` the same, image-first;
- ``"TK"``  ``[T, K]`` trials with a ``trial_image`` ``[T]`` index array.

Images ``[N, H, W]``, ``[N, C, H, W]`` or ``[N, H, W, C]``. Optional arrays: ``image_ids``
``[N]``, ``tiers`` ``[T]`` (strings; for NK/RNK/NRK also ``[N]`` per image), ``neuron_ids`` ``[K]``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..recording import NeuralRecording
from ._common import ReaderError, check_tiers, fail, split_groups, to_uint8_images

LAYOUTS = ("auto", "NK", "RNK", "NRK", "TK")


def _load_container(path: Path) -> dict[str, np.ndarray]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        if suffix == ".mat":
            from scipy.io import loadmat

            return {k: v for k, v in loadmat(path).items() if not k.startswith("__")}
        if suffix == ".npy":
            return {"responses": np.load(path, allow_pickle=False)}
    except (ValueError, OSError, EOFError) as err:
        raise ReaderError(f"{path}: not a readable {suffix} file ({err})") from err
    raise ReaderError(f"{path}: field '<file>': expected .npz, .mat or .npy, found {suffix!r}")


def read_arrays(
    path: str | os.PathLike,
    *,
    images: str | os.PathLike | None = None,
    layout: str = "auto",
    keys: dict[str, str] | None = None,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    species: str = "mouse",
    area: str = "V1",
    response_unit: str = "a.u.",
    pixels_per_degree: float = 1.0,
    source: str = "",
) -> NeuralRecording:
    """Read plain arrays into a NeuralRecording.

    Args:
        path: ``.npz`` / ``.mat`` with all arrays, or ``.npy`` responses.
        images: a separate ``.npy`` of images (required with a ``.npy`` ``path``).
        layout: responses layout (see module docstring).
        keys: rename map from our names (``images``, ``responses``, ``trial_image``,
            ``tiers``, ``image_ids``, ``neuron_ids``) to the container's keys.
        validation_fraction, test_fraction, seed: image-level split when no tiers are given.
        species, area, response_unit, pixels_per_degree, source: attributes.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"array file not found: {path}")
    if layout not in LAYOUTS:
        fail(path, "layout", f"one of {list(LAYOUTS)}", layout)
    arrays = _load_container(path)
    keys = {k: k for k in ("images", "responses", "trial_image", "tiers", "image_ids", "neuron_ids")} | dict(keys or {})

    def get(name, required=False):
        key = keys[name]
        if key in arrays:
            v = np.asarray(arrays[key])
            return v.ravel() if name in ("trial_image", "tiers", "image_ids", "neuron_ids") else v
        if required:
            raise ReaderError(f"{path}: missing required array '{key}'; found {sorted(arrays)}")
        return None

    if images is not None:
        ims = np.load(images, allow_pickle=False)
        im_src = Path(images)
    else:
        ims, im_src = get("images", required=True), path
    resp = np.asarray(get("responses", required=True), dtype=np.float32)
    ims = to_uint8_images(im_src, keys["images"], ims)
    n = len(ims)
    trial_image = get("trial_image")
    if layout == "auto":
        if trial_image is not None and resp.ndim == 2:
            layout = "TK"
        elif resp.ndim == 2:
            layout = "NK"
        elif resp.ndim == 3 and resp.shape[0] == n and resp.shape[1] != n:
            layout = "NRK"
        elif resp.ndim == 3 and resp.shape[1] == n and resp.shape[0] != n:
            layout = "RNK"
        else:
            fail(path, keys["responses"], f"a layout inferable from {n} images (or pass layout=)", f"shape {resp.shape}")
    per_image_tiers = None
    if layout == "TK":
        if trial_image is None:
            raise ReaderError(f"{path}: missing required array '{keys['trial_image']}' for layout TK")
        if resp.ndim != 2 or len(trial_image) != len(resp):
            fail(path, keys["trial_image"], f"{len(resp)} entries (rows of responses)", f"{len(trial_image)}")
        trial_image = trial_image.astype(np.int64)
    elif layout == "NK":
        if resp.ndim != 2 or len(resp) != n:
            fail(path, keys["responses"], f"[{n}, K] (one row per image)", f"shape {resp.shape}")
        trial_image = np.arange(n)
    else:
        if resp.ndim != 3:
            fail(path, keys["responses"], f"rank 3 for layout {layout}", f"shape {resp.shape}")
        if layout == "NRK":
            resp = resp.transpose(1, 0, 2)
        if resp.shape[1] != n:
            fail(path, keys["responses"], f"{n} images on the image axis ({layout})", f"shape {resp.shape}")
        rec = ~np.all(np.isnan(resp), axis=2)  # [R, N]
        rep, img = np.nonzero(rec)
        order = np.lexsort((rep, img))
        rep, img = rep[order], img[order]
        resp, trial_image = resp[rep, img], img
    tiers = get("tiers")
    if tiers is not None:
        tiers = check_tiers(path, keys["tiers"], tiers)
        if layout != "TK" and len(tiers) == n:
            per_image_tiers = tiers
            tiers = per_image_tiers[trial_image]
        elif len(tiers) != len(resp):
            fail(path, keys["tiers"], f"{len(resp)} (trials) or {n} (images) entries", f"{len(tiers)}")
    else:
        tiers = split_groups(trial_image, {"validation": validation_fraction, "test": test_fraction}, seed=seed)
    image_ids = get("image_ids")
    if image_ids is None:
        image_ids = np.arange(n)
    neuron_ids = get("neuron_ids")
    return NeuralRecording(
        images=ims,
        image_ids=image_ids,
        responses=resp,
        trial_image=trial_image,
        trial_tier=tiers,
        neurons={"ids": np.arange(resp.shape[1]) if neuron_ids is None else neuron_ids},
        species=species,
        area=area,
        response_unit=response_unit,
        pixels_per_degree=pixels_per_degree,
        source=source or f"arrays:{path.name}",
        name=str(path),
    )
