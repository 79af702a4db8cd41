"""Cowley et al. 2023 macaque V4 sessions (``cowleygroup/V4_compact_models``, ``data_V4_responses/``).

One session (its id is the recording date, e.g. ``210325``) is up to three files::

    images/images_<session>.zip                       image0001.jpg ... 112x112 RGB JPEGs
    responses_repeat_averaged/responses_<session>.npy [neurons, images]   mean spike count
    responses_raw/responses_<session>.npy             [neurons, images, repeats]  NaN-padded

Spike counts are in a 100 ms window. Image ``imageNNNN.jpg`` goes with response column
``NNNN - 1``; members are looked up by name (some zips are not stored in index order,
some keep their members in a subfolder).

Trials: with the raw file, one trial per recorded (image, repeat), so repeat-based
metrics (oracle, split-half ceiling) work; with only the averaged file, one trial per
image, and the recording's ``source`` says the responses are repeat-averaged. With
both, the raw file is used and its NaN-aware mean over repeats must equal the averaged
file.

Split by image content, never by index (several sessions contain the same images, and
some contain an image twice or a slightly changed copy of it):

1. each image's key is the sha256 of its decoded pixels; images with the same key are
   exact duplicates;
2. near-duplicates: images whose gray 28x28 thumbnails (4x4 block means) correlate
   above ``near_duplicate_threshold`` are joined (union-find) into one group with their
   exact duplicates;
3. each pixel key maps to a number ``u`` in [0, 1) by hashing ``(seed, key)``; ``u <
   test_fraction`` is ``test``, ``u < test_fraction + validation_fraction`` is
   ``validation``, else ``train``. A group takes the tier of its member with the
   smallest pixel key (lexicographic), so tiers keep the given fractions whatever the
   group sizes.

An image's tier thus depends on its pixels (and on the near-duplicates present in the
same session) only, not on its index or session: byte-identical images shared by two
sessions fall in the same tier in both. The split is logged (counts per tier and every
duplicate group) at WARNING level, and summarised in the recording's ``source``.

``pixels_per_degree`` is not stated in the source repository's files: the caller
gives it (a manifest gives it with its provenance); the value is recorded in
``source`` as given by the caller.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np

from ...imageops import block_mean
from ..recording import NeuralRecording
from ._common import ReaderError, fail

log = logging.getLogger(__name__)

CITATION = (
    "Cowley, B. R., Stan, P. L., Pillow, J. W. & Smith, M. A. (2023). Compact deep neural network "
    "models of visual cortex. bioRxiv 2023.11.22.568315."
)
LICENSE = "GPL-3.0 (the source repository's license; no separate data license)"
#: the authors' per-channel means (RGB, 0..255) subtracted from their models' 112x112 inputs
CHANNEL_MEANS = (116.222, 109.270, 100.381)
_MEMBER = re.compile(r"^image(\d+)\.jpe?g$", re.IGNORECASE)
#: where a session's files lie in the source repository's ``data_V4_responses/`` folder
SOURCE_LAYOUT = {
    "images": "images/images_{session}.zip",
    "responses": "responses_repeat_averaged/responses_{session}.npy",
    "raw_responses": "responses_raw/responses_{session}.npy",
}


def session_files(folder: str | os.PathLike, session: str) -> dict[str, Path]:
    """``{"images", "responses", "raw_responses"}``: the paths of ``session``'s files in a copy of the
    source's ``data_V4_responses/`` folder (:data:`SOURCE_LAYOUT`), whether they exist or not."""
    return {role: Path(folder) / rel.format(session=session) for role, rel in SOURCE_LAYOUT.items()}


class DroppedNeuronsWarning(UserWarning):
    """Neurons without a single recorded response were dropped."""


# ----------------------------------------------------------------------- files
def _load_npy(path: Path, field: str, rank: int, layout: str) -> np.ndarray:
    if not path.exists():
        raise FileNotFoundError(f"Cowley 2023 {field} file not found: {path}")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ReaderError(f"{path}: field '{field}': not a readable .npy array ({err})") from err
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
        fail(path, field, f"a numeric {layout} array", f"dtype {getattr(arr, 'dtype', type(arr).__name__)}")
    if arr.ndim != rank:
        fail(path, field, f"rank {rank} {layout}", f"shape {arr.shape}")
    arr = arr.astype(np.float64)
    if np.isinf(arr).any():
        fail(path, field, "finite spike counts or NaN", f"{int(np.isinf(arr).sum())} inf values")
    if np.nanmin(arr, initial=0.0) < 0:
        fail(path, field, "non-negative spike counts", f"minimum {np.nanmin(arr):.3g}")
    return arr


def _image_members(path: Path, zf: zipfile.ZipFile) -> dict[int, str]:
    """``{image number: member name}`` of the JPEG members, wherever they are in the zip."""
    found: dict[int, str] = {}
    for info in zf.infolist():
        if info.is_dir() or "__MACOSX" in info.filename.split("/"):
            continue
        base = info.filename.rsplit("/", 1)[-1]
        if base.startswith("._"):
            continue
        m = _MEMBER.match(base)
        if m is None:
            continue
        number = int(m.group(1))
        if number in found:
            fail(path, base, "one member per image number", f"two members {found[number]!r} and {info.filename!r}")
        found[number] = info.filename
    return found


def read_images(path: str | os.PathLike, n_images: int) -> np.ndarray:
    """``image0001.jpg ... image<n_images>.jpg`` of the zip at ``path`` as ``[N, 3, H, W]`` uint8.

    Raises:
        ReaderError: unreadable (truncated, corrupt) zip or JPEG, a JPEG count other than
            ``n_images``, a missing member, or images of different sizes.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Cowley 2023 image zip not found: {path}")
    from PIL import Image, UnidentifiedImageError

    try:
        with zipfile.ZipFile(path) as zf:
            members = _image_members(path, zf)
            if len(members) != n_images:
                fail(path, "image members", f"{n_images} JPEG images named imageNNNN.jpg (one per response column)",
                     f"{len(members)} JPEG images")
            images = []
            for number in range(1, n_images + 1):
                name = members.get(number)
                if name is None:
                    fail(path, f"image{number:04d}.jpg", f"a member for response column {number - 1}",
                         f"no such member (image numbers run {min(members)}..{max(members)})")
                try:
                    with Image.open(io.BytesIO(zf.read(name))) as im:
                        arr = np.asarray(im.convert("RGB"))
                except (UnidentifiedImageError, OSError, SyntaxError) as err:
                    raise ReaderError(f"{path}: field '{name}': expected a readable JPEG image, found {err}") from err
                if images and arr.shape != images[0].shape:
                    fail(path, name, f"an image of size {images[0].shape[:2]} like {members[1]!r}", f"size {arr.shape[:2]}")
                images.append(arr)
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as err:
        raise ReaderError(f"{path}: not a readable zip file (truncated or corrupt: {err})") from err
    except OSError as err:  # CRC errors and short reads of a damaged member
        if isinstance(err, FileNotFoundError):
            raise
        raise ReaderError(f"{path}: not a readable zip file (truncated or corrupt: {err})") from err
    return np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2))


# ----------------------------------------------------------------------- split
def pixel_keys(images: np.ndarray) -> np.ndarray:
    """``[N]`` sha256 hex digests of each image's decoded pixels (shape included)."""
    return np.asarray(
        [hashlib.sha256(str(im.shape).encode() + np.ascontiguousarray(im).tobytes()).hexdigest() for im in images], dtype=object
    )


def near_duplicate_pairs(images: np.ndarray, threshold: float, block: int = 4) -> np.ndarray:
    """``[P, 2]`` index pairs ``i < j`` whose gray thumbnails correlate above ``threshold``.

    Thumbnails are ``block``x``block`` block means of the luminance (RGB averaged); the
    correlation is Pearson's over their pixels. Constant thumbnails correlate with nothing.
    """
    n, _c, h, w = images.shape
    hb, wb = h // block, w // block
    gray = images[:, :, : hb * block, : wb * block].astype(np.float32).mean(axis=1)
    thumbs = gray.reshape(n, hb, block, wb, block).mean(axis=(2, 4)).reshape(n, -1)
    thumbs -= thumbs.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(thumbs, axis=1, keepdims=True)
    thumbs = np.divide(thumbs, norm, out=np.zeros_like(thumbs), where=norm > 1e-6)
    corr = thumbs @ thumbs.T
    i, j = np.nonzero(np.triu(corr > threshold, k=1))
    return np.stack([i, j], axis=1)


def _groups(n: int, pairs) -> np.ndarray:
    """Union-find over ``pairs``: ``[n]`` group id (the smallest member index) per item."""
    parent = np.arange(n)

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in pairs:
        ra, rb = root(int(a)), root(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.asarray([root(a) for a in range(n)])


def content_unit(keys, seed: int) -> np.ndarray:
    """``[N]`` numbers in [0, 1) from ``sha256(seed, key)``: the same key gives the same number everywhere."""
    return np.asarray([int(hashlib.sha256(f"{seed}:{k}".encode()).hexdigest()[:15], 16) / 16**15 for k in keys])


def content_split(
    images: np.ndarray,
    *,
    validation_fraction: float,
    test_fraction: float,
    seed: int,
    near_duplicate_threshold: float,
) -> tuple[np.ndarray, dict]:
    """Tiers of ``[N, C, H, W]`` images by content; duplicates and near-duplicates share one.

    Returns:
        ``(tiers [N], report)`` with ``report`` holding ``counts`` (images per tier),
        ``exact`` (lists of image indices with identical pixels) and ``near`` (groups
        joined by near-duplicate pairs, as image indices) and ``pairs`` (their number).
    """
    keys = pixel_keys(images)
    _, first = np.unique(keys.astype(str), return_inverse=True)
    pairs = [(a, b) for a, b in near_duplicate_pairs(images, near_duplicate_threshold) if keys[a] != keys[b]]
    exact_pairs = []
    for key_id in np.unique(first):
        members = np.flatnonzero(first == key_id)
        exact_pairs += [(members[0], m) for m in members[1:]]
    group = _groups(len(images), exact_pairs + pairs)
    u = content_unit(keys, seed)
    own = np.where(u < test_fraction, "test", np.where(u < test_fraction + validation_fraction, "validation", "train"))
    tiers = np.empty(len(images), dtype=object)
    near_groups, exact_groups = [], []
    for g in np.unique(group):
        members = np.flatnonzero(group == g)
        tiers[members] = own[min(members, key=lambda m: keys[m])]
        if len(members) > 1:
            if len(set(keys[members])) == 1:
                exact_groups.append(members.tolist())
            else:
                near_groups.append(members.tolist())
    counts = {t: int((tiers == t).sum()) for t in ("train", "validation", "test")}
    report = {"counts": counts, "exact": exact_groups, "near": near_groups, "pairs": len(pairs)}
    return tiers, report


def _describe(groups: list[list[int]], limit: int = 12) -> str:
    shown = ", ".join("{" + ",".join(str(i + 1) for i in g) + "}" for g in groups[:limit])
    return shown + (f", ... ({len(groups) - limit} more)" if len(groups) > limit else "")


# ---------------------------------------------------------------------- reader
def read_cowley2023(
    images: str | os.PathLike,
    responses: str | os.PathLike | None = None,
    raw_responses: str | os.PathLike | None = None,
    *,
    session: str,
    pixels_per_degree: float,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    near_duplicate_threshold: float = 0.9,
    downsample: int = 1,
    atol: float = 1e-6,
) -> NeuralRecording:
    """Read one Cowley et al. 2023 V4 session into a trial-level NeuralRecording.

    Args:
        images: the session's zip of ``imageNNNN.jpg``.
        responses: repeat-averaged ``[neurons, images]`` ``.npy`` (optional if ``raw_responses``).
        raw_responses: ``[neurons, images, repeats]`` NaN-padded ``.npy`` (optional if ``responses``).
        session: the session id (recording date, e.g. ``"210325"``); neuron ids are
            ``"<session>/<index>"``.
        pixels_per_degree: of the 112x112 images (before ``downsample``). The source files
            do not state it: give the value and its provenance (a manifest's comment).
        validation_fraction, test_fraction: expected fraction of images per held-out tier
            (see the module docstring: tiers are drawn per image content).
        seed: seed of the content hash; the same seed gives the same tier to the same
            image in every session.
        near_duplicate_threshold: thumbnail correlation above which two images are
            near-duplicates (share a tier).
        downsample: integer block-mean downsampling of the images (2: 56x56);
            ``pixels_per_degree`` is divided by it. The split is computed at full
            resolution.
        atol: tolerance of the check that the raw file's mean equals the averaged file.

    Returns:
        NeuralRecording: images ``[N, 3, H, W]`` uint8, ``image_ids`` the image numbers
        ``1..N``, spike counts per trial, tiers train/validation/test, species macaque,
        area V4.

    Raises:
        ReaderError: a file of the wrong layout (names the file and the field).
        FileNotFoundError: a named file does not exist.
        ValueError: bad options.
    """
    if responses is None and raw_responses is None:
        raise ValueError(f"read_cowley2023: session {session}: expected 'responses' and/or 'raw_responses', found neither")
    for name, frac in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"read_cowley2023: '{name}': expected a value in [0, 1), found {frac}")
    if validation_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"read_cowley2023: 'validation_fraction' + 'test_fraction': expected < 1 (some training images), "
            f"found {validation_fraction + test_fraction}"
        )
    if pixels_per_degree is None or not np.isfinite(float(pixels_per_degree)) or float(pixels_per_degree) <= 0:
        raise ValueError(f"read_cowley2023: 'pixels_per_degree': expected a positive number (the files do not state it), found {pixels_per_degree}")
    if int(downsample) < 1:
        raise ValueError(f"read_cowley2023: 'downsample': expected an int >= 1, found {downsample}")
    images_path = Path(images)
    avg = raw = None
    if responses is not None:
        avg = _load_npy(Path(responses), "responses", 2, "[neurons, images]")
    if raw_responses is not None:
        raw = _load_npy(Path(raw_responses), "raw_responses", 3, "[neurons, images, repeats]")
    if raw is not None and avg is not None:
        if raw.shape[:2] != avg.shape:
            fail(raw_responses, "raw_responses", f"[neurons, images] = {list(avg.shape)} like {Path(responses).name}",
                 f"shape {raw.shape}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(raw, axis=2)
        same_nan = np.array_equal(np.isnan(mean), np.isnan(avg))
        diff = np.nanmax(np.abs(mean - avg)) if same_nan and np.isfinite(avg).any() else 0.0
        if not same_nan or diff > atol:
            found = "NaN at other entries" if not same_nan else f"largest difference {diff:.3g}"
            fail(raw_responses, "raw_responses", f"a NaN-aware mean over repeats equal to {Path(responses).name}", found)
    n_neurons, n_images = (raw if raw is not None else avg).shape[:2]
    source_file = Path(raw_responses if raw is not None else responses)
    pixels = read_images(images_path, n_images)

    # neurons that were never recorded
    per_neuron = raw.reshape(n_neurons, -1) if raw is not None else avg
    dead = np.isnan(per_neuron).all(axis=1)
    keep = np.flatnonzero(~dead)
    if dead.all():
        fail(source_file, "responses" if raw is None else "raw_responses", "some recorded (non-NaN) responses", "only NaN")
    if dead.any():
        warnings.warn(
            f"{source_file}: dropping {int(dead.sum())} of {n_neurons} neurons whose responses are all NaN "
            f"(indices {np.flatnonzero(dead)[:10].tolist()}{' ...' if dead.sum() > 10 else ''})",
            DroppedNeuronsWarning,
            stacklevel=2,
        )

    # trials
    if raw is not None:
        raw = raw[keep]
        recorded = ~np.isnan(raw).all(axis=0)  # [images, repeats]
        img_idx, rep_idx = np.nonzero(recorded)  # grouped by image, repeats in order
        trial_resp = raw[:, img_idx, rep_idx].T
        kind = f"trial-level ({int(recorded.sum())} trials, {int(recorded.sum(axis=1).min())}-{int(recorded.sum(axis=1).max())} repeats per image)"
    else:
        avg = avg[keep]
        img_idx = np.flatnonzero(~np.isnan(avg).all(axis=0))
        trial_resp = avg[:, img_idx].T
        kind = "repeat-averaged (one trial per image: the mean over repeats; repeat-based metrics do not apply)"

    tiers, report = content_split(
        pixels,
        validation_fraction=validation_fraction,
        test_fraction=test_fraction,
        seed=seed,
        near_duplicate_threshold=near_duplicate_threshold,
    )
    exact_n = sum(len(g) for g in report["exact"])
    near_n = sum(len(g) for g in report["near"])
    log.warning(
        "cowley2023 %s: content split (seed %d, near-duplicate threshold %.2f): %s images; %d exact-duplicate groups "
        "(%d images): %s; %d near-duplicate groups (%d images, %d pairs): %s",
        session, seed, near_duplicate_threshold, report["counts"], len(report["exact"]), exact_n,
        _describe(report["exact"]) or "none", len(report["near"]), near_n, report["pairs"], _describe(report["near"]) or "none",
    )
    if downsample > 1:
        pixels = block_mean(pixels, int(downsample))
    split_note = (
        f"split by image content (seed {seed}): {report['counts']} images, {len(report['exact'])} exact-duplicate and "
        f"{len(report['near'])} near-duplicate groups share a tier"
    )
    return NeuralRecording(
        images=pixels,
        image_ids=np.arange(1, n_images + 1),
        responses=trial_resp,
        trial_image=img_idx.astype(np.int64),
        trial_tier=tiers[img_idx],
        neurons={"ids": np.asarray([f"{session}/{k}" for k in keep], dtype=object), "index": keep.astype(np.int64)},
        species="macaque",
        area="V4",
        response_unit="spikes",
        pixels_per_degree=float(pixels_per_degree) / int(downsample),
        source=(
            f"cowley2023:{session} ({source_file.name}, {images_path.name}); spike counts in a 100 ms window, {kind}; "
            f"{split_note}; pixels_per_degree {float(pixels_per_degree):g} at 112 px given by the caller (not stated "
            f"in the source files){f', images downsampled {int(downsample)}x' if downsample > 1 else ''}"
        ),
        citation=CITATION,
        license=LICENSE,
        name=str(source_file),
    )
