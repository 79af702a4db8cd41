"""The 92-image IT RDM for tests: a data directory holding the shared file, and its manifest.

The tests that convert ``kriegeskorte2008-it92`` on demand (the real-scale recipe arms,
:class:`~neuroreg.targets.rdm.ManifestRDM`) need the ``.mat`` in a data directory and a
manifest naming it. The file comes from the shared data (``NEUROREG_TEST_DATA``, else
``../shared/data``); the manifest is the repository's ``data_manifests/kriegeskorte2008-it92.yaml``
when it has one, else one written here with the same name, role, reader and checksum.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MAT = "Kriegeskorte_Neuron2008_supplementalData.mat"
SHA256 = "06f21214399a5d43dc264eed19a7f4b8daf11c8622a59eec3e106064ce5e3504"
NAME = "kriegeskorte2008-it92"
URL = ("https://github.com/rsagroup/rsatoolbox/raw/f1f83cadb7243492a1aae7460466e0f0140b20ac/"
       f"demos/92imageData/{MAT}")


def shared_mat() -> Path | None:
    """The shared ``.mat`` file, or ``None`` when no copy exists."""
    base = os.environ.get("NEUROREG_TEST_DATA")
    for folder in ([Path(base)] if base else []) + [ROOT.parent / "shared" / "data"]:
        path = folder / "kriegeskorte2008_it92" / MAT
        if path.is_file():
            return path
    return None


def require_mat() -> Path:
    path = shared_mat()
    if path is None:
        pytest.skip(f"no copy of {MAT} (set NEUROREG_TEST_DATA to the folder holding kriegeskorte2008_it92/)")
    return path


def manifest_dir(folder: Path) -> Path:
    """A folder whose ``kriegeskorte2008-it92.yaml`` names the shared file (the repository's, if shipped)."""
    shipped = ROOT / "data_manifests" / f"{NAME}.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    if shipped.is_file():
        shutil.copy(shipped, folder / shipped.name)
        return folder
    manifest = {
        "name": NAME, "title": "Kiani 2007 / Kriegeskorte 2008 macaque IT RDM over 92 object images", "kind": "neural",
        "species": "macaque", "area": "IT", "modality": "electrophysiology",
        "files": [{"name": MAT, "role": "path", "url": URL, "sha256": SHA256, "sha256_status": "confirmed", "format": "mat"}],
        "license": {"id": "unstated (distributed with rsatoolbox, MIT)", "url": None, "non_commercial": None},
        "citation": "Kiani et al. (2007) J Neurophysiol 97; Kriegeskorte et al. (2008) Neuron 60.",
        "reader": {"function": "neuroreg.data.readers.kriegeskorte2008.read_kriegeskorte2008", "options": {}},
        "split": "none: only dissimilarities of 92 images",
    }
    (folder / f"{NAME}.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return folder


def it92_environment(monkeypatch: pytest.MonkeyPatch, tmp: Path) -> Path:
    """Point ``NEUROREG_DATA_DIR`` / ``NEUROREG_MANIFEST_DIR`` at a data directory holding the
    shared file (skips without one); returns the data directory."""
    from neuroreg.data.manifests import load_manifest

    mat = require_mat()
    manifests = manifest_dir(tmp / "manifests")
    m = load_manifest(manifests / f"{NAME}.yaml")
    data = tmp / "data_dir"
    (data / NAME).mkdir(parents=True, exist_ok=True)
    target = data / NAME / m.files[0].name
    if not target.exists():
        os.symlink(mat, target)
    monkeypatch.setenv("NEUROREG_DATA_DIR", str(data))
    monkeypatch.setenv("NEUROREG_MANIFEST_DIR", str(manifests))
    return data
