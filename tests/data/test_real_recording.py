"""ManifestRecording: a manifest's data set fetched, verified, converted and cached by content.

The machinery runs on a toy manifest served locally; the real V4 session and the IT
RDM run through the copies of ``../shared/data`` (served as a mirror of their sources).
"""

import hashlib
import io
import os

import numpy as np
import pytest
import yaml
from _http import FileServer
from _realdata import real_data_dir

from neuroreg.cli import main
from neuroreg.data.datamodules import NeuralDataModule
from neuroreg.data.recording import NeuralRecording
from neuroreg.data.recording_sources import ManifestRecording


def npz_bytes(n=20, k=3, seed=0):
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    np.savez(buf, images=rng.integers(0, 256, (n, 8, 8)).astype(np.uint8),
             responses=rng.poisson(3.0, size=(n, k)).astype(np.float32),
             tiers=np.array(["train"] * (n - 8) + ["validation"] * 4 + ["test"] * 4))
    return buf.getvalue()


PAYLOAD = npz_bytes()


def write_manifest(folder, url, name="toyrec", kind="neural"):
    raw = {
        "name": name, "title": "toy", "kind": kind, "species": "mouse" if kind == "neural" else "none",
        "area": "V1" if kind == "neural" else "none", "modality": "two-photon" if kind == "neural" else "images",
        "files": [{"name": "toy.npz", "role": "path", "url": url, "sha256": hashlib.sha256(PAYLOAD).hexdigest(),
                   "sha256_status": "confirmed", "size": len(PAYLOAD), "format": "npz"}],
        "license": {"id": "CC-BY-4.0", "url": "https://creativecommons.org/licenses/by/4.0/", "non_commercial": False},
        "citation": "Doe, J. (2024). Toy responses.",
        "reader": {"function": "neuroreg.data.readers.arrays.read_arrays", "options": {"response_unit": "spikes", "pixels_per_degree": 1.0}}
        if kind == "neural" else None,
        "split": "given by tiers",
    }
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(raw))


@pytest.fixture
def toy(tmp_path):
    with FileServer({"/files/toy.npz": PAYLOAD}) as server:
        mdir = tmp_path / "manifests"
        # the manifest names a host that does not exist: only the mirror can serve it
        write_manifest(mdir, "https://data.invalid/files/toy.npz")
        write_manifest(mdir, "https://data.invalid/files/toy.npz", name="toyimages", kind="images")
        args = {"data_dir": str(tmp_path / "data"), "cache_dir": str(tmp_path / "cache"), "manifest_dir": str(mdir),
                "mirror": server.url}
        yield server, args, tmp_path


def test_fetches_converts_and_caches_by_content(toy):
    server, args, tmp = toy
    src = ManifestRecording("toyrec", **args)
    rec = src.load()
    assert isinstance(rec, NeuralRecording) and rec.n_images == 20 and rec.n_neurons == 3
    assert rec.response_unit == "spikes" and rec.source.startswith("toyrec:") and rec.license == "CC-BY-4.0"
    np.testing.assert_array_equal(rec.mean_per_image()[1], np.load(io.BytesIO(PAYLOAD))["responses"])
    assert server.requests == [("/files/toy.npz", None)]
    cached = sorted(os.listdir(tmp / "cache"))
    assert cached == [f"toyrec-{src.fingerprint()[:20]}.h5"]  # nothing half-written left beside it
    mtime = (tmp / "cache" / cached[0]).stat().st_mtime_ns
    again = ManifestRecording("toyrec", **args)
    assert again.fingerprint() == src.fingerprint() and again.path == src.path
    np.testing.assert_array_equal(again.load().responses, rec.responses)
    assert (tmp / "cache" / cached[0]).stat().st_mtime_ns == mtime and len(server.requests) == 1
    other = ManifestRecording("toyrec", **args, options={"pixels_per_degree": 2.0})
    assert other.fingerprint() != src.fingerprint()
    assert other.load().pixels_per_degree == 2.0 and len(os.listdir(tmp / "cache")) == 2


def test_a_changed_file_is_refused_not_converted(toy):
    _, args, tmp = toy
    ManifestRecording("toyrec", **args).fingerprint()
    path = tmp / "data" / "toyrec" / "toy.npz"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(data)
    from neuroreg.data.fetch import ChecksumError

    with pytest.raises(ChecksumError, match="toy.npz.*sha256 mismatch"):
        ManifestRecording("toyrec", **args).load()
    assert not (tmp / "cache").exists()


def test_clear_errors(toy):
    _, args, tmp = toy
    with pytest.raises(ValueError, match=r"'manifest': no data set named 'nope' .*known: toyimages, toyrec"):
        ManifestRecording("nope", **args)
    with pytest.raises(ValueError, match="'toyimages' is an image set"):
        ManifestRecording("toyimages", **args)
    offline = ManifestRecording("toyrec", **{**args, "mirror": None}, fetch=False)
    with pytest.raises(FileNotFoundError, match=r"not fetched: .*toy.npz.*run `neuroreg data fetch toyrec --data-dir "):
        offline.load()
    with pytest.raises(ValueError, match="no arguments \\['bogus'\\]"):
        ManifestRecording("toyrec", **args, options={"bogus": 1}).load()
    assert not (tmp / "cache").exists() or not os.listdir(tmp / "cache")


def test_a_class_path_in_yaml(toy):
    from jsonargparse import ArgumentParser
    from pytorch_lightning import LightningDataModule

    _, args, _ = toy
    config = yaml.safe_load(f"""
data:
  class_path: neuroreg.data.datamodules.NeuralDataModule
  init_args:
    batch_size: 4
    recording:
      class_path: neuroreg.data.recording_sources.ManifestRecording
      init_args: {yaml.safe_dump(args, default_flow_style=True).strip()}
""")
    config["data"]["init_args"]["recording"]["init_args"]["manifest"] = "toyrec"
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningDataModule, "data", required=True, fail_untyped=False)
    dm = parser.instantiate(parser.parse_object(config))["data"]
    assert isinstance(dm, NeuralDataModule)
    (source,) = dm.sources.values()
    assert isinstance(source, ManifestRecording) and dm.num_neurons == 3


# ------------------------------------------------------------------ real data sets
@pytest.fixture(scope="module")
def real(tmp_path_factory):
    return real_data_dir(tmp_path_factory, ["cowley2023-v4-210322", "cowley2023-v4-210325", "kriegeskorte2008-it92"])


def image_tiers(rec):
    tiers = np.empty(rec.n_images, dtype=object)
    tiers[rec.trial_image] = rec.trial_tier
    return tiers


def test_a_real_v4_session_end_to_end(real, tmp_path):
    src = ManifestRecording("cowley2023-v4-210325", data_dir=str(real), cache_dir=str(tmp_path))
    rec = src.load()
    assert (rec.species, rec.area, rec.n_neurons, rec.n_images) == ("macaque", "V4", 50, 640)
    assert rec.images.shape == (640, 3, 112, 112) and rec.source.startswith("cowley2023-v4-210325:")
    assert {"train", "validation", "test"} <= set(rec.tiers)
    averaged = np.load(real / "cowley2023-v4-210325" / "responses_210325.npy")  # [neurons, images]
    index, mean = rec.mean_per_image()
    np.testing.assert_allclose(mean, averaged[:, index].T, rtol=1e-5, atol=1e-5)
    assert ManifestRecording("cowley2023-v4-210325", data_dir=str(real), cache_dir=str(tmp_path)).path == src.path
    # images 601-1200 of 210322 are images 1-600 of 210325: the same tier in both recordings
    other = ManifestRecording("cowley2023-v4-210322", data_dir=str(real), cache_dir=str(tmp_path)).load()
    np.testing.assert_array_equal(other.images[600:1200], rec.images[:600])
    assert (image_tiers(other)[600:1200] == image_tiers(rec)[:600]).all()


def test_the_it_rdm_converts_but_is_no_recording(real, tmp_path, capsys):
    out = tmp_path / "it92.h5"
    assert main(["data", "--data-dir", str(real), "convert", "kriegeskorte2008-it92", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    from neuroreg.targets.rdm import RDMTargets

    rdm = RDMTargets.load(out)
    assert rdm.rdm.shape == (92 * 91 // 2,) and rdm.images.shape[0] == 92
    assert rdm.citation.startswith("Kiani") and rdm.source.startswith("kriegeskorte2008-it92:")
    with pytest.raises(TypeError, match="not a NeuralRecording"):
        ManifestRecording("kriegeskorte2008-it92", data_dir=str(real), cache_dir=str(tmp_path / "cache")).load()
    assert not list((tmp_path / "cache").glob("*.h5"))


def test_cli_convert_fetches_through_a_mirror(toy, capsys):
    server, args, tmp = toy
    base = ["data", "--manifests", args["manifest_dir"], "--data-dir", args["data_dir"]]
    out = tmp / "toy.h5"
    assert main(base + ["convert", "toyrec", "--out", str(out)]) == 1  # not fetched, and no mirror given
    assert "neuroreg data fetch toyrec" in capsys.readouterr().err
    assert main(base + ["convert", "toyrec", "--fetch", "--mirror", server.url, "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out and server.requests == [("/files/toy.npz", None)]
    assert NeuralRecording.load(out).n_images == 20
