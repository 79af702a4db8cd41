"""Fetching against a local HTTP server: good checksum, bad checksum, interrupted transfer."""

import hashlib
import json
import os

import pytest
from _http import FileServer

from neuroreg.data.fetch import (
    LOCK_NAME,
    ChecksumError,
    FetchError,
    UnconfirmedChecksumWarning,
    fetch,
    fetch_file,
    license_notice,
    resolve_data_dir,
    verify,
)
from neuroreg.data.manifests import parse_manifest

PAYLOAD = bytes(range(256)) * 4000  # 1 MB


def manifest(url, sha256=None, md5=None, size=None, non_commercial=True, name="toy"):
    return parse_manifest(
        {
            "name": name,
            "title": "toy",
            "kind": "images",
            "species": "none",
            "area": "none",
            "modality": "images",
            "files": [
                {
                    "name": "blob.bin",
                    "url": url,
                    "sha256": sha256,
                    "sha256_status": "confirmed" if sha256 else "unconfirmed",
                    "md5": md5,
                    "size": size,
                    "format": "npz",
                }
            ],
            "license": {"id": "CC-BY-NC-ND-4.0", "url": "https://example.org", "non_commercial": non_commercial},
            "citation": "Someone (2020). A paper.",
            "reader": None,
            "split": "none",
        }
    )


@pytest.fixture
def server():
    with FileServer({"/blob.bin": PAYLOAD}) as s:
        yield s


def test_good_checksum(server, tmp_path):
    m = manifest(server.url + "/blob.bin", sha256=hashlib.sha256(PAYLOAD).hexdigest(), size=len(PAYLOAD))
    lines = []
    (v,) = fetch(m, tmp_path, progressbar=False, echo=lines.append)
    assert v.status == "ok" and v.path.read_bytes() == PAYLOAD
    assert "NON-COMMERCIAL" in lines[0] and "Please cite" in lines[0]
    # cached: a second fetch does not download again
    n = len(server.requests)
    fetch_file(m, m.files[0], tmp_path, progressbar=False)
    assert len(server.requests) == n
    assert [x.status for x in verify(m, tmp_path)] == ["ok"]


def test_bad_checksum_moves_file_aside(server, tmp_path):
    wrong = "0" * 64
    m = manifest(server.url + "/blob.bin", sha256=wrong)
    with pytest.raises(ChecksumError) as err:
        fetch_file(m, m.files[0], tmp_path, progressbar=False)
    msg = str(err.value)
    assert wrong in msg and hashlib.sha256(PAYLOAD).hexdigest() in msg and "blob.bin" in msg
    folder = tmp_path / "toy"
    assert not (folder / "blob.bin").exists()
    assert len(list(folder.glob("blob.bin.mismatch-*"))) == 1


def test_md5_published_mismatch(server, tmp_path):
    m = manifest(server.url + "/blob.bin", md5="f" * 32)
    with pytest.raises(ChecksumError, match="md5 mismatch"):
        fetch_file(m, m.files[0], tmp_path, progressbar=False)


def test_size_mismatch(server, tmp_path):
    m = manifest(server.url + "/blob.bin", size=len(PAYLOAD) + 1)
    with pytest.raises(ChecksumError, match="expected size"):
        fetch_file(m, m.files[0], tmp_path, progressbar=False)


def test_unconfirmed_records_checksum_then_enforces_it(server, tmp_path):
    m = manifest(server.url + "/blob.bin", md5=hashlib.md5(PAYLOAD).hexdigest())
    with pytest.warns(UnconfirmedChecksumWarning, match="recorded sha256"):
        v = fetch_file(m, m.files[0], tmp_path, progressbar=False)
    assert v.status == "recorded" and v.checked_against == "md5"
    lock = json.loads((tmp_path / LOCK_NAME).read_text())
    assert lock["toy/blob.bin"]["sha256"] == hashlib.sha256(PAYLOAD).hexdigest()
    # no published hash at all: the lock file is the authority on later verifications
    m2 = manifest(server.url + "/blob.bin")
    assert [x.status for x in verify(m2, tmp_path)] == ["ok"]
    (tmp_path / "toy" / "blob.bin").write_bytes(b"tampered")
    with pytest.raises(ChecksumError, match="recorded in checksums.lock.json"):
        verify(m2, tmp_path)


def test_interrupted_transfer_resumes(server, tmp_path):
    m = manifest(server.url + "/blob.bin", sha256=hashlib.sha256(PAYLOAD).hexdigest())
    server.cut["/blob.bin"] = 300_000
    with pytest.raises(FetchError, match="interrupted"):
        fetch_file(m, m.files[0], tmp_path, progressbar=False)
    folder = tmp_path / "toy"
    assert not (folder / "blob.bin").exists()
    assert (folder / "blob.bin.part").stat().st_size == 300_000
    v = fetch_file(m, m.files[0], tmp_path, progressbar=True)  # tqdm progress bar on the resumed part
    assert v.status == "ok" and v.path.read_bytes() == PAYLOAD
    assert server.requests[-1][1] == "bytes=300000-"
    assert not (folder / "blob.bin.part").exists()


def test_http_error_and_missing(server, tmp_path):
    m = manifest(server.url + "/nope.bin")
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_file(m, m.files[0], tmp_path, progressbar=False)
    assert [x.status for x in verify(m, tmp_path)] == ["missing"]


def test_data_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("NEUROREG_DATA_DIR", str(tmp_path))
    assert resolve_data_dir() == tmp_path
    assert resolve_data_dir("x") == resolve_data_dir("x")
    monkeypatch.delenv("NEUROREG_DATA_DIR")
    assert str(resolve_data_dir()) == "data"


def test_license_notice_unconfirmed():
    m = manifest("http://127.0.0.1/x", non_commercial=None)
    assert "UNCONFIRMED" in license_notice(m)
    assert "NON-COMMERCIAL" not in license_notice(manifest("http://127.0.0.1/x", non_commercial=False))


def test_downloads_and_the_lock_file_honour_the_umask(server, tmp_path):
    """A shared data directory: under umask 002 the download and checksums.lock.json are group-writable."""
    old = os.umask(0o002)
    try:
        m = manifest(server.url + "/blob.bin", md5=hashlib.md5(PAYLOAD).hexdigest())
        with pytest.warns(UnconfirmedChecksumWarning):
            (v,) = fetch(m, tmp_path, progressbar=False, echo=lambda _line: None)
    finally:
        os.umask(old)
    assert v.status == "recorded"
    for path in (v.path, tmp_path / LOCK_NAME):
        assert path.stat().st_mode & 0o777 == 0o664, path


def test_a_second_fetch_of_a_file_waits_for_the_first_and_downloads_nothing(server, tmp_path):
    """Two processes fetching one file take turns (flock): the second finds it present instead of writing the same .part."""
    import threading

    from neuroreg.data.fetch import exclusive

    m = manifest(server.url + "/blob.bin", sha256=hashlib.sha256(PAYLOAD).hexdigest(), size=len(PAYLOAD))
    folder = tmp_path / "toy"
    results = []
    with exclusive(tmp_path / ".locks" / "toy--blob.bin.flock"):  # the first fetcher, mid-download
        worker = threading.Thread(target=lambda: results.append(fetch_file(m, m.files[0], tmp_path, progressbar=False)))
        worker.start()
        worker.join(timeout=1.0)
        assert worker.is_alive() and not results  # waiting for the lock
        (folder / "blob.bin").write_bytes(PAYLOAD)  # the first one finishes
    worker.join(timeout=30)
    assert results and results[0].status == "ok"
    assert server.requests == []  # the second one downloaded nothing
    assert not (folder / "blob.bin.part").exists()


def test_recorded_checksums_of_concurrent_fetches_are_all_kept(server, tmp_path, monkeypatch):
    """Recording an unconfirmed sha256 re-reads the lock file under the lock, so an entry another process wrote
    after this one first read the file survives."""
    import warnings

    import neuroreg.data.fetch as fetch_module

    real_read = fetch_module.read_lock
    calls = []

    def read_lock(data_dir):  # the first read is from before the other process recorded its file
        calls.append(1)
        return {} if len(calls) == 1 else real_read(data_dir)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnconfirmedChecksumWarning)
        fetch(manifest(server.url + "/blob.bin"), tmp_path, progressbar=False, echo=lambda _: None)  # the other process
        monkeypatch.setattr(fetch_module, "read_lock", read_lock)
        fetch(manifest(server.url + "/blob.bin", name="other"), tmp_path, progressbar=False, echo=lambda _: None)
    assert len(calls) >= 2
    lock = json.loads((tmp_path / LOCK_NAME).read_text())
    assert {"toy/blob.bin", "other/blob.bin"} <= set(lock)
