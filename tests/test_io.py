import errno
import hashlib
import os
import subprocess

import pytest

from neuroreg.io import atomic_path, atomic_write, file_hash, git_blob_id


def test_atomic_write_replaces_whole_file_and_honours_umask(tmp_path):
    path = tmp_path / "sub" / "f.txt"
    atomic_write(path, lambda f: f.write("one"))
    atomic_write(path, lambda f: f.write("two"))
    assert path.read_text() == "two"
    old = os.umask(0o027)
    try:
        atomic_write(path, lambda f: f.write(b"three"), mode="wb")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.txt"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")

    def full(f):
        f.write("partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write(path, full)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "g.h5") as tmp:
        tmp.write_bytes(b"x")
        raise RuntimeError("writer failed")
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_hashes_match_hashlib_and_git(tmp_path):
    path = tmp_path / "blob.bin"
    data = os.urandom(3 * (1 << 20) + 17)
    path.write_bytes(data)
    assert file_hash(path) == hashlib.sha256(data).hexdigest()
    assert file_hash(path, "md5") == hashlib.md5(data).hexdigest()
    git = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True, check=True)
    assert git_blob_id(path) == git.stdout.strip()
