"""The Kriegeskorte 2008 reader: the real 92-image file, and crafted broken .mat files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
from _rdmdata import require_mat
from scipy.stats import spearmanr

from neuroreg.data.readers._common import ReaderError
from neuroreg.data.readers.kriegeskorte2008 import read_kriegeskorte2008
from neuroreg.targets.rdm import RDMTargets


def test_real_file_macaque_it_rdm():
    path = require_mat()
    t = read_kriegeskorte2008(path)
    assert t.images.shape == (92, 3, 175, 175) and t.images.dtype == np.uint8
    assert t.image_ids.tolist() == list(range(1, 93))
    assert t.rdm.shape == (4186,) and t.metric == "correlation"  # stored condensed, [1, 4186]
    assert (t.species, t.area) == ("macaque", "IT") and t.source.endswith(":mIT_674neurons")
    assert t.rdm.min() == pytest.approx(0.51849, abs=1e-4) and t.rdm.max() == pytest.approx(1.22127, abs=1e-4)
    assert t.labels[0] == "human bodypart"
    assert {k: int(v.sum()) for k, v in t.flags.items() if k in ("animate", "inanim", "face", "monkeyape")} == {
        "animate": 48, "inanim": 44, "face": 24, "monkeyape": 7}
    sq = t.square()
    assert np.array_equal(sq, sq.T) and not sq.diagonal().any()
    # IT's category structure (Kiani 2007): animate images are more alike among themselves than to inanimate ones
    animate = t.flags["animate"]
    within = sq[np.ix_(animate, animate)][np.triu_indices(int(animate.sum()), 1)].mean()
    between = sq[np.ix_(animate, ~animate)].mean()
    assert within < between - 0.05, (within, between)
    human = read_kriegeskorte2008(path, rdm="hITvisStim_316vx")
    assert (human.species, human.area) == ("human", "IT")
    # monkey and human IT agree, moderately (Kriegeskorte 2008, Fig. 1)
    assert spearmanr(human.rdm, t.rdm).statistic == pytest.approx(0.439, abs=0.005)


def test_real_file_unknown_rdm_lists_the_available_ones():
    path = require_mat()
    with pytest.raises(ReaderError, match=f"{path}: field 'RDMs_mIT_hIT_fig1.name': expected one of "
                       r"\['mIT_674neurons', 'hITvisStim_316vx'\], found 'V1'"):
        read_kriegeskorte2008(path, rdm="V1")


def write(path: Path, n: int = 5, rdm=None, name: str = "mIT_674neurons", drop: str | None = None) -> Path:
    rng = np.random.default_rng(0)
    stimuli = np.empty((1, n), dtype=[("category", object), ("face", object), ("image", object)])
    for i in range(n):
        stimuli[0, i] = (f"c{i}", np.uint8(i % 2), rng.integers(0, 256, (7, 7, 3), dtype=np.uint8))
    rdms = np.empty((1, 1), dtype=[("name", object), ("RDM", object)])
    rdms[0, 0] = (name, rng.random((1, n * (n - 1) // 2)) if rdm is None else rdm)
    variables = {"stimuli_92objs": stimuli, "RDMs_mIT_hIT_fig1": rdms,
                 "categoryVectors": np.eye(n, 2, dtype=np.uint8), "categoryLabels": np.array([["a", "b"]], dtype=object)}
    if drop:
        variables.pop(drop)
    scipy.io.savemat(path, variables)
    return path


def test_crafted_file_condensed_and_square(tmp_path):
    t = read_kriegeskorte2008(write(tmp_path / "k.mat"))
    assert isinstance(t, RDMTargets) and t.images.shape == (5, 3, 7, 7) and t.rdm.shape == (10,)
    assert t.flags["face"].tolist() == [False, True, False, True, False] and t.flags["a"].tolist() == [1, 0, 0, 0, 0]
    assert t.labels.tolist() == ["c0", "c1", "c2", "c3", "c4"]
    square = np.random.default_rng(1).random((5, 5))
    square = square + square.T
    np.fill_diagonal(square, 0)
    s = read_kriegeskorte2008(write(tmp_path / "s.mat", rdm=square))
    np.testing.assert_allclose(s.square(), square)


def test_broken_files_name_file_and_field(tmp_path):
    good = write(tmp_path / "good.mat")
    truncated = tmp_path / "truncated.mat"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(ReaderError, match=f"{truncated}: not a readable MATLAB v5 file"):
        read_kriegeskorte2008(truncated)
    garbage = tmp_path / "garbage.mat"
    garbage.write_bytes(b"not a mat file at all" * 20)
    with pytest.raises(ReaderError, match=f"{garbage}: not a readable MATLAB v5 file"):
        read_kriegeskorte2008(garbage)
    no_rdms = write(tmp_path / "no_rdms.mat", drop="RDMs_mIT_hIT_fig1")
    with pytest.raises(ReaderError, match=r"no_rdms.mat: expected MATLAB variables \['stimuli_92objs', 'RDMs_mIT_hIT_fig1'\], "
                       r"missing \['RDMs_mIT_hIT_fig1'\]; found \['categoryLabels', 'categoryVectors', 'stimuli_92objs'\]"):
        read_kriegeskorte2008(no_rdms)
    short = write(tmp_path / "short.mat", rdm=np.ones((1, 9)))
    with pytest.raises(ReaderError, match=r"short.mat: field 'RDMs_mIT_hIT_fig1\(1\).RDM': expected a condensed RDM of "
                       r"n\(n-1\)/2 = 10 values \(or 5 x 5\) for the 5 images, found shape \(1, 9\)"):
        read_kriegeskorte2008(short)
    asym = np.ones((5, 5)) - np.eye(5)
    asym[0, 1] = 3
    with pytest.raises(ReaderError, match=r"asym.mat \(RDMs_mIT_hIT_fig1\(1\).RDM\): field 'rdm': expected a symmetric matrix"):
        read_kriegeskorte2008(write(tmp_path / "asym.mat", rdm=asym))
    negative = write(tmp_path / "negative.mat", rdm=-np.ones((1, 10)))
    with pytest.raises(ReaderError, match="field 'rdm': expected non-negative dissimilarities"):
        read_kriegeskorte2008(negative)
    with pytest.raises(ReaderError, match=r"field 'RDMs_mIT_hIT_fig1.name': expected one of \['other'\], found 'mIT_674neurons'"):
        read_kriegeskorte2008(write(tmp_path / "other.mat", name="other"))
    with pytest.raises(FileNotFoundError, match="Kriegeskorte 2008 .mat file not found"):
        read_kriegeskorte2008(tmp_path / "missing.mat")
