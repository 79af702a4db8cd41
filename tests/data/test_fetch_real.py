"""Fetching the real data sets through a local mirror of their sources: checksums, blob ids,
resumed transfers, corrupted bytes, optional files, and the CLI's view of it."""

import hashlib
import json
import warnings
from pathlib import Path

import pytest
import yaml
from _realdata import data_mirror, shared_data_dir

from neuroreg.cli import main
from neuroreg.data.fetch import (
    LOCK_NAME,
    ChecksumError,
    FetchError,
    OptionalFileSkipped,
    UnconfirmedChecksumWarning,
    fetch,
    fetch_file,
    mirror_url,
    verify,
)
from neuroreg.data.manifests import find_manifest, parse_manifest
from neuroreg.io import git_blob_id

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "data_manifests"
V4 = "/cowleygroup/V4_compact_models/raw/f4552ad9d34a466ebc66658f72a08a8e5038f1cf/data_V4_responses"


def quiet(*_):
    pass


@pytest.fixture
def mirror():
    with data_mirror() as server:
        yield server


def copy_of(name: str) -> Path:
    root = shared_data_dir()
    if name.endswith(".mat"):
        return root / "kriegeskorte2008_it92" / name
    folder = {"images": "images", "responses": "responses_repeat_averaged", "responses_raw": "responses_raw"}
    stem, session = name.rsplit("_", 1)
    return root / "cowley2023_v4" / "data_V4_responses" / folder[stem] / name.replace("responses_raw_", "responses_")


def test_fetch_a_v4_session_and_the_it_rdm_through_the_mirror(mirror, tmp_path):
    results = []
    for name in ("cowley2023-v4-210325", "kriegeskorte2008-it92"):
        results += fetch(find_manifest(name, MANIFESTS), tmp_path, progressbar=False, echo=quiet, mirror=mirror.url)
    assert [v.status for v in results] == ["ok"] * 4
    assert all(v.checked_against == "sha256" for v in results)
    for v in results:
        assert v.sha256 == hashlib.sha256(copy_of(v.file.name).read_bytes()).hexdigest() == v.file.sha256
    assert [p for p, _ in mirror.requests] == [
        f"{V4}/images/images_210325.zip",
        f"{V4}/responses_repeat_averaged/responses_210325.npy",
        f"{V4}/responses_raw/responses_210325.npy",
        "/rsagroup/rsatoolbox/raw/f1f83cadb7243492a1aae7460466e0f0140b20ac/demos/92imageData/"
        "Kriegeskorte_Neuron2008_supplementalData.mat",
    ]
    assert not (tmp_path / LOCK_NAME).exists()  # every file was confirmed: nothing to record
    assert [v.status for v in verify(find_manifest("cowley2023-v4-210325", MANIFESTS), tmp_path)] == ["ok"] * 3


def test_the_mirror_from_the_environment_and_a_resumed_transfer(mirror, tmp_path, monkeypatch):
    monkeypatch.setenv("NEUROREG_DATA_MIRROR", mirror.url + "/")
    m = find_manifest("cowley2023-v4-210224", MANIFESTS)
    zip_file = m.file("images_210224.zip")
    folder = tmp_path / m.name
    folder.mkdir()
    (folder / "images_210224.zip.part").write_bytes(copy_of(zip_file.name).read_bytes()[:1_000_000])
    v = fetch_file(m, zip_file, tmp_path, progressbar=False)
    assert v.status == "ok" and mirror.requests == [(f"{V4}/images/images_210224.zip", "bytes=1000000-")]
    assert not (folder / "images_210224.zip.part").exists()


def test_a_corrupted_byte_is_caught_and_the_file_moved_aside(mirror, tmp_path):
    m = find_manifest("cowley2023-v4-210325", MANIFESTS)
    f = m.file("images_210325.zip")
    mirror.corrupt[f"{V4}/images/images_210325.zip"] = 123_456
    bad = bytearray(copy_of(f.name).read_bytes())
    bad[123_456] ^= 0xFF
    found = hashlib.sha256(bad).hexdigest()
    with pytest.raises(ChecksumError) as err:
        fetch_file(m, f, tmp_path, progressbar=False, mirror=mirror.url)
    msg = str(err.value)
    assert "images_210325.zip" in msg and f"expected {f.sha256}" in msg and f"found {found}" in msg
    folder = tmp_path / m.name
    assert [p.name for p in folder.iterdir()] == [f"images_210325.zip.mismatch-{found[:12]}"]


def blob_only(name: str, file: str) -> object:
    """The manifest ``name`` with the sha256 of ``file`` removed: its git blob id is all there is."""
    raw = yaml.safe_load((MANIFESTS / f"{name}.yaml").read_text())
    for f in raw["files"]:
        if f["name"] == file:
            f["sha256"], f["sha256_status"] = None, "unconfirmed"
    return parse_manifest(raw)


def test_a_file_with_only_a_git_blob_id(mirror, tmp_path):
    m = blob_only("cowley2023-v4-190925", "responses_190925.npy")
    f = m.file("responses_190925.npy")
    copy = copy_of(f.name)
    with pytest.warns(UnconfirmedChecksumWarning, match="verified against the published git blob id"):
        v = fetch_file(m, f, tmp_path, progressbar=False, mirror=mirror.url)
    assert v.status == "recorded" and v.checked_against == "git blob id"
    lock = json.loads((tmp_path / LOCK_NAME).read_text())
    assert lock[f"{m.name}/{f.name}"]["sha256"] == hashlib.sha256(copy.read_bytes()).hexdigest()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (again,) = [x for x in verify(m, tmp_path) if x.file.name == f.name]
    assert again.status == "ok"


def test_a_git_blob_id_mismatch(mirror, tmp_path):
    m = blob_only("cowley2023-v4-190925", "responses_190925.npy")
    f = m.file("responses_190925.npy")
    mirror.corrupt[f"{V4}/responses_repeat_averaged/responses_190925.npy"] = 200
    bad = tmp_path / "bad.npy"
    data = bytearray(copy_of(f.name).read_bytes())
    data[200] ^= 0xFF
    bad.write_bytes(data)
    with pytest.raises(ChecksumError) as err:
        fetch_file(m, f, tmp_path, progressbar=False, mirror=mirror.url)
    msg = str(err.value)
    assert "responses_190925.npy" in msg and "git blob id mismatch" in msg
    assert f"expected {f.git_blob}" in msg and f"found {git_blob_id(bad)}" in msg
    assert not (tmp_path / m.name / f.name).exists()
    assert len(list((tmp_path / m.name).glob("responses_190925.npy.mismatch-*"))) == 1
    assert not (tmp_path / LOCK_NAME).exists()  # nothing recorded for a rejected file


def test_optional_files_missing_at_the_mirror_are_skipped_required_ones_fail(mirror, tmp_path):
    m = find_manifest("cowley2023-v4-190925", MANIFESTS)
    with pytest.warns(OptionalFileSkipped, match="responses_raw_190925.npy.*HTTP 404"):
        results = fetch(m, tmp_path, progressbar=False, echo=quiet, mirror=mirror.url)
    assert [(v.file.role, v.status) for v in results] == [("images", "ok"), ("responses", "ok"), ("raw_responses", "missing")]
    uncopied = find_manifest("cowley2023-v4-211103", MANIFESTS)
    with pytest.raises(FetchError, match="images_211103.zip: HTTP 404") as err:
        fetch(uncopied, tmp_path, progressbar=False, echo=quiet, mirror=mirror.url)
    assert err.value.http_status == 404


def test_mirror_url(monkeypatch):
    url = "https://github.com/o/r/raw/c0ffee/data/x.npy?raw=true"
    assert mirror_url(url, "http://127.0.0.1:9/base/") == "http://127.0.0.1:9/base/o/r/raw/c0ffee/data/x.npy?raw=true"
    monkeypatch.setenv("NEUROREG_DATA_MIRROR", "http://mirror.example:8080")
    assert mirror_url(url) == "http://mirror.example:8080/o/r/raw/c0ffee/data/x.npy?raw=true"
    assert mirror_url(url, "") == url  # an empty mirror argument overrides the environment
    with pytest.raises(ValueError, match=r"mirror: expected a base URL .* found 'ftp://x'"):
        mirror_url(url, "ftp://x")
    monkeypatch.setenv("NEUROREG_DATA_MIRROR", "/work/shared/data")
    with pytest.raises(ValueError, match=r"\$NEUROREG_DATA_MIRROR: expected a base URL"):
        mirror_url(url)


def test_cli_list_info_and_fetch_with_mirror(mirror, tmp_path, capsys):
    base = ["data", "--data-dir", str(tmp_path)]
    assert main(base + ["list"]) == 0
    lines = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines()}
    assert lines["kriegeskorte2008-it92"].endswith("(confirmed)")
    assert lines["cowley2023-v4-210325"].endswith("(confirmed)")
    assert lines["cowley2023-v4-190925"].endswith("(verified by git blob id)")
    assert lines["cadena2019"].endswith("(sha256 unconfirmed)")
    assert main(base + ["info", "cowley2023-v4-190925"]) == 0
    out = capsys.readouterr().out
    raw = find_manifest("cowley2023-v4-190925", MANIFESTS).file("responses_raw_190925.npy")
    assert f"git blob id: {raw.git_blob}" in out and "optional" in out and "GPL-3.0" in out
    with pytest.warns(OptionalFileSkipped):
        assert main(base + ["fetch", "cowley2023-v4-190925", "--no-progress", "--mirror", mirror.url]) == 0
    out = capsys.readouterr().out
    assert out.count("\nOK ") == 2 and "SKIPPED" in out and "responses_raw_190925.npy (optional" in out
    assert main(base + ["fetch", "cowley2023-v4-211103", "--no-progress", "--mirror", mirror.url]) == 1
    assert "HTTP 404" in capsys.readouterr().err
