"""Kriegeskorte et al. (2008) supplemental data: the 92-image macaque IT (and human IT) RDMs.

The MATLAB v5 file ``Kriegeskorte_Neuron2008_supplementalData.mat`` (shipped with the
rsatoolbox demos) holds::

    stimuli_92objs      struct array [1, 92]: image (175, 175, 3) uint8, category (str),
                        human, face, animal, natural (0/1)
    categoryVectors     [92, 12] 0/1 category memberships
    categoryLabels      cell [1, 12] of their names (animate, inanim, human, ...)
    RDMs_mIT_hIT_fig1   struct array [1, 2]: name, color, RDM
                        mIT_674neurons   macaque IT, 674 neurons (Kiani et al. 2007)
                        hITvisStim_316vx human IT, fMRI, 316 voxels

Each ``RDM`` is stored condensed, ``[1, 4186]`` = 92·91/2 dissimilarities (1 − Pearson r
between response patterns) in ``pdist`` order, which is scipy's ``squareform`` order; a
square ``[92, 92]`` RDM (as other copies store it) is accepted too, if symmetric with a
zero diagonal. The result is :class:`~neuroreg.targets.rdm.RDMTargets`: only
dissimilarities, no per-neuron responses.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from neuroreg.targets.rdm import RDMError, RDMTargets, condensed_length

from ._common import ReaderError, fail

_VARIABLES = ("stimuli_92objs", "RDMs_mIT_hIT_fig1")
_FLAGS = ("human", "face", "animal", "natural")
_CITATION = (
    "Kiani, R., Esteky, H., Mirpour, K. & Tanaka, K. (2007). Object category structure in response patterns of neuronal "
    "population in monkey inferior temporal cortex. J Neurophysiol 97, 4296-4309; Kriegeskorte, N. et al. (2008). "
    "Matching categorical object representations in inferior temporal cortex of man and monkey. Neuron 60, 1126-1141."
)
_AREAS = {"mIT": ("macaque", "IT"), "hIT": ("human", "IT")}


def _text(value) -> str:
    """A MATLAB char array as loaded by scipy (``array(['name'])``, nested cells) -> str."""
    v = np.asarray(value)
    while v.dtype == object and v.size == 1:
        v = np.asarray(v.ravel()[0])
    if v.dtype.kind == "U":
        return "".join(v.ravel().tolist())
    return str(v.ravel()[0]) if v.size else ""


def _struct(path, m: dict, key: str, fields: tuple[str, ...]) -> np.ndarray:
    value = m[key]
    names = getattr(getattr(value, "dtype", None), "names", None) or ()
    missing = [f for f in fields if f not in names]
    if missing:
        fail(path, key, f"a struct array with fields {list(fields)}", f"fields {list(names)} (missing {missing})")
    return value.ravel()


def read_kriegeskorte2008(
    path: str | os.PathLike,
    *,
    rdm: str = "mIT_674neurons",
    metric: str = "correlation",
) -> RDMTargets:
    """Read one RDM of the Kriegeskorte 2008 supplemental file with its 92 images.

    Args:
        path: the ``.mat`` file (MATLAB v5).
        rdm: which RDM of ``RDMs_mIT_hIT_fig1`` (by its ``name``): ``mIT_674neurons``
            (macaque IT) or ``hITvisStim_316vx`` (human IT).
        metric: the dissimilarity the file's RDMs use (1 − Pearson r: ``correlation``).

    Returns:
        :class:`~neuroreg.targets.rdm.RDMTargets`: ``images`` [92, 3, 175, 175] uint8,
        ``image_ids`` 1..92 (the file's order), ``labels`` the stimuli's ``category``,
        ``flags`` human/face/animal/natural and the 12 ``categoryVectors`` columns (named
        by ``categoryLabels``), species and area from the RDM's name.

    Raises:
        FileNotFoundError: no file at ``path``.
        ReaderError: not a readable MATLAB file (corrupt, truncated), a missing variable
            or struct field, an unknown ``rdm`` name (the message lists the available
            ones), or an RDM whose size is not n(n−1)/2 (or n×n) for the image count; each
            message names the file and the field.
    """
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Kriegeskorte 2008 .mat file not found: {path}")
    try:
        m = scipy.io.loadmat(path)
    except (ValueError, TypeError, OSError, EOFError, NotImplementedError, IndexError, KeyError) as err:
        raise ReaderError(f"{path}: not a readable MATLAB v5 file (corrupt or truncated?): {type(err).__name__}: {err}") from err
    missing = [k for k in _VARIABLES if k not in m]
    if missing:
        found = sorted(k for k in m if not k.startswith("__"))
        raise ReaderError(f"{path}: expected MATLAB variables {list(_VARIABLES)}, missing {missing}; found {found}")

    stimuli = _struct(path, m, "stimuli_92objs", ("image",))
    images = []
    for i, s in enumerate(stimuli):
        img = np.asarray(s["image"])
        if img.ndim == 2:
            img = img[:, :, None]
        if img.ndim != 3 or img.shape[2] not in (1, 3) or img.dtype.kind not in "ui":
            fail(path, f"stimuli_92objs({i + 1}).image", "an H x W x 3 (or H x W) uint8 image", f"shape {img.shape}, dtype {img.dtype}")
        if images and img.shape != images[0].shape:
            fail(path, f"stimuli_92objs({i + 1}).image", f"the size of the first image {images[0].shape}", f"shape {img.shape}")
        if img.min() < 0 or img.max() > 255:
            fail(path, f"stimuli_92objs({i + 1}).image", "pixel values in 0..255", f"range [{img.min()}, {img.max()}]")
        images.append(img.astype(np.uint8))
    n = len(images)
    images_nchw = np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2))
    names = stimuli.dtype.names
    labels = np.array([_text(s["category"]) for s in stimuli], dtype=object) if "category" in names else None
    flags = {}
    for key in _FLAGS:
        if key in names:
            flags[key] = np.array([int(np.asarray(s[key]).ravel()[0]) for s in stimuli])
    if "categoryVectors" in m:
        vectors = np.asarray(m["categoryVectors"])
        cat_names = [_text(c) for c in np.asarray(m.get("categoryLabels", np.empty((0,), object))).ravel()]
        if vectors.ndim != 2 or vectors.shape[0] != n or len(cat_names) != vectors.shape[1]:
            fail(path, "categoryVectors", f"[{n}, K] flags with K names in categoryLabels",
                 f"shape {vectors.shape} with {len(cat_names)} labels")
        for j, cname in enumerate(cat_names):
            flags.setdefault(cname, vectors[:, j])

    entries = _struct(path, m, "RDMs_mIT_hIT_fig1", ("name", "RDM"))
    available = [_text(e["name"]) for e in entries]
    if rdm not in available:
        raise ReaderError(f"{path}: field 'RDMs_mIT_hIT_fig1.name': expected one of {available}, found {rdm!r}")
    raw = np.asarray(entries[available.index(rdm)]["RDM"], dtype=np.float64)
    where = f"RDMs_mIT_hIT_fig1({available.index(rdm) + 1}).RDM"
    species, area = _AREAS.get(rdm[:3], ("", ""))
    fields = {
        "images": images_nchw, "image_ids": np.arange(1, n + 1), "metric": metric, "labels": labels, "flags": flags,
        "species": species, "area": area, "citation": _CITATION, "license": "unstated (distributed with rsatoolbox, MIT)",
        "source": f"{path.name}:{rdm}",
    }
    label = f"{path} ({where})"
    try:
        if raw.ndim == 2 and raw.shape == (n, n):
            out = RDMTargets.from_square(raw, name=label, **fields)
        else:
            vec = raw.ravel()
            if raw.ndim > 2 or (raw.ndim == 2 and min(raw.shape) != 1) or len(vec) != condensed_length(n):
                fail(path, where, f"a condensed RDM of n(n-1)/2 = {condensed_length(n)} values (or {n} x {n}) for the {n} images",
                     f"shape {raw.shape}")
            out = RDMTargets(rdm=vec, name=label, **fields)
    except RDMError as err:
        raise ReaderError(str(err)) from err
    out.name = str(path)
    return out
