import os

import h5py
import numpy as np
import pytest

from neuroreg.targets.format import TargetSet, TargetSetError, target_key
from neuroreg.targets.sources import TargetSetFile


def make_ts(n=5, k=3, key="abc"):
    return TargetSet(np.arange(n * k, dtype=np.float32).reshape(n, k), np.array([f"img/{i}" for i in range(n)]), key, "test")


def test_roundtrip_and_align(tmp_path):
    ts = make_ts()
    path = ts.save(tmp_path / "t.h5")
    back = TargetSet.load(path, expected_key="abc")
    np.testing.assert_array_equal(back.targets, ts.targets)
    np.testing.assert_array_equal(back.align(np.array(["img/3", "img/0"])), ts.targets[[3, 0]])
    assert TargetSetFile(str(path)).num_neurons == 3


def test_float16_targets_roundtrip(tmp_path):
    ts = TargetSet(np.ones((4, 2), np.float16), np.array(list("abcd")), "k")
    assert TargetSet.load(ts.save(tmp_path / "h.h5")).targets.dtype == np.float16


def test_key_mismatch_is_refused(tmp_path):
    path = make_ts(key="abc").save(tmp_path / "t.h5")
    with pytest.raises(TargetSetError, match="attribute 'key': expected zzz, found abc"):
        TargetSet.load(path, expected_key="zzz")


def test_missing_keys_are_reported():
    with pytest.raises(TargetSetError, match="found 1 missing"):
        make_ts().align(np.array(["img/0", "img/99"]))


def test_key_depends_on_every_part_and_order():
    assert target_key("a", "b") != target_key("b", "a")
    assert target_key("ab", "c") != target_key("a", "bc")
    assert target_key("a", "b") == target_key("a", "b")


def test_not_a_targetset(tmp_path):
    p = tmp_path / "x.h5"
    with h5py.File(p, "w") as f:
        f["foo"] = 1
    with pytest.raises(TargetSetError, match=r"x\.h5: not a TargetSet"):
        TargetSet.load(p)
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        TargetSetFile(str(tmp_path / "missing.h5"))


def test_shape_checks():
    with pytest.raises(TargetSetError, match="field 'image_keys'"):
        TargetSet(np.zeros((3, 2), np.float32), np.array(["a"]), "k")
    with pytest.raises(TargetSetError, match="float32 or float16"):
        TargetSet(np.zeros((3, 2)), np.array(list("abc")), "k")


def test_interrupted_write_leaves_no_file(tmp_path, monkeypatch):
    ts = make_ts()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        ts.save(tmp_path / "t.h5")
    assert os.listdir(tmp_path) == []


def test_sources_without_work_ask_for_no_stages():
    from neuroreg.targets.base import NeuralBatchSource, TargetSource
    from neuroreg.targets.controls import (
        PixelTargets,
        ShuffledResponses,
        ShuffledTargets,
    )
    from neuroreg.targets.sources import GroundTruthTargets, RecordingResponses

    for cls in (TargetSource, NeuralBatchSource, GroundTruthTargets, TargetSetFile, PixelTargets, ShuffledTargets,
                RecordingResponses, ShuffledResponses):
        assert cls.prerequisites({}) == []
