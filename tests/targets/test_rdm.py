"""RDMTargets: the contract, square / subset views, the .h5 format, and the RDM sources
(file, manifest converted on demand, shuffled and pixel controls, neural batches)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import torch
import yaml
from scipy.spatial.distance import pdist, squareform
from scipy.stats import spearmanr
from torch.utils.data import DataLoader

from neuroreg.data.sampling import ResumableBatchSampler, ResumableLoader
from neuroreg.targets.rdm import (
    ManifestRDM,
    PixelRDM,
    RDMBatchDataset,
    RDMError,
    RDMFile,
    RDMTargets,
    ShuffledRDM,
    is_rdm_file,
    pixel_rdm,
    rdm_targets,
)


def make(n: int = 6, seed: int = 0, **fields) -> RDMTargets:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 3, 5, 5), dtype=np.uint8)
    values = {"images": images, "image_ids": np.arange(10, 10 + n), "rdm": pdist(rng.random((n, 7)), "correlation"),
              "metric": "correlation", "labels": [f"c{i % 2}" for i in range(n)],
              "flags": {"even": np.arange(n) % 2 == 0}, "species": "macaque", "area": "IT", **fields}
    return RDMTargets(**values)


def test_square_is_scipy_squareform_and_subset_matches_a_naive_selection():
    t = make()
    np.testing.assert_array_equal(t.square(), squareform(t.rdm))
    assert np.allclose(t.square(), t.square().T) and not t.square().diagonal().any()
    idx = [4, 1, 3]
    sub = t.subset(idx)
    naive = [t.square()[idx[a], idx[b]] for a in range(3) for b in range(a + 1, 3)]
    np.testing.assert_allclose(sub.rdm, naive)
    assert sub.image_ids.tolist() == [14, 11, 13] and sub.labels.tolist() == ["c0", "c1", "c1"]
    assert sub.flags["even"].tolist() == [True, False, False]
    np.testing.assert_array_equal(sub.images, t.images[idx])
    with pytest.raises(RDMError, match="field 'subset': expected at least 2 distinct indices in \\[0, 5\\]"):
        t.subset([1, 1])


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"rdm": np.ones(14)}, "field 'rdm': expected length n\\(n-1\\)/2 = 15 for 6 images, found length 14"),
        ({"rdm": np.ones((6, 6))}, "field 'rdm': expected a condensed vector \\[15\\]"),
        ({"rdm": np.r_[np.ones(14), np.nan]}, "field 'rdm': expected finite dissimilarities, found 1 NaN/inf"),
        ({"rdm": np.r_[np.ones(14), -0.5]}, "field 'rdm': expected non-negative dissimilarities, found 1 negative"),
        ({"image_ids": np.zeros(6, int)}, "field 'image_ids': expected unique ids, found 5 duplicates"),
        ({"images": np.zeros((6, 3, 5, 5), np.float32)}, "field 'images': expected dtype uint8"),
        ({"images": np.zeros((6, 2, 5, 5), np.uint8)}, "field 'images': expected \\[N, 1 or 3, H, W\\]"),
        ({"metric": ""}, "field 'metric'"),
        ({"labels": ["a"]}, "field 'labels': expected shape \\(6,\\)"),
        ({"flags": {"x": np.full(6, 2)}}, "field 'flags/x': expected \\[6\\] booleans"),
    ],
)
def test_contract_violations_name_the_field(fields, message):
    with pytest.raises(RDMError, match=f"<in memory>: {message}"):
        make(**fields)


def test_from_square_requires_symmetry_and_a_zero_diagonal():
    t = make()
    kw = {"images": t.images, "image_ids": t.image_ids, "metric": "correlation"}
    back = RDMTargets.from_square(t.square(), **kw)
    np.testing.assert_allclose(back.rdm, t.rdm)
    asym = t.square()
    asym[0, 1] += 0.1
    with pytest.raises(RDMError, match="expected a symmetric matrix, found \\|D - D\\^T\\| up to 0.1"):
        RDMTargets.from_square(asym, **kw)
    diag = t.square() + np.eye(6) * 0.2
    with pytest.raises(RDMError, match="expected a zero diagonal, found values up to 0.2"):
        RDMTargets.from_square(diag, **kw)


def test_save_load_roundtrip_and_bad_files(tmp_path):
    t = make(image_ids=np.array([f"img{i}" for i in range(6)]))
    path = t.save(tmp_path / "t.h5")
    assert is_rdm_file(path) and not list(tmp_path.glob(".*.tmp"))
    back = RDMTargets.load(path)
    np.testing.assert_array_equal(back.rdm, t.rdm)
    np.testing.assert_array_equal(back.images, t.images)
    assert back.image_ids.tolist() == t.image_ids.tolist() and back.labels.tolist() == t.labels.tolist()
    assert back.flags["even"].tolist() == t.flags["even"].tolist()
    assert (back.metric, back.species, back.area, back.name) == ("correlation", "macaque", "IT", str(path))
    assert back.summary().startswith(f"{path}: 6 images (3x5x5), 15 dissimilarities (correlation), range [")
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = 7
    with pytest.raises(RDMError, match="attribute 'schema_version': expected 1, found 7"):
        RDMTargets.load(path)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = 1
    assert not is_rdm_file(other)
    with pytest.raises(RDMError, match="attribute 'format': expected 'neuroreg.RDMTargets', found None"):
        RDMTargets.load(other)
    broken = tmp_path / "broken.h5"
    broken.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(RDMError, match="broken.h5: not a readable HDF5 file"):
        RDMTargets.load(broken)
    with pytest.raises(FileNotFoundError, match="RDMTargets file not found"):
        RDMTargets.load(tmp_path / "missing.h5")


def test_a_failed_save_leaves_nothing(tmp_path, monkeypatch):
    t = make()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(h5py.Group, "create_group", fail)
    with pytest.raises(OSError, match="disk full"):
        t.save(tmp_path / "t.h5")
    assert list(tmp_path.iterdir()) == []


def test_shuffled_rdm_permutes_rows_and_columns_jointly(tmp_path):
    t = make(n=30)
    src = RDMFile(str(t.save(tmp_path / "t.h5")))
    shuffled = ShuffledRDM(src, seed=3).load_rdm()
    perm = np.random.default_rng(3).permutation(30)
    np.testing.assert_allclose(shuffled.square(), t.square()[np.ix_(perm, perm)])
    np.testing.assert_allclose(np.sort(shuffled.rdm), np.sort(t.rdm))  # the same values
    np.testing.assert_array_equal(shuffled.images, t.images)  # images keep their place
    assert abs(spearmanr(shuffled.rdm, t.rdm).statistic) < 0.2
    assert not np.allclose(ShuffledRDM(src, seed=4).load_rdm().rdm, shuffled.rdm)


def test_pixel_rdm_is_one_minus_pearson_of_pooled_pixels():
    t = make(n=8)
    pooled = t.images_float().reshape(8, 3, 5, 5)  # size=None: full resolution
    naive = [1 - np.corrcoef(pooled[i].ravel(), pooled[j].ravel())[0, 1] for i in range(8) for j in range(i + 1, 8)]
    np.testing.assert_allclose(pixel_rdm(t, size=None), naive, atol=1e-10)
    one = pixel_rdm(t, size=1)  # one value per channel
    x = (t.images / 255.0).mean((2, 3))
    np.testing.assert_allclose(one, pdist(x, "correlation"), atol=1e-6)
    control = PixelRDM(RDMFile.__new__(RDMFile), size=None)
    control.source._rdm = t
    assert control.load_rdm().metric == "correlation" and np.allclose(control.load_rdm().rdm, naive)
    with pytest.raises(RDMError, match="field 'metric': expected one of \\['correlation', 'cosine'\\]"):
        pixel_rdm(make(metric="euclidean"))


def test_neural_batches_carry_the_sub_rdm_over_their_images():
    t = make(n=12)
    ds = RDMBatchDataset(t.images_float(), t.square())
    order = torch.randperm(12, generator=torch.Generator().manual_seed(0)).tolist()

    class Fixed(torch.utils.data.Sampler):
        def __iter__(self):
            return iter(order)

        def __len__(self):
            return 12

    loader = ResumableLoader(ds, batch_sampler=ResumableBatchSampler(Fixed(), 5, drop_last=True))
    for batch in loader:
        idx = batch["index"].numpy()
        assert batch["dissimilarity"].shape == (5, 5) and batch["image"].shape == (5, 3, 5, 5)
        np.testing.assert_allclose(batch["dissimilarity"].numpy(), t.square()[np.ix_(idx, idx)], atol=1e-6)
        np.testing.assert_allclose(batch["image"].numpy(), t.images_float()[idx])
    one = next(iter(DataLoader(ds, batch_size=4)))
    np.testing.assert_allclose(one["dissimilarity"].numpy(), t.square()[:4, :4], atol=1e-6)


def tiny_mat(path: Path, n: int = 4) -> Path:
    """A Kriegeskorte-layout .mat file with ``n`` 6x6 images and one condensed RDM."""
    rng = np.random.default_rng(1)
    stimuli = np.empty((1, n), dtype=[("category", object), ("image", object)])
    for i in range(n):
        stimuli[0, i] = (f"cat{i % 2}", rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    rdms = np.empty((1, 1), dtype=[("name", object), ("RDM", object)])
    rdms[0, 0] = ("mIT_test", rng.random((1, n * (n - 1) // 2)))
    scipy.io.savemat(path, {"stimuli_92objs": stimuli, "RDMs_mIT_hIT_fig1": rdms})
    return path


def write_manifest(folder: Path, mat: Path, name: str = "tiny-rdm", reader: str = "kriegeskorte2008.read_kriegeskorte2008",
                   options: dict | None = None, url: str | None = None) -> Path:
    import hashlib

    folder.mkdir(parents=True, exist_ok=True)
    manifest = {
        "name": name, "title": "tiny RDM", "kind": "neural", "species": "macaque", "area": "IT",
        "modality": "electrophysiology",
        "files": [{"name": mat.name, "role": "path", "url": url or f"https://example.org/{mat.name}",
                   "sha256": hashlib.sha256(mat.read_bytes()).hexdigest(), "sha256_status": "confirmed", "format": "mat"}],
        "license": {"id": "test-license", "url": None, "non_commercial": None}, "citation": "Test citation.",
        "reader": {"function": f"neuroreg.data.readers.{reader}", "options": options or {"rdm": "mIT_test"}},
        "split": "none",
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return path


def test_manifest_rdm_converts_once_and_caches_by_content(tmp_path, monkeypatch):
    data = tmp_path / "data"
    (data / "tiny-rdm").mkdir(parents=True)
    mat = tiny_mat(data / "tiny-rdm" / "tiny.mat")
    monkeypatch.setenv("NEUROREG_MANIFEST_DIR", str(tmp_path / "manifests"))
    write_manifest(tmp_path / "manifests", mat)
    src = ManifestRDM("tiny-rdm", data_dir=str(data), cache_dir=str(tmp_path / "cache"), fetch=False)
    t = src.load_rdm()
    cached = list((tmp_path / "cache").glob("tiny-rdm_*.h5"))
    assert len(cached) == 1 and t.name == str(cached[0])
    assert t.n_images == 4 and t.citation == "Test citation." and t.license == "test-license"
    assert t.source.startswith("tiny-rdm:tiny.mat:mIT_test, key=")
    stamp = cached[0].stat().st_mtime_ns
    again = ManifestRDM("tiny-rdm", data_dir=str(data), cache_dir=str(tmp_path / "cache"), fetch=False).load_rdm()
    assert cached[0].stat().st_mtime_ns == stamp and np.array_equal(again.rdm, t.rdm)  # read from the cache
    np.testing.assert_allclose(rdm_targets(cached[0]).rdm, t.rdm)
    # other reader options are another conversion
    write_manifest(tmp_path / "manifests", mat, options={"rdm": "mIT_test", "metric": "cosine"})
    other = ManifestRDM("tiny-rdm", data_dir=str(data), cache_dir=str(tmp_path / "cache"), fetch=False).load_rdm()
    assert other.metric == "cosine" and len(list((tmp_path / "cache").glob("*.h5"))) == 2
    # a changed file fails its checksum before anything reads it
    mat.write_bytes(mat.read_bytes() + b"x")
    from neuroreg.data.fetch import ChecksumError

    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        ManifestRDM("tiny-rdm", data_dir=str(data), cache_dir=str(tmp_path / "cache"), fetch=False).load_rdm()


def test_manifest_rdm_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUROREG_MANIFEST_DIR", str(tmp_path / "manifests"))
    mat = tiny_mat(tmp_path / "tiny.mat")
    write_manifest(tmp_path / "manifests", mat)
    with pytest.raises(FileNotFoundError, match="tiny-rdm: not fetched yet: .*tiny.mat; run `neuroreg data fetch tiny-rdm`"):
        ManifestRDM("tiny-rdm", data_dir=str(tmp_path / "empty"), cache_dir=str(tmp_path / "c"), fetch=False).load_rdm()
    (tmp_path / "d" / "tiny-rdm").mkdir(parents=True)
    (tmp_path / "d" / "tiny-rdm" / "tiny.mat").write_bytes(mat.read_bytes())
    write_manifest(tmp_path / "manifests", mat, options={"rdm": "mIT_test", "bogus": 1})
    with pytest.raises(RDMError, match="field 'reader.options': .*read_kriegeskorte2008 has no arguments \\['bogus'\\]"):
        ManifestRDM("tiny-rdm", data_dir=str(tmp_path / "d"), cache_dir=str(tmp_path / "c"), fetch=False).load_rdm()
    write_manifest(tmp_path / "manifests", mat)
    import neuroreg.data.readers.kriegeskorte2008 as reader

    monkeypatch.setattr(reader, "read_kriegeskorte2008", lambda path, rdm: f"responses of {path}")
    with pytest.raises(RDMError, match="expected a reader returning RDMTargets, found .*read_kriegeskorte2008 returning str"):
        ManifestRDM("tiny-rdm", data_dir=str(tmp_path / "d"), cache_dir=str(tmp_path / "c"), fetch=False).load_rdm()
    with pytest.raises(FileNotFoundError, match="expected an RDMTargets .h5 file or a data manifest name, found neither"):
        rdm_targets("no-such-rdm")
    with pytest.raises(TypeError, match="gives dissimilarities, not responses"):
        RDMFile("x.h5").load()


def test_manifest_rdm_fetches_a_missing_file_then_converts(tmp_path, monkeypatch, capsys):
    from _http import FileServer

    mat = tiny_mat(tmp_path / "tiny.mat")
    monkeypatch.setenv("NEUROREG_MANIFEST_DIR", str(tmp_path / "manifests"))
    with FileServer({"/files/tiny.mat": mat.read_bytes()}) as server:
        write_manifest(tmp_path / "manifests", mat, url=f"{server.url}/files/tiny.mat")
        t = ManifestRDM("tiny-rdm", data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache")).load_rdm()
        assert [p for p, _ in server.requests] == ["/files/tiny.mat"]
        assert (tmp_path / "data" / "tiny-rdm" / "tiny.mat").read_bytes() == mat.read_bytes()
        assert "tiny-rdm: license test-license" in capsys.readouterr().out  # the notice before a download
        ManifestRDM("tiny-rdm", data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache")).load_rdm()
        assert len(server.requests) == 1  # present and verified: not downloaded again
    assert t.n_images == 4 and t.rdm.shape == (6,)
