"""`neuroreg data list | info | fetch | verify | convert` end to end against a local server."""

import hashlib
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from _http import FileServer

from neuroreg.cli import TOOLS, main
from neuroreg.data.recording import NeuralRecording


def npz_bytes(n=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    np.savez(
        buf,
        images=rng.integers(0, 256, (n, 4, 4)).astype(np.uint8),
        responses=rng.normal(size=(n, k)).astype(np.float32),
        tiers=np.array(["train"] * (n - 2) + ["test"] * 2),
    )
    return buf.getvalue()


PAYLOAD = npz_bytes()
ROOT = Path(__file__).resolve().parents[2]


def write_manifest(folder, url, sha256=None, non_commercial=True, name="toyset"):
    raw = {
        "name": name,
        "title": "A toy recording",
        "kind": "neural",
        "species": "mouse",
        "area": "V1",
        "modality": "two-photon",
        "files": [
            {
                "name": "toy.npz",
                "role": "path",
                "url": url,
                "sha256": sha256,
                "sha256_status": "confirmed" if sha256 else "unconfirmed",
                "size": len(PAYLOAD),
                "format": "npz",
            }
        ],
        "license": {"id": "CC-BY-NC-ND-4.0", "url": "https://creativecommons.org/licenses/by-nc-nd/4.0/", "non_commercial": non_commercial},
        "citation": "Doe, J. (2024). Toy responses. Journal 1.",
        "reader": {"function": "neuroreg.data.readers.arrays.read_arrays", "options": {"response_unit": "dF/F", "pixels_per_degree": 1.0}},
        "split": "given by tiers",
    }
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(raw))


@pytest.fixture
def env(tmp_path):
    with FileServer({"/toy.npz": PAYLOAD}) as server:
        mdir, ddir = tmp_path / "manifests", tmp_path / "data"
        write_manifest(mdir, server.url + "/toy.npz", hashlib.sha256(PAYLOAD).hexdigest())
        yield server, ["data", "--manifests", str(mdir), "--data-dir", str(ddir)], tmp_path


def test_registered():
    assert TOOLS["data"] == "neuroreg.data.commands"


def test_list_and_info(env, capsys):
    _, base, _ = env
    assert main(base + ["list"]) == 0
    assert "toyset" in capsys.readouterr().out
    assert main(base + ["info", "toyset"]) == 0
    out = capsys.readouterr().out
    assert "NON-COMMERCIAL" in out and "Doe, J." in out and "toy.npz" in out


def test_fetch_verify_convert(env, capsys):
    _server, base, tmp = env
    assert main(base + ["fetch", "toyset", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.index("NON-COMMERCIAL") < out.index("OK")  # license printed before the file is reported
    assert main(base + ["verify", "toyset"]) == 0
    assert "OK" in capsys.readouterr().out
    h5 = tmp / "out" / "toy.h5"
    assert main(base + ["convert", "toyset", "--out", str(h5), "--option", "area=LM"]) == 0
    rec = NeuralRecording.load(h5)
    assert rec.n_images == 6 and rec.response_unit == "dF/F" and rec.area == "LM"
    assert rec.citation.startswith("Doe, J.") and rec.license == "CC-BY-NC-ND-4.0"
    assert rec.source.startswith("toyset:")


def test_convert_with_checksum_mismatch_leaves_nothing(env, capsys, tmp_path):
    _server, base, tmp = env
    assert main(base + ["fetch", "toyset", "--no-progress"]) == 0
    capsys.readouterr()
    local = tmp / "data" / "toyset" / "toy.npz"
    local.write_bytes(npz_bytes(seed=1)[: len(PAYLOAD)].ljust(len(PAYLOAD), b"\0"))
    h5 = tmp / "out.h5"
    assert main(base + ["convert", "toyset", "--out", str(h5)]) == 1
    err = capsys.readouterr().err
    assert "sha256 mismatch" in err and hashlib.sha256(PAYLOAD).hexdigest() in err and "toy.npz" in err
    assert not h5.exists() and not local.exists()
    assert list(local.parent.glob("toy.npz.mismatch-*"))
    assert not list(h5.parent.glob(".out.h5.*"))


def test_errors_give_nonzero_exit(env, capsys):
    _, base, tmp = env
    assert main(base + ["info", "nosuch"]) == 1
    assert "no data set named 'nosuch'" in capsys.readouterr().err
    assert main(base + ["convert", "toyset", "--out", str(tmp / "x.h5")]) == 1
    assert "not fetched yet" in capsys.readouterr().err
    assert main(base + ["convert", "toyset", "--out", str(tmp / "x.h5"), "--option", "novalue"]) == 1
    capsys.readouterr()
    assert main(["data", "convert", "cifar10", "--out", str(tmp / "c.h5")]) == 1
    assert "image set and has no reader" in capsys.readouterr().err


def test_options_after_the_subcommand(env, capsys):
    _, base, tmp = env
    assert main(["data", "list", "--manifests", base[2]]) == 0
    assert "toyset" in capsys.readouterr().out
    assert main(["data", "--manifests", base[2], "info", "toyset", "--data-dir", str(tmp / "elsewhere")]) == 0
    assert str(tmp / "elsewhere" / "toyset") in capsys.readouterr().out


def test_fetch_unconfirmed_records(tmp_path, capsys):
    with FileServer({"/toy.npz": PAYLOAD}) as server:
        mdir = tmp_path / "m"
        write_manifest(mdir, server.url + "/toy.npz", None, non_commercial=False)
        base = ["data", "--manifests", str(mdir), "--data-dir", str(tmp_path / "d")]
        with pytest.warns(UserWarning, match="recorded sha256"):
            assert main(base + ["fetch", "toyset", "--no-progress"]) == 0
        out = capsys.readouterr().out
        assert "RECORDED" in out and "NON-COMMERCIAL" not in out
        assert (tmp_path / "d" / "checksums.lock.json").exists()
        assert main(base + ["verify", "toyset"]) == 0
        assert "OK" in capsys.readouterr().out


def test_fetch_server_down(tmp_path, capsys):
    mdir = tmp_path / "m"
    write_manifest(mdir, "http://127.0.0.1:9/toy.npz")
    assert main(["data", "--manifests", str(mdir), "--data-dir", str(tmp_path / "d"), "fetch", "toyset", "--no-progress"]) == 1
    assert "cannot connect" in capsys.readouterr().err


def test_convert_pickle_needs_trust_without_confirmed_sha256(tmp_path, capsys):
    rng = np.random.default_rng(0)
    data = {"images": rng.integers(0, 256, (10, 8, 8)), "responses": rng.poisson(2.0, (2, 10, 3)).astype(float)}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("x/data_binned_responses/cadena_ploscb_data.pkl", pickle.dumps(data))
    raw = yaml.safe_load((ROOT / "data_manifests" / "cadena2019.yaml").read_text())
    with FileServer({"/c.zip": buf.getvalue()}) as server:
        raw["files"][0]["url"] = server.url + "/c.zip"
        raw["reader"]["options"].update(n_test=5, crop=0, downsample=1)
        mdir = tmp_path / "m"
        mdir.mkdir()
        (mdir / "cadena2019.yaml").write_text(yaml.safe_dump(raw))
        base = ["data", "--manifests", str(mdir), "--data-dir", str(tmp_path / "d")]
        out = tmp_path / "c.h5"
        with pytest.warns(UserWarning, match="recorded sha256"):
            assert main(base + ["convert", "cadena2019", "--out", str(out), "--fetch"]) == 1
        assert "--trust-pickle" in capsys.readouterr().err and not out.exists()
        assert main(base + ["convert", "cadena2019", "--out", str(out), "--trust-pickle"]) == 0  # lock now known
        rec = NeuralRecording.load(out)
        assert rec.n_trials == 20 and rec.species == "macaque" and "Cadena" in rec.citation


def test_sensorium_manifest_end_to_end(tmp_path, capsys):
    from _sensorium import tree, write_zip

    files, *_ = tree(zero_test=True)
    zpath = write_zip(tmp_path / "s.zip", files)
    raw = yaml.safe_load((ROOT / "data_manifests" / "sensorium2022-26872-17-20.yaml").read_text())
    with FileServer({"/s.zip": zpath.read_bytes()}) as server:
        raw["files"][0]["url"] = server.url + "/s.zip"
        mdir = tmp_path / "m"
        mdir.mkdir()
        (mdir / "sensorium2022-26872-17-20.yaml").write_text(yaml.safe_dump(raw))
        out = tmp_path / "r.h5"
        base = ["data", "--manifests", str(mdir), "--data-dir", str(tmp_path / "d")]
        with pytest.warns(UserWarning):  # unconfirmed sha256 recorded; zeroed test trials withheld
            assert main(base + ["convert", "sensorium2022-26872-17-20", "--fetch", "--out", str(out)]) == 0
    assert "NON-COMMERCIAL" in capsys.readouterr().out
    rec = NeuralRecording.load(out)
    assert rec.images.shape[2:] == (2, 4)  # the manifest's downsample: 4
    held = np.isin(rec.trial_tier, ["test", "final_test"])
    assert np.isnan(rec.responses[held]).all() and not np.isnan(rec.responses[~held]).any()
    assert rec.license == "CC-BY-NC-ND-4.0" and "Sensorium" in rec.citation
