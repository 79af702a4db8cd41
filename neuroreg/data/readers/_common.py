"""Helpers shared by the readers: errors naming file and field, splits, pickle trust."""

from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..recording import TIERS, RecordingError


class ReaderError(RecordingError):
    """An external file does not have the layout its reader expects."""


class WithheldResponsesWarning(UserWarning):
    """Responses withheld by a competition (all zeros) were set to NaN."""


def fail(path, field: str, expected: str, found) -> None:
    """Raise :class:`ReaderError` ``"<path>: field '<field>': expected ..., found ..."``."""
    raise ReaderError(f"{path}: field '{field}': expected {expected}, found {found}")


def check_tiers(path, field: str, tiers: np.ndarray) -> np.ndarray:
    """Decode tier labels to ``str`` and refuse labels outside ``TIERS``."""
    tiers = np.asarray([t.decode() if isinstance(t, bytes) else str(t) for t in np.asarray(tiers).ravel()], dtype=object)
    unknown = sorted(set(tiers) - set(TIERS))
    if unknown:
        fail(path, field, f"tier labels in {list(TIERS)}", f"unknown labels {unknown}")
    return tiers


def withhold_zero_trials(path, responses: np.ndarray, tiers: np.ndarray, tiers_to_check=("test", "final_test")) -> np.ndarray:
    """Set trials whose responses are all exactly zero in a held-out tier to NaN.

    The Sensorium 2022 competition mice publish their test / final_test responses as
    zeros. Those are not measurements: they become NaN (= not recorded, excluded from
    every metric) and a :class:`WithheldResponsesWarning` says how many trials.

    Returns:
        ``withheld`` ``[T]`` bool, True for the trials that were set to NaN.
    """
    in_tier = np.isin(tiers, tiers_to_check)
    zero = in_tier & np.all(responses == 0, axis=1)
    if zero.any():
        responses[zero] = np.nan
        per_tier = {t: int((zero & (tiers == t)).sum()) for t in tiers_to_check if (zero & (tiers == t)).any()}
        warnings.warn(
            f"{path}: field 'responses': {int(zero.sum())} trials {per_tier} are all zeros (withheld by the "
            "competition); set to NaN so they are excluded from metrics",
            WithheldResponsesWarning,
            stacklevel=3,
        )
    return zero


def split_groups(keys: np.ndarray, fractions: dict[str, float], seed: int = 0) -> np.ndarray:
    """Assign whole groups (e.g. images) to tiers with a seeded permutation.

    Args:
        keys: ``[T]`` group key of each item (trials of one image share a tier).
        fractions: tier -> fraction of groups, e.g. ``{"validation": 0.1, "test": 0.2}``;
            the rest is ``train``.

    Returns:
        ``[T]`` tier names.
    """
    groups, inverse = np.unique(keys, return_inverse=True)
    order = np.random.default_rng(seed).permutation(len(groups))
    group_tier = np.full(len(groups), "train", dtype=object)
    start = 0
    for tier, frac in fractions.items():
        n = round(frac * len(groups))
        group_tier[order[start : start + n]] = tier
        start += n
    return group_tier[inverse]


def parse_split(text: str, field: str = "split") -> dict[str, float]:
    """``"validation=0.1,test=0.2"`` -> ``{"validation": 0.1, "test": 0.2}`` (checked by :func:`check_split`)."""
    out = {}
    for item in filter(None, (part.strip() for part in str(text).split(","))):
        tier, sep, value = item.partition("=")
        try:
            out[tier.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not tier.strip():
            raise ReaderError(f"field '{field}': expected TIER=FRACTION[,TIER=FRACTION] (e.g. validation=0.1,test=0.2), found {text!r}")
    return check_split(out, field)


def check_split(fractions: dict[str, float], field: str = "split") -> dict[str, float]:
    """Refuse a split that names ``train`` or an unknown tier, or whose fractions are not in (0, 1) and sum below 1."""
    fractions = {str(k): float(v) for k, v in dict(fractions).items()}
    held_out = [t for t in TIERS if t != "train"]
    bad = sorted(set(fractions) - set(held_out))
    if bad or not fractions:
        raise ReaderError(
            f"field '{field}': expected fractions of held-out tiers {held_out} (the rest is train), e.g. "
            f"validation=0.1,test=0.2, found {bad or 'none'}"
        )
    if any(not 0 < v < 1 for v in fractions.values()) or sum(fractions.values()) >= 1:
        raise ReaderError(f"field '{field}': expected fractions in (0, 1) summing below 1 (train keeps the rest), found {fractions}")
    return fractions


def load_trusted_pickle(
    path: str | os.PathLike, *, sha256: str | None, trust_pickle: bool, extract: Callable[[bytes], bytes] | None = None
):
    """Unpickle ``path`` only if its sha256 equals ``sha256`` or ``trust_pickle`` is set.

    Unpickling runs code chosen by whoever wrote the file, so an unverified pickle is
    refused. The checksum is that of the file at ``path`` as a manifest names it (for a
    zip: the zip, not the pickle inside), and so is the sha256 an error shows: copied into
    the manifest, it verifies that very file.

    Args:
        path: the file as downloaded.
        sha256: its expected sha256 (``None``: not confirmed).
        trust_pickle: unpickle without a confirmed checksum.
        extract: picks the pickle's bytes out of the file's bytes (e.g. a zip member);
            ``None``: the file is the pickle. Called on the bytes that were hashed.

    Raises:
        ReaderError: no expected checksum and no opt-in, or a mismatch.
    """
    raw = Path(path).read_bytes()
    seen = hashlib.sha256(raw).hexdigest()
    if sha256 is not None and seen != sha256:
        raise ReaderError(
            f"{path}: refusing to unpickle: sha256 expected {sha256}, found {seen} (unpickling runs code)"
        )
    if sha256 is None and not trust_pickle:
        raise ReaderError(
            f"{path}: refusing to unpickle a file without a confirmed sha256 (unpickling runs code; sha256 seen: {seen}); "
            "pass --trust-pickle (trust_pickle=True) if you trust its source"
        )
    return pickle.loads(raw if extract is None else extract(raw), encoding="latin1")


def to_uint8_images(path, field: str, images: np.ndarray) -> np.ndarray:
    """``[N, H, W]`` / ``[N, C, H, W]`` / ``[N, H, W, C]`` -> ``[N, C, H, W]`` uint8 or float32 in [0, 1].

    Integer images and floats in 0..255 become uint8; floats already in [0, 1] stay float32.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4:
        if images.shape[1] not in (1, 3) and images.shape[-1] in (1, 3):
            images = np.moveaxis(images, -1, 1)
    else:
        fail(path, field, "images [N, H, W] or [N, C, H, W]", f"shape {images.shape}")
    if images.shape[1] not in (1, 3):
        fail(path, field, "1 or 3 channels", f"shape {images.shape}")
    if images.dtype == np.uint8:
        return np.ascontiguousarray(images)
    if images.dtype.kind in "iu":
        if images.size and (images.min() < 0 or images.max() > 255):
            fail(path, field, "integer pixel values in 0..255", f"range [{images.min()}, {images.max()}]")
        return images.astype(np.uint8)
    if images.dtype.kind == "f":
        if not np.isfinite(images).all():
            fail(path, field, "finite pixel values", "NaN/inf")
        lo, hi = (float(images.min()), float(images.max())) if images.size else (0.0, 0.0)
        if lo >= 0 and hi <= 1:
            return images.astype(np.float32)
        if lo >= 0 and hi <= 255:
            return np.round(images).astype(np.uint8)
        fail(path, field, "pixel values in [0, 1] or [0, 255]", f"range [{lo:.3g}, {hi:.3g}]")
    fail(path, field, "numeric images", f"dtype {images.dtype}")
