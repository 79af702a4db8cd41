"""The real data sets in tests: byte-exact copies of public files, served as a mirror of their sources.

- :func:`shared_data_dir`: the copies (``$NEUROREG_TEST_DATA``, else ``../shared/data``
  next to the repository root), or ``None``;
- :class:`DataMirror` / :func:`data_mirror`: a local HTTP server answering the URL
  paths of the manifests (``/cowleygroup/V4_compact_models/raw/<commit>/...``,
  ``/rsagroup/rsatoolbox/raw/<commit>/demos/92imageData/...``) from the copies, with
  ``Range`` requests, so ``fetch(..., mirror=server.url)`` runs the real download path;
- :func:`real_data_dir`: a data directory filled by that fetch (checksums verified),
  once per test run; :func:`real_data` is the session fixture around it.

Tests skip only where no source of the files exists: no copy and the real URLs
unreachable.
"""

from __future__ import annotations

import contextlib
import os
import threading
import urllib.parse
import warnings
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: URL path prefix of a source -> folder of its copies inside the shared data directory
SOURCES = {
    "/cowleygroup/V4_compact_models/raw/f4552ad9d34a466ebc66658f72a08a8e5038f1cf/": "cowley2023_v4/",
    "/rsagroup/rsatoolbox/raw/f1f83cadb7243492a1aae7460466e0f0140b20ac/demos/92imageData/": "kriegeskorte2008_it92/",
}
_BLOCK = 1 << 20


def shared_data_dir() -> Path | None:
    """``$NEUROREG_TEST_DATA``, else ``../shared/data`` beside the repository, else ``None``.

    Raises:
        FileNotFoundError: ``$NEUROREG_TEST_DATA`` names a folder that does not exist.
    """
    env = os.environ.get("NEUROREG_TEST_DATA")
    if env:
        if not Path(env).is_dir():
            raise FileNotFoundError(f"$NEUROREG_TEST_DATA: expected a folder of real data, found {env!r} (no such folder)")
        return Path(env)
    path = ROOT.parent / "shared" / "data"
    return path if path.is_dir() else None


def copied_manifests() -> list[str]:
    """Names of the manifests whose required files all have a confirmed sha256 (the copied ones)."""
    from neuroreg.data.manifests import load_manifests

    return [
        m.name
        for m in load_manifests(ROOT / "data_manifests").values()
        if m.kind == "neural"
        and all(urllib.parse.urlsplit(f.url).path.startswith(tuple(SOURCES)) for f in m.files)
        and all(f.sha256 for f in m.files if not f.optional)
    ]


class DataMirror:
    """Serve the files of ``root`` (a shared data directory) under their sources' URL paths.

    Attributes:
        url: base URL to pass as ``mirror``.
        requests: ``(path, Range header or None)`` of every request.
        corrupt: ``{url path: byte offset}``: that byte is served flipped (a bad download).
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        self.requests: list[tuple[str, str | None]] = []
        self.corrupt: dict[str, int] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
                rng = self.headers.get("Range")
                outer.requests.append((path, rng))
                file = outer.local(path)
                if file is None:
                    self.send_error(404, "not found")
                    return
                size = file.stat().st_size
                start = 0
                if rng and rng.startswith("bytes=") and rng[6:].split("-")[0].isdigit():
                    start = int(rng[6:].split("-")[0])
                    if start >= size:
                        self.send_error(416, "range not satisfiable")
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(size - start))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                flip = outer.corrupt.get(path)
                with open(file, "rb") as f:
                    f.seek(start)
                    offset = start
                    for block in iter(lambda: f.read(_BLOCK), b""):
                        if flip is not None and offset <= flip < offset + len(block):
                            block = bytearray(block)
                            block[flip - offset] ^= 0xFF
                            block = bytes(block)
                        self.wfile.write(block)
                        offset += len(block)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def local(self, url_path: str) -> Path | None:
        """The copy served at ``url_path``, or ``None``."""
        for prefix, folder in SOURCES.items():
            if url_path.startswith(prefix):
                file = (self.root / folder / url_path[len(prefix):]).resolve()
                if file.is_file() and self.root in file.parents:
                    return file
        return None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> DataMirror:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def data_mirror(root: str | os.PathLike | None = None) -> Iterator[DataMirror]:
    """A running :class:`DataMirror` of ``root`` (default :func:`shared_data_dir`); skips without one."""
    root = root if root is not None else shared_data_dir()
    if root is None:
        pytest.skip("no copy of the real data: set NEUROREG_TEST_DATA or provide ../shared/data")
    with DataMirror(root) as server:
        yield server


_FILLED: dict[tuple[Path, tuple[str, ...]], Path] = {}


def real_data_dir(target, names: Iterable[str] | None = None) -> Path:
    """A data directory holding the real data sets ``names`` (default :func:`copied_manifests`).

    Filled by ``neuroreg.data.fetch.fetch`` through a :class:`DataMirror` of the shared
    copies (every file verified against its manifest), or, where there is no copy, from
    the manifests' own URLs; skips the test when neither works. Filled once per test run
    and target.

    Args:
        target: a folder, or pytest's ``tmp_path_factory`` (a folder of the session).
    """
    from neuroreg.data.fetch import FetchError, OptionalFileSkipped, fetch
    from neuroreg.data.manifests import find_manifest

    names = tuple(sorted(names if names is not None else copied_manifests()))
    folder = Path(target.getbasetemp() / "realdata") if hasattr(target, "getbasetemp") else Path(target)
    key = (folder.resolve(), names)
    if key in _FILLED:
        return _FILLED[key]
    manifests = [find_manifest(n, ROOT / "data_manifests") for n in names]
    root = shared_data_dir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptionalFileSkipped)  # the copies hold one session's raw responses
        if root is not None:
            with DataMirror(root) as server:
                for m in manifests:
                    fetch(m, folder, progressbar=False, echo=lambda _: None, mirror=server.url)
        else:
            try:
                for m in manifests:
                    fetch(m, folder, progressbar=False, echo=lambda _: None, mirror="")
            except FetchError as err:
                pytest.skip(f"no copy of the real data (NEUROREG_TEST_DATA unset, {ROOT.parent / 'shared' / 'data'} "
                            f"absent) and its sources cannot be reached: {err}")
    _FILLED[key] = folder
    return folder


@pytest.fixture(scope="session")
def real_data(tmp_path_factory) -> Path:
    """The session's data directory of every copied real data set (see :func:`real_data_dir`)."""
    return real_data_dir(tmp_path_factory)
