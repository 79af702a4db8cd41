"""File helpers shared by every package: atomic writes, file hashing, safe checkpoint loading.

A file neuroreg writes (a report, a recording, a TargetSet, a lock file, a status file) is
written to a temporary file in the target directory, flushed to disk and moved into place
with ``os.replace``: a reader sees either the previous file or the complete new one, never
a partial one, and a failed write leaves nothing behind. Files get the permissions of a
plainly created one (``0666`` under the process umask), so a cache shared by a group stays
readable by it.

A checkpoint is read with :func:`load_checkpoint` only: ``torch.load(weights_only=True)``,
which rebuilds tensors, numbers, strings and containers and refuses any other object, so a
crafted file cannot run code (a plain pickle calls whatever it names while it loads).
neuroreg's own checkpoints hold nothing else (random states are stored as tensors, see
:mod:`neuroreg.runs.random_state`), so no extra type is allow-listed.

>>> import tempfile, pathlib
>>> out = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
>>> atomic_write(out, lambda f: f.write("hello"))
>>> out.read_text(), file_hash(out)[:12]
('hello', '2cf24dba5fb0')
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import pickle
import re
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

_BLOCK = 1 << 20
#: errors of a write the file system cannot hold
_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def umask_mode(mode: int = 0o666) -> int:
    """``mode`` under the process umask (``tempfile`` itself creates 0600 files)."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync it and move it onto ``path``.

    For writers that need a file name rather than a file object (h5py, ``savefig``). The
    temporary file exists (empty) when the block starts. On any exception it is removed
    and the exception re-raised; ``path`` is left as it was.

    Raises:
        OSError: the directory cannot be created or written (e.g. ``ENOSPC``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        os.close(fd)
        os.chmod(tmp, umask_mode(0o666))
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if err.errno in _FULL:
            raise OSError(err.errno, f"{os.strerror(err.errno)}: cannot write {path} (nothing was written; "
                                     "a previous file of that name is unchanged)") from err
        raise
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_hdf5(path: str | os.PathLike[str], **kwargs: Any) -> Iterator[Any]:
    """Yield a new, writable ``h5py.File`` built in memory; on success its bytes are written to
    ``path`` with :func:`atomic_write`.

    HDF5 writing straight to a file that the disk cannot hold (``ENOSPC``, a quota, a file-size
    limit) fails inside the library, and closing such a file can crash the process; built in
    memory, the only writes to disk are plain ones, whose failure is an ``OSError`` naming
    ``path`` and leaves nothing behind.

    Args:
        path: the final ``.h5`` file.
        **kwargs: passed to ``h5py.File`` (e.g. ``libver``).

    Raises:
        OSError: the file cannot be written (e.g. ``ENOSPC``); ``path`` is left as it was.
    """
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w", **kwargs) as f:
        yield f
    atomic_write(path, lambda out: out.write(buffer.getbuffer()), mode="wb")


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[Any]], Any], mode: str = "w") -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, fsync, then ``os.replace``.

    Args:
        path: the final file.
        write: called once with the open temporary file.
        mode: ``"w"`` (text) or ``"wb"`` (bytes).

    Raises:
        Whatever ``write`` raises, or ``OSError`` from the file system; the temporary file
        is removed and ``path`` left as it was.
    """
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def yaml_problem(err: Exception) -> str:
    """``"line L, column C: cannot read YAML: <problem>"`` for a PyYAML error; the caller puts its
    file's name in front (PyYAML reading a string calls it ``<unicode string>``)."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    what = " ".join(str(part) for part in (getattr(err, "context", None), getattr(err, "problem", None)) if part)
    return f"{where}cannot read YAML: {what or err}"


def file_hash(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (``hashlib`` algorithm name), read in 1 MiB blocks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def git_blob_id(path: str | os.PathLike[str]) -> str:
    """The git blob id of a file: sha1 over ``b"blob <size>\\0"`` and the bytes.

    This is the checksum a git host publishes for every file of a repository, so a file
    whose sha256 was never published can still be verified against the blob id of the
    commit it was taken from.
    """
    h = hashlib.sha1()
    h.update(f"blob {os.path.getsize(path)}\0".encode())
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


class CheckpointError(ValueError):
    """A checkpoint neuroreg refuses to load; the message names the file and says why."""


def _refusal(err: pickle.UnpicklingError) -> str:
    """The line of torch's weights-only error that says what the file asked for."""
    for line in str(err).splitlines():
        line = line.strip()
        found = re.search(r"GLOBAL ([\w.]+)", line)
        if found:
            return f"its pickle asks for {found.group(1)}"
        if line.startswith("WeightsUnpickler error:") and line != "WeightsUnpickler error:":
            return f"its pickle uses {line.split(':', 1)[1].strip()}"
        if line.startswith("Unsupported"):
            return f"its pickle uses an instruction beyond plain data ({line})"
    return "its pickle holds more than tensors and plain values"


def load_checkpoint(path: str | os.PathLike[str], *, mmap: bool = False) -> dict[str, Any]:
    """Read a checkpoint dict on the CPU with ``torch.load(weights_only=True)``.

    Only tensors, numbers, strings, ``None`` and lists / tuples / dicts of them are rebuilt;
    a file whose pickle names any other callable or class (e.g. ``os.system`` in a
    ``__reduce__``) is refused before anything it names is called.

    Args:
        path: the ``.ckpt`` / ``.pt`` file.
        mmap: map the tensors' storage from the file instead of reading it (cheap when only
            a few fields are needed; used for files in torch's zip format only).

    Raises:
        CheckpointError: the file is missing, is not a PyTorch file, is truncated, holds more
            than plain data, or is not a dict.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except pickle.UnpicklingError as err:
        if "weights only load failed" not in str(err).lower():
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({err})") from err
        raise CheckpointError(
            f"{path}: refusing to load this checkpoint: {_refusal(err)}; neuroreg loads checkpoints weights-only "
            "(tensors, numbers, strings and containers of them), so that a file cannot run code; "
            "re-save it from a session you trust with plain values (e.g. torch.save({'state_dict': model.state_dict()}, path))"
        ) from err
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as err:  # torch reports a broken file in several types
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: {str(err) or 'empty file'})") from err
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dict (e.g. with a 'state_dict'), found {type(checkpoint).__name__}")
    return checkpoint
