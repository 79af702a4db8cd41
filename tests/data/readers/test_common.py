"""Shared reader helpers: image-level splits, withheld trials, pickle trust, image coercion."""

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neuroreg.data.readers._common import (
    ReaderError,
    WithheldResponsesWarning,
    load_trusted_pickle,
    split_groups,
    to_uint8_images,
    withhold_zero_trials,
)


@settings(max_examples=40, deadline=None)
@given(
    keys=st.lists(st.integers(0, 30), min_size=1, max_size=200),
    val=st.floats(0, 0.5),
    test=st.floats(0, 0.5),
    seed=st.integers(0, 5),
)
def test_split_groups_keeps_groups_whole(keys, val, test, seed):
    keys = np.asarray(keys)
    tiers = split_groups(keys, {"validation": val, "test": test}, seed=seed)
    n_groups = len(np.unique(keys))
    for k in np.unique(keys):
        assert len(set(tiers[keys == k])) == 1
    per_group = {k: tiers[keys == k][0] for k in np.unique(keys)}
    n_val = sum(t == "validation" for t in per_group.values())
    n_test = sum(t == "test" for t in per_group.values())
    assert n_val == min(round(val * n_groups), n_groups)
    assert n_test == min(round(test * n_groups), n_groups - n_val)
    np.testing.assert_array_equal(tiers, split_groups(keys, {"validation": val, "test": test}, seed=seed))


def test_withhold_only_all_zero_held_out_trials():
    r = np.ones((5, 3), np.float32)
    r[[1, 3]] = 0.0
    r[4, 0] = 0.0  # partly zero: a measurement, kept
    tiers = np.array(["train", "train", "test", "final_test", "test"], dtype=object)
    with pytest.warns(WithheldResponsesWarning, match=r"1 trials \{'final_test': 1\}"):
        mask = withhold_zero_trials("f", r, tiers)
    assert list(mask) == [False, False, False, True, False]
    assert np.isnan(r[3]).all() and (r[1] == 0).all() and r[4, 0] == 0


def test_pickle_trust(tmp_path):
    p = tmp_path / "x.pkl"
    p.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ReaderError, match="x.pkl: refusing to unpickle"):
        load_trusted_pickle(p, sha256=None, trust_pickle=False)
    assert load_trusted_pickle(p, sha256=None, trust_pickle=True) == {"a": 1}


def test_image_coercion():
    x = np.random.default_rng(0).random((2, 5, 6, 3))
    out = to_uint8_images("f", "images", x)
    assert out.shape == (2, 3, 5, 6) and out.dtype == np.float32
    out = to_uint8_images("f", "images", (x * 255).astype(np.float64))
    assert out.dtype == np.uint8
    with pytest.raises(ReaderError, match="f: field 'images': expected pixel values"):
        to_uint8_images("f", "images", x - 1)
    with pytest.raises(ReaderError, match="1 or 3 channels"):
        to_uint8_images("f", "images", np.zeros((2, 4, 5, 6)))
