"""Plain arrays: ``.npz`` / ``.mat`` holding everything, or ``.npy`` responses + ``.npy`` images.

Accepted response layouts:

- ``"NK"``  ``[N, K]`` mean responses, one trial per image;
- ``"RNK"`` ``[R, N, K]`` repeats, NaN-padded (a (repeat, image) that is all NaN is no trial);
- ``"NRK"`` ``[N, R, K]`` the same, image-first;
- ``"TK"``  ``[T, K]`` trials with a ``trial_image`` ``[T]`` index array;
- ``"KN"``  ``[K, N]``, ``"KNR"`` ``[K, N, R]``, ``"NKR"`` ``[N, K, R]``: the same, other axis orders.

``layout="auto"`` takes the one layout whose image axis has N entries and refuses when
several fit (any array with repeats: ``[A, N, B]`` is RNK or KNR), naming them with the
sizes each implies. The layout used is written into the ``source`` attribute with its sizes
(e.g. "10 repeats x 640 images x 50 neurons").

Images ``[N, H, W]``, ``[N, C, H, W]`` or ``[N, H, W, C]``, or flattened ``[N, P]`` with an
``image_shape`` ``(C, H, W)`` or ``(H, W)`` (rows in C order: channel, row, column).
Optional arrays: ``image_ids`` ``[N]``, ``tiers`` ``[T]`` (strings; for all layouts but TK also
``[N]`` per image), ``neuron_ids`` ``[K]``.

A separate test set (``test_path``, with its own images) is appended: all its trials are
``test``. Nothing is assumed: trials without a tier are split only when a ``split`` is
asked for, and species, area, unit and pixels per degree have no defaults. Every choice
(files, split and seed, standardisation, unit spelling) is written into the recording's
``source`` attribute, so it is stored in the ``.h5`` file.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..recording import TIERS, NeuralRecording, RecordingError, response_unit as canonical_unit
from ._common import ReaderError, check_split, check_tiers, fail, parse_split, split_groups, to_uint8_images

__all__ = ["LAYOUTS", "KEYS", "SPLIT_HINT", "parse_split", "read_arrays"]

LAYOUTS = ("auto", "NK", "KN", "TK", "RNK", "NRK", "KNR", "NKR")
#: layouts with repeats -> the axes that make them [R, N, K]
REPEAT_LAYOUTS = {"RNK": (0, 1, 2), "NRK": (1, 0, 2), "KNR": (2, 1, 0), "NKR": (2, 0, 1)}
_AXIS = {"R": "repeats", "N": "images", "K": "neurons"}
KEYS = ("images", "responses", "trial_image", "tiers", "image_ids", "neuron_ids")
SPLIT_HINT = "split={'validation': 0.1, 'test': 0.2} (--split validation=0.1,test=0.2 --split-seed 0)"


def _load_container(path: Path, responses_key: str = "responses") -> dict[str, np.ndarray]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        if suffix == ".mat":
            from scipy.io import loadmat

            return {k: v for k, v in loadmat(path).items() if not k.startswith("__")}
        if suffix == ".npy":
            return {responses_key: np.load(path, allow_pickle=False)}
    except (ValueError, OSError, EOFError, NotImplementedError) as err:
        raise ReaderError(f"{path}: not a readable {suffix} file ({err})") from err
    raise ReaderError(f"{path}: field '<file>': expected .npz, .mat or .npy, found {suffix!r}")


def _load_file(path, field: str) -> np.ndarray:
    """One array from ``.npy`` (or tier labels from ``.txt``, one per line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{field}: file not found: {path}")
    if path.suffix.lower() == ".txt":
        return np.asarray([line.strip() for line in path.read_text().splitlines() if line.strip()], dtype=object)
    if path.suffix.lower() != ".npy":
        fail(path, field, "a .npy file" + (" or .txt (one label per line)" if field == "tiers" else ""), repr(path.suffix))
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ReaderError(f"{path}: field '{field}': not a readable .npy file without pickled objects ({err})") from err


def _shape_hint(p: int) -> str:
    for c in (1, 3):
        side = math.isqrt(p // c) if p % c == 0 else 0
        if side and side * side * c == p:
            return f" (e.g. --image-shape {side},{side})" if c == 1 else f" (e.g. --image-shape 3,{side},{side})"
    return ""


def _shape_images(src, field: str, ims: np.ndarray, image_shape: tuple[int, ...] | None) -> np.ndarray:
    """Reshape flattened ``[N, P]`` images to ``image_shape``; check unflattened ones against it."""
    ims = np.asarray(ims)
    if image_shape is not None:
        shape = tuple(int(s) for s in image_shape)
        if len(shape) not in (2, 3) or min(shape) < 1 or (len(shape) == 3 and shape[0] not in (1, 3)):
            raise ReaderError(f"field 'image_shape': expected (C, H, W) with C 1 or 3, or (H, W), found {image_shape}")
        if ims.ndim == 2:
            if ims.shape[1] != math.prod(shape):
                fail(src, field, f"{math.prod(shape)} values per image (image_shape {shape})", f"shape {ims.shape}")
            return ims.reshape(len(ims), *shape)
        found = ims.shape[1:] if ims.ndim != 4 or ims.shape[1] in (1, 3) else (ims.shape[3], *ims.shape[1:3])
        if tuple(found[-2:]) != shape[-2:] or (len(shape) == 3 and len(found) == 3 and found[0] != shape[0]):
            fail(src, field, f"images of shape {shape} (image_shape; it reshapes only flattened [N, P] images)", f"shape {ims.shape}")
        return ims
    if ims.ndim == 2:
        fail(
            src, field, "images [N, H, W], [N, C, H, W] or [N, H, W, C]; flattened [N, P] images need "
            "image_shape= (--image-shape C,H,W or H,W)", f"shape {ims.shape}{_shape_hint(ims.shape[1])}",
        )
    return ims


@dataclass
class _Part:
    """The trials of one group of files."""

    label: str  # the files, for messages and the source attribute
    where: Path  # the file named in errors about its trials
    images: np.ndarray
    image_ids: np.ndarray | None
    neuron_ids: np.ndarray | None
    responses: np.ndarray  # [T, K]
    trial_image: np.ndarray  # [T]
    tiers: np.ndarray | None  # [T] or None: not given
    tier_source: str
    layout: str  # the layout used and the sizes it implies


def _read_part(path, images, trial_image, tiers, *, layout: str, keys: dict, image_shape, role: str) -> _Part:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{role}: array file not found: {path}")
    arrays = _load_container(path, keys["responses"])

    def get(name, required=False):
        key = keys[name]
        if key in arrays:
            v = np.asarray(arrays[key])
            return v.ravel() if name in ("trial_image", "tiers", "image_ids", "neuron_ids") else v
        if required:
            raise ReaderError(f"{path}: missing required array '{key}'; found {sorted(arrays)}")
        return None

    label = [path.name]
    if images is not None:
        ims, im_src, im_field = _load_file(images, "images"), Path(images), "images"
        label.append(Path(images).name)
    elif path.suffix.lower() == ".npy":
        raise ReaderError(f"{path}: a .npy holds the responses only: pass its images (images= / --images FILE.npy)")
    else:
        ims, im_src, im_field = get("images", required=True), path, keys["images"]
    resp = np.asarray(get("responses", required=True))
    if resp.dtype.kind not in "iuf":
        fail(path, keys["responses"], "numeric responses", f"dtype {resp.dtype}")
    resp = resp.astype(np.float32)
    ims = to_uint8_images(im_src, im_field, _shape_images(im_src, im_field, ims, image_shape))
    n = len(ims)
    if trial_image is not None:
        if keys["trial_image"] in arrays:
            fail(path, keys["trial_image"], "one trial->image index (the file's or trial_image=), not both", "both")
        ti_src, ti_field = Path(trial_image), "trial_image"
        trial_image = _load_file(trial_image, "trial_image").ravel()
        label.append(ti_src.name)
    else:
        ti_src, ti_field = path, keys["trial_image"]
        trial_image = get("trial_image")
    asked = layout
    if layout == "auto":
        layout = _infer_layout(path, keys["responses"], resp.shape, n, trial_image is not None)
    used = layout
    if layout == "KN":
        if resp.ndim != 2:
            fail(path, keys["responses"], "rank 2 [K, N] for layout KN", f"shape {resp.shape}")
        resp, layout = resp.T, "NK"
    if layout == "TK":
        if trial_image is None:
            raise ReaderError(
                f"{path}: missing the trial->image index for layout TK: an array '{keys['trial_image']}' "
                "or trial_image= (--trial-image FILE.npy)"
            )
        if resp.ndim != 2 or len(trial_image) != len(resp):
            fail(ti_src, ti_field, f"{len(resp)} entries (rows of responses {path.name})", f"{len(trial_image)}")
        if trial_image.dtype.kind not in "iu" and not (trial_image.dtype.kind == "f" and np.all(trial_image == np.round(trial_image))):
            fail(ti_src, ti_field, "integer image indices", f"dtype {trial_image.dtype}")
        trial_image = trial_image.astype(np.int64)
        sizes = f"{len(resp)} trials x {resp.shape[1]} neurons"
        if len(trial_image) and (trial_image.min() < 0 or trial_image.max() >= n):
            fail(ti_src, ti_field, f"indices in [0, {n - 1}] ({n} images)", f"range [{trial_image.min()}, {trial_image.max()}]")
    elif trial_image is not None:
        fail(ti_src, ti_field, f"no trial->image index for layout {layout} (only for TK [T, K] responses)", f"{len(trial_image)} entries")
    elif layout == "NK":
        if resp.ndim != 2 or len(resp) != n:
            hint = " (neurons first? pass layout='KN' / --layout KN)" if resp.ndim == 2 and resp.shape[1] == n else ""
            fail(path, keys["responses"], f"[{n}, K] (one row per image)", f"shape {resp.shape}{hint}")
        trial_image = np.arange(n)
        sizes = f"{n} images x {resp.shape[1]} neurons, one trial each"
    else:
        if resp.ndim != 3:
            fail(path, keys["responses"], f"rank 3 for layout {layout}", f"shape {resp.shape}")
        resp = resp.transpose(*REPEAT_LAYOUTS[layout])  # -> [R, N, K]
        if resp.shape[1] != n:
            fail(path, keys["responses"], f"{n} images on the image axis ({layout})", f"shape {resp.shape}")
        sizes = f"{resp.shape[0]} repeats x {n} images x {resp.shape[2]} neurons"
        rec = ~np.all(np.isnan(resp), axis=2)  # [R, N]
        rep, img = np.nonzero(rec)
        order = np.lexsort((rep, img))
        rep, img = rep[order], img[order]
        resp, trial_image = resp[rep, img], img
    if tiers is not None:
        if keys["tiers"] in arrays:
            fail(path, keys["tiers"], "one set of tiers (the file's or tiers=), not both", "both")
        t_src, t_field = Path(tiers), "tiers"
        tier_values = _load_file(tiers, "tiers")
        label.append(t_src.name)
    else:
        t_src, t_field, tier_values = path, keys["tiers"], get("tiers")
    tier_source = f"tiers given by {t_src.name}" if tier_values is not None else ""
    if tier_values is not None:
        tier_values = check_tiers(t_src, t_field, tier_values)
        if layout != "TK" and len(tier_values) == n and len(tier_values) != len(resp):
            tier_values = tier_values[trial_image]
        elif len(tier_values) != len(resp):
            fail(t_src, t_field, f"{len(resp)} (trials) or {n} (images) entries", f"{len(tier_values)}")
    return _Part(
        label="+".join(label), where=path, images=ims, image_ids=get("image_ids"), neuron_ids=get("neuron_ids"),
        responses=resp, trial_image=trial_image, tiers=tier_values, tier_source=tier_source,
        layout=f"{path.name}: layout {used} ({'inferred' if asked == 'auto' else 'given'}): {sizes}",
    )


def _infer_layout(path, field: str, shape: tuple[int, ...], n: int, has_trial_image: bool) -> str:
    """The one layout that fits ``shape`` with ``n`` images; refuses when several (or none) do."""
    if has_trial_image and len(shape) == 2:
        return "TK"
    if len(shape) == 2:
        fits = [lay for lay in ("NK", "KN") if shape[lay.index("N")] == n]
    elif len(shape) == 3:
        fits = [lay for lay in REPEAT_LAYOUTS if shape[lay.index("N")] == n]
    else:
        fits = []
    if len(fits) == 1:
        return fits[0]
    if not fits and len(shape) == 2:
        fail(path, field, f"[{n}, K] (one row per image), [K, {n}], or [T, K] trials with a trial->image index "
             "(trial_image= / --trial-image)", f"shape {shape}")
    if not fits:
        fail(path, field, f"responses [N, K], [K, N], [T, K] or with repeats, one axis of N = {n} images", f"shape {shape}")
    options = "; ".join(f"{lay} = {' x '.join(f'{s} {_AXIS[a]}' for s, a in zip(shape, lay))}" for lay in fits)
    fail(path, field, f"one layout that the {n} images settle; it could be {options}: pass layout= (--layout "
         f"{'|'.join(fits)})", f"shape {shape}")


def _content_keys(images: np.ndarray) -> np.ndarray:
    """``[N]`` one key per distinct image content (exact duplicates share a key)."""
    digests = [hashlib.blake2b(np.ascontiguousarray(im).tobytes(), digest_size=16).hexdigest() for im in images]
    return np.unique(np.asarray(digests), return_inverse=True)[1]


def read_arrays(
    path: str | os.PathLike,
    *,
    species: str,
    area: str,
    response_unit: str,
    pixels_per_degree: float,
    images: str | os.PathLike | None = None,
    trial_image: str | os.PathLike | None = None,
    tiers: str | os.PathLike | None = None,
    test_path: str | os.PathLike | None = None,
    test_images: str | os.PathLike | None = None,
    test_trial_image: str | os.PathLike | None = None,
    layout: str = "auto",
    test_layout: str = "auto",
    keys: dict[str, str] | None = None,
    image_shape: tuple[int, ...] | None = None,
    split: dict[str, float] | None = None,
    split_seed: int = 0,
    standardize: bool = False,
    source: str = "",
) -> NeuralRecording:
    """Read plain arrays into a NeuralRecording (what ``neuroreg data convert --arrays/--responses`` runs).

    Args:
        path: ``.npz`` / ``.mat`` with all arrays, or ``.npy`` responses.
        species, area: what was recorded (e.g. ``"macaque"``, ``"V4"``); no defaults.
        response_unit: one of :data:`~neuroreg.data.recording.RESPONSE_UNITS` or an alias
            (:func:`~neuroreg.data.recording.response_unit`).
        pixels_per_degree: image pixels per degree of visual angle, as shown.
        images: a separate ``.npy`` of images (required with a ``.npy`` ``path``).
        trial_image: a separate ``.npy`` ``[T]`` trial -> image index (layout TK).
        tiers: a separate ``.npy`` (strings) or ``.txt`` (one label a line) of tiers,
            ``[T]`` per trial or ``[N]`` per image.
        test_path, test_images, test_trial_image: a separate test set, read as ``path``,
            ``images``, ``trial_image``; its images are appended, its trials are ``test``.
        layout, test_layout: layout of the responses and of the test set's responses (see
            the module docstring); ``auto`` takes the one that fits, or refuses.
        keys: rename map from our names (``images``, ``responses``, ``trial_image``,
            ``tiers``, ``image_ids``, ``neuron_ids``) to the container's keys.
        image_shape: ``(C, H, W)`` or ``(H, W)`` of flattened ``[N, P]`` images.
        split: fractions of held-out tiers, e.g. ``{"validation": 0.1, "test": 0.2}``, for
            a seeded split of the images of the trials that have no tier (the rest is
            train; byte-identical images share a tier). Required when some trials have
            no tier, refused when all have one.
        split_seed: seed of that split.
        standardize: z-score each neuron with the mean and standard deviation of its
            train-tier responses (for a Gaussian loss); the two are kept per neuron as
            ``neurons/response_mean`` and ``neurons/response_std``.
        source: a name for the data (default: ``arrays:<files>``); the choices made here
            are appended.

    Raises:
        FileNotFoundError: a file does not exist.
        ReaderError: a file's arrays do not fit (names the file and array), no tiers and
            no split, or a bad split / image shape / unit.
    """
    for name, value in (("layout", layout), ("test_layout", test_layout)):
        if value not in LAYOUTS:
            fail(path, name, f"one of {list(LAYOUTS)}", value)
    unknown = sorted(set(keys or {}) - set(KEYS))
    if unknown:
        raise ReaderError(f"field 'keys': expected names among {list(KEYS)}, found {unknown}")
    keys = {k: k for k in KEYS} | dict(keys or {})
    for name, value in (("species", species), ("area", area)):
        if not isinstance(value, str) or not value.strip():
            raise ReaderError(f"field '{name}': expected what was recorded (e.g. species 'macaque', area 'V4'), found {value!r}")
    try:
        unit = canonical_unit(response_unit)
    except RecordingError as err:
        raise ReaderError(str(err)) from None
    if split is not None:
        split = check_split(split)
    parts = [_read_part(path, images, trial_image, tiers, layout=layout, keys=keys, image_shape=image_shape, role="path")]
    if test_path is not None:
        test = _read_part(test_path, test_images, test_trial_image, None, layout=test_layout, keys=keys,
                          image_shape=image_shape, role="test_path")
        if test.tiers is not None:
            fail(test.where, keys["tiers"], "no tiers in the test set (all its trials are 'test')", "a tiers array")
        test.tiers = np.full(len(test.responses), "test", dtype=object)
        test.tier_source = f"tier 'test' for all trials of {test.label}"
        parts.append(test)
    elif test_images is not None or test_trial_image is not None:
        raise ReaderError("field 'test_path': test_images / test_trial_image need the test responses (test_path= / --test-responses)")
    main = parts[0]
    for part in parts[1:]:
        if part.images.shape[1:] != main.images.shape[1:]:
            fail(part.where, keys["images"], f"images of shape {main.images.shape[1:]} (as in {main.label})", f"{part.images.shape[1:]}")
        if part.responses.shape[1] != main.responses.shape[1]:
            fail(part.where, keys["responses"], f"{main.responses.shape[1]} neurons (as in {main.label})", f"{part.responses.shape[1]}")
        if (part.neuron_ids is None) != (main.neuron_ids is None) or (
            part.neuron_ids is not None and not np.array_equal(part.neuron_ids, main.neuron_ids)
        ):
            fail(part.where, keys["neuron_ids"], f"the same neuron ids as {main.label}", "other (or missing) ids")
        if (part.image_ids is None) != (main.image_ids is None):
            fail(part.where, keys["image_ids"], f"image ids in every file or none (as in {main.label})", "a mismatch")

    # ---- join the parts: images appended, trial indices shifted
    float_images = any(p.images.dtype != np.uint8 for p in parts)
    ims = np.concatenate([p.images.astype(np.float32) / 255.0 if float_images and p.images.dtype == np.uint8 else p.images
                          for p in parts])
    offsets = np.cumsum([0] + [len(p.images) for p in parts])
    trial_image = np.concatenate([p.trial_image + off for p, off in zip(parts, offsets)])
    resp = np.concatenate([p.responses for p in parts])
    image_ids = None if main.image_ids is None else np.concatenate([p.image_ids for p in parts])
    tier = np.concatenate([p.tiers if p.tiers is not None else np.full(len(p.responses), None, dtype=object) for p in parts])

    # ---- tiers: given, or an explicit split of what has none
    notes = [p.layout for p in parts] + [p.tier_source for p in parts if p.tier_source]
    missing = np.asarray([t is None for t in tier])
    content = _content_keys(ims)
    if missing.any():
        if split is None:
            raise ReaderError(
                f"{main.where}: no tiers for its {int(missing.sum())} trials, and no split was asked for: give the tiers "
                f"(a '{keys['tiers']}' array [T] or [N] in the file, tiers= / --tiers FILE.npy, or a separate test set: "
                f"test_path= / --test-responses) or ask for a seeded split of its images: {SPLIT_HINT}"
            )
        groups = content[trial_image[missing]]
        tier[missing] = split_groups(groups, split, seed=split_seed)
        n_groups = len(np.unique(groups))
        counts = {t: int(len(np.unique(groups[tier[missing] == t]))) for t in split}
        empty = [t for t, c in counts.items() if c == 0]
        if empty:
            raise ReaderError(f"field 'split': {split} of {n_groups} distinct images leaves no image in {empty}; use larger fractions")
        spec = ",".join(f"{t}={f:g}" for t, f in split.items())
        notes.append(f"split {spec} (seed {split_seed}) of the {n_groups} distinct images of {main.label} "
                     f"without tiers ({', '.join(f'{t} {c}' for t, c in counts.items())}, train the rest)")
    elif split is not None:
        raise ReaderError(
            f"field 'split': every trial already has a tier ({'; '.join(p.tier_source for p in parts)}); drop the split "
            "(--split) or the given tiers"
        )
    tier = tier.astype(str).astype(object)
    # byte-identical images across tiers: the held-out score would be inflated
    shared = set(content[trial_image[tier == "train"]])
    for t in TIERS[1:]:
        leak = sorted(set(content[trial_image[tier == t]]) & shared)
        if leak:
            warnings.warn(f"{main.where}: {len(leak)} images of tier '{t}' are byte-identical to training images", stacklevel=2)

    neuron_ids = np.arange(resp.shape[1]) if main.neuron_ids is None else main.neuron_ids
    neurons = {"ids": neuron_ids}
    if standardize:
        train = tier == "train"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, std = np.nanmean(resp[train], axis=0), np.nanstd(resp[train], axis=0)
        flat = ~(std > 0)
        if flat.any():
            fail(main.where, keys["responses"], "neurons that vary over the training trials (to standardise)",
                 f"{int(flat.sum())} constant or unrecorded neurons (ids {neuron_ids[flat][:5].tolist()})")
        resp = (resp - mean) / std
        neurons |= {"response_mean": mean.astype(np.float32), "response_std": std.astype(np.float32)}
        notes.append("responses standardised per neuron: (r - response_mean) / response_std, both over the train tier, "
                     "kept in neurons/")
    if unit != response_unit:
        notes.append(f"response unit {response_unit!r} read as {unit!r}")
    label = " + ".join(p.label for p in parts)
    return NeuralRecording(
        images=ims,
        image_ids=np.arange(len(ims)) if image_ids is None else image_ids,
        responses=resp,
        trial_image=trial_image,
        trial_tier=tier,
        neurons=neurons,
        species=species,
        area=area,
        response_unit=unit,
        pixels_per_degree=pixels_per_degree,
        source="; ".join([source or f"arrays:{label}", *notes]),
        name=str(path),
    )
