"""Bad input, as a user would type it, through the real ``neuroreg`` command.

Each case builds a small bad file (a config, a recording, a TargetSet, a checkpoint, a
manifest, a sweep, a recipe, a report) or a bad command line, runs ``neuroreg`` on it and
checks what the user sees: the exit status, a message naming the file or field (and what
was expected and found), no ``Traceback``, and nothing half-written (no temporary file,
no output file). Most cases call :func:`neuroreg.cli.main` in this process with the real
file descriptors captured (what escapes ``main`` is printed as the interpreter would);
the ones about the process itself (a full disk, Ctrl-C, ``--debug``) run it in a
subprocess.
"""

from __future__ import annotations

import copy
import os
import pickle
import re
import resource
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from _runs import DATA, MODEL, make_run
from conftest import make_recording

from neuroreg.cli import main
from neuroreg.targets.format import TargetSet

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
ENV.pop("NEUROREG_DEBUG", None)

TRAINER = {"accelerator": "cpu", "devices": 1, "fast_dev_run": True, "logger": False, "enable_progress_bar": False,
           "enable_model_summary": False, "enable_checkpointing": False}
SIMILARITY = {"class_path": "neuroreg.regularizers.SimilarityRegularizer", "init_args": {"layers": ["layer1"], "weight": 1.0}}
GROUND_TRUTH = {"class_path": "neuroreg.targets.sources.GroundTruthTargets", "init_args": {
    "population": {"class_path": "neuroreg.data.simulated.V1Population",
                   "init_args": {"n_neurons": 20, "preset": "mouse_v1", "image_size": 32, "seed": 0}},
    "cache_dir": "targets"}}
TWIN_MODEL = {"class_path": "neuroreg.twin.module.TwinModule", "init_args": {
    "core": {"class_path": "neuroreg.twin.cores.Stacked2dCore",
             "init_args": {"in_channels": 1, "hidden_channels": 4, "input_kernel": 3, "hidden_kernel": 3, "layers": 1}}}}


# ----------------------------------------------------------------------------- builders
def write_yaml(path: Path, content) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
    return path


def classifier(**init_args) -> dict:
    """A one-batch classifier fit on the embedded digits; ``init_args`` go to the model."""
    model = copy.deepcopy(MODEL)
    model["init_args"].update(init_args)
    return {"seed_everything": 0, "trainer": dict(TRAINER), "model": model, "data": copy.deepcopy(DATA)}


def with_targets(cfg: dict, targets: dict, regularizer: dict | None = None) -> dict:
    cfg["data"]["init_args"]["targets"] = targets
    cfg["model"]["init_args"]["regularizers"] = {"similarity": regularizer or copy.deepcopy(SIMILARITY)}
    return cfg


def fit(tmp: Path, cfg, *extra: str, name: str = "config.yaml") -> list[str]:
    return ["fit", "--config", str(write_yaml(tmp / name, cfg)), *extra]


def digits_keys() -> np.ndarray:
    from neuroreg.data.images import Digits

    images = Digits(size=32)
    return np.concatenate([images.split(s).keys for s in ("train", "validation", "test")])


def target_set(path: Path, neurons: int = 20, keys: np.ndarray | None = None, **fields) -> Path:
    keys = digits_keys() if keys is None else keys
    targets = np.random.default_rng(0).normal(size=(len(keys), neurons)).astype(np.float32)
    TargetSet(targets, keys, key="a" * 64).save(path)
    if fields:
        with h5py.File(path, "a") as f:
            for name, value in fields.items():
                del f[name]
                if value is not None:
                    f[name] = value
    return path


def target_file_config(tmp: Path, path: Path, **init_args) -> list[str]:
    targets = {"class_path": "neuroreg.targets.sources.TargetSetFile", "init_args": {"path": str(path), **init_args}}
    return fit(tmp, with_targets(classifier(), targets))


def twin_config(tmp: Path, recording: Path) -> list[str]:
    data = {"class_path": "neuroreg.data.datamodules.NeuralDataModule", "init_args": {"recording": str(recording)}}
    return fit(tmp, {"seed_everything": 0, "trainer": dict(TRAINER), "model": TWIN_MODEL, "data": data})


class Payload:
    """Unpickling this calls ``os.system("touch <marker>")``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def malicious_checkpoint(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {}, "hyper_parameters": {"payload": Payload(marker)}, "global_step": 0}, path)
    return path


def manifest(tmp: Path, text) -> list[str]:
    write_yaml(tmp / "manifests" / "toy.yaml", text)
    return ["data", "info", "toy", "--manifests", str(tmp / "manifests"), "--data-dir", str(tmp / "data")]


GOOD_MANIFEST = {
    "name": "toy", "title": "A toy recording", "kind": "neural", "species": "mouse", "area": "V1", "modality": "two-photon",
    "files": [{"name": "toy.npz", "role": "path", "url": "https://example.org/toy.npz", "sha256": "0" * 64,
               "sha256_status": "confirmed", "size": 10, "format": "npz"}],
    "license": {"id": "CC-BY-4.0", "url": "https://creativecommons.org/licenses/by/4.0/", "non_commercial": False},
    "citation": "Doe, J. (2024). Toy responses. Journal 1.",
    "reader": {"function": "neuroreg.data.readers.arrays.read_arrays", "options": {"response_unit": "spikes", "pixels_per_degree": 10.0}},
    "split": "given by tiers",
}


def bad_manifest(**changes) -> dict:
    m = copy.deepcopy(GOOD_MANIFEST)
    for key, value in changes.items():
        if value is None:
            m.pop(key)
        else:
            m[key] = value
    return m


def report_dir(tmp: Path, text: str) -> Path:
    run = tmp / "run_a" / "eval"
    run.mkdir(parents=True)
    (run / "report.json").write_text(text)
    return run / "report.json"


# ----------------------------------------------------------------------------- the cases
@dataclass
class Case:
    """``build(tmp) -> argv``; ``rc``: expected exit status; ``match``: regex over stderr
    (``{tmp}`` stands for the case's folder); ``absent``: paths (relative to it) that must not exist."""

    id: str
    build: object
    rc: int
    match: str
    absent: tuple[str, ...] = ()


CASES: list[Case] = []


def case(id: str, rc: int, match: str, absent: tuple[str, ...] = ()):
    def register(build):
        CASES.append(Case(id, build, rc, match, absent))
        return build
    return register


# --- configs: YAML, defaults, fields
case("yaml-syntax", 2, r"{tmp}/config\.yaml: line 3, column 1: cannot read YAML")(
    lambda tmp: fit(tmp, "model:\n  init_args: [1,\n"))
case("yaml-python-tag", 2, r"{tmp}/config\.yaml: line 1, column \d+: cannot read YAML: .*python/object/apply",
     ("MARKER",))(lambda tmp: fit(tmp, f"model: !!python/object/apply:os.system ['touch {tmp}/MARKER']\n"))
case("yaml-syntax-in-defaults", 2, r"{tmp}/base\.yaml: line \d+, column \d+: cannot read YAML")(
    lambda tmp: (write_yaml(tmp / "base.yaml", "trainer:\n  max_epochs: [1\n"),
                 fit(tmp, "defaults: [base.yaml]\nseed_everything: 1\n"))[1])
case("defaults-missing-file", 2, r"{tmp}/config\.yaml: field 'defaults\[0\]': file not found: {tmp}/nope\.yaml")(
    lambda tmp: fit(tmp, "defaults: [nope.yaml]\n"))
case("defaults-not-a-list", 2, r"{tmp}/config\.yaml: field 'defaults': expected a non-empty list of config files")(
    lambda tmp: fit(tmp, "defaults: base.yaml\n"))
case("defaults-cycle", 2, r"field 'defaults': the configs list each other in a cycle")(
    lambda tmp: (write_yaml(tmp / "b.yaml", "defaults: [config.yaml]\n"), fit(tmp, "defaults: [b.yaml]\n"))[1])
case("config-file-missing", 2, r"{tmp}/nope\.yaml")(lambda tmp: ["fit", "--config", str(tmp / "nope.yaml")])
case("config-not-utf8", 2, r"{tmp}/config\.yaml: cannot read the config")(
    lambda tmp: ["fit", "--config", str((tmp / "config.yaml", (tmp / "config.yaml").write_bytes(b"seed: \xff\xfe\n"))[0])])
case("unknown-top-level-key", 2, r"field 'modle': .*modle.*\n  in {tmp}/config\.yaml, line \d+")(
    lambda tmp: fit(tmp, {**classifier(), "modle": 1}))
case("unknown-init-arg", 2, r"{tmp}/config\.yaml, line \d+: field 'model\.init_args\.taps': Option 'taps' is not accepted")(
    lambda tmp: fit(tmp, classifier(taps=["layer1"])))
case("unknown-class-path", 2, r"{tmp}/config\.yaml, line \d+: field 'model\.init_args\.backbone': .*has no attribute 'Nope'")(
    lambda tmp: fit(tmp, (c := classifier(), c["model"]["init_args"]["backbone"].update(class_path="neuroreg.models.backbones.Nope"))[0]))
case("wrong-type", 2, r"{tmp}/config\.yaml, line \d+: field 'trainer\.max_epochs': expected int, found 'abc'")(
    lambda tmp: fit(tmp, (c := classifier(), c["trainer"].update(max_epochs="abc"))[0]))
case("wrong-type-in-defaults", 2, r"{tmp}/base\.yaml, line 2: field 'trainer\.max_epochs': expected int, found 'abc'")(
    lambda tmp: (write_yaml(tmp / "base.yaml", "trainer:\n  max_epochs: abc\n"), fit(tmp, "defaults: [base.yaml]\n"))[1])
case("wrong-literal", 2, r"{tmp}/config\.yaml, line \d+: field 'model\.init_args\.neural_bn': .*'batch', 'frozen', 'eval'.*foo")(
    lambda tmp: fit(tmp, classifier(neural_bn="foo")))
case("option-wrong-type", 2, r"field 'trainer\.max_epochs': expected int, found 'abc'\n  in option --trainer\.max_epochs")(
    lambda tmp: fit(tmp, classifier(), "--trainer.max_epochs=abc"))
case("option-unknown", 2, r"unrecognized arguments: --trainer\.nope=1")(lambda tmp: fit(tmp, classifier(), "--trainer.nope=1"))
case("option-typo-nested", 2, r"wieght")(
    lambda tmp: fit(tmp, with_targets(classifier(), GROUND_TRUTH), "--model.init_args.regularizers.similarity.init_args.wieght=0.5"))
case("unknown-layer", 2, r"layer 'nolayer': not a module of SmallResNet.*\n  in {tmp}/config\.yaml, line \d+")(
    lambda tmp: fit(tmp, with_targets(classifier(), GROUND_TRUTH, {**SIMILARITY, "init_args": {"layers": ["nolayer"]}})))
case("negative-weight", 2, r"weight: expected a number >= 0, found -1\.0\n  in {tmp}/config\.yaml, line \d+ "
     r"\(model\.init_args\.regularizers\.similarity: SimilarityRegularizer\)")(
    lambda tmp: fit(tmp, with_targets(classifier(), GROUND_TRUTH, {**SIMILARITY, "init_args": {"layers": ["layer1"], "weight": -1.0}})))
case("negative-std", 2, r"std: expected positive values, found \[-1\.0\]\n  in {tmp}/config\.yaml")(
    lambda tmp: fit(tmp, classifier(std=[-1.0])))
case("std-count", 2, r"mean, std: expected 1 values \(backbone in_channels\), found 2 and 2")(
    lambda tmp: fit(tmp, classifier(mean=[0.1, 0.2], std=[1.0, 1.0])))
case("callback-bad-epsilon", 2, r"pgd_epsilons.*-0\.1.*\n  in {tmp}/config\.yaml, line \d+ \(trainer\.callbacks\.0: RobustnessEvaluation\)")(
    lambda tmp: fit(tmp, (c := classifier(), c["trainer"].update(callbacks=[
        {"class_path": "neuroreg.evaluation.callbacks.RobustnessEvaluation", "init_args": {"pgd_epsilons": [-0.1]}}]))[0]))
case("batch-size-zero", 2, r"batch_size: expected >= 1, found 0\n  in {tmp}/config\.yaml")(
    lambda tmp: fit(tmp, (c := classifier(), c["data"]["init_args"].update(batch_size=0))[0]))
case("lightning-misconfiguration", 2, r"max_epochs.*-3\.\n  in config {tmp}/config\.yaml")(
    lambda tmp: fit(tmp, (c := classifier(), c["trainer"].pop("fast_dev_run"), c["trainer"].update(max_epochs=-3))[0]))
case("weights-only-false", 2, r"--weights_only: expected true or null, found false")(
    lambda tmp: ["test", "--config", str(write_yaml(tmp / "config.yaml", classifier())), "--weights_only=false"])

case("no-subcommand", 2, r"expected a subcommand, one of fit, validate, test, predict, data, eval, compare, repro, sweep; found none")(
    lambda tmp: [])
case("unknown-subcommand", 2, r"expected a subcommand, one of fit, .*; found 'fitt'")(lambda tmp: ["fitt", "--config", "x.yaml"])

# --- recordings (.h5) for a twin fit
case("recording-missing", 2, r"{tmp}/nope\.h5")(lambda tmp: twin_config(tmp, tmp / "nope.h5"))
case("recording-not-hdf5", 2, r"{tmp}/rec\.h5: .*(HDF5|hdf5)")(
    lambda tmp: twin_config(tmp, (tmp / "rec.h5", (tmp / "rec.h5").write_bytes(b"\x00\x01 not hdf5 \xff"))[0]))
case("recording-truncated", 2, r"{tmp}/rec\.h5")(
    lambda tmp: (make_recording().save(tmp / "full.h5"),
                 (tmp / "rec.h5").write_bytes((tmp / "full.h5").read_bytes()[:3000]), twin_config(tmp, tmp / "rec.h5"))[2])
case("recording-missing-dataset", 2, r"{tmp}/rec\.h5: missing dataset '/responses'")(
    lambda tmp: (make_recording().save(tmp / "rec.h5"), h5py.File(tmp / "rec.h5", "a").__delitem__("responses"),
                 twin_config(tmp, tmp / "rec.h5"))[2])
case("recording-missing-attribute", 2, r"{tmp}/rec\.h5: missing attribute 'species'")(
    lambda tmp: (make_recording().save(tmp / "rec.h5"), h5py.File(tmp / "rec.h5", "a").attrs.__delitem__("species"),
                 twin_config(tmp, tmp / "rec.h5"))[2])

# --- TargetSets
case("targetset-missing", 2, r"TargetSet file not found: {tmp}/nope\.h5")(lambda tmp: target_file_config(tmp, tmp / "nope.h5"))
case("targetset-not-hdf5", 2, r"{tmp}/ts\.h5: not a readable HDF5 file")(
    lambda tmp: target_file_config(tmp, (tmp / "ts.h5", (tmp / "ts.h5").write_bytes(b"\x89HDF junk"))[0]))
case("targetset-not-a-targetset", 2, r"{tmp}/ts\.h5: not a TargetSet: expected datasets /targets, /image_keys")(
    lambda tmp: (make_recording().save(tmp / "ts.h5"), target_file_config(tmp, tmp / "ts.h5"))[1])
case("targetset-wrong-neuron-count", 2, r"{tmp}/ts\.h5: attribute 'n_neurons': expected 300 neurons .*found 50")(
    lambda tmp: target_file_config(tmp, target_set(tmp / "ts.h5", neurons=50), num_neurons=300))
case("targetset-wrong-key", 2, r"{tmp}/ts\.h5: attribute 'key': expected b+, found a+")(
    lambda tmp: target_file_config(tmp, target_set(tmp / "ts.h5"), expected_key="b" * 64))
case("targetset-shape-vs-header", 2, r"{tmp}/ts\.h5: field 'targets': expected shape \[\d+, 20\] .*found \[\d+, 7\]")(
    lambda tmp: target_file_config(tmp, target_set(tmp / "ts.h5", targets=np.zeros((len(digits_keys()), 7), np.float32))))
case("targetset-foreign-keys", 2, r"{tmp}/ts\.h5: field 'image_keys': expected keys of image set")(
    lambda tmp: target_file_config(tmp, target_set(tmp / "ts.h5", keys=np.array([f"other-{i}" for i in range(30)]))))
case("targetset-int-dtype", 2, r"{tmp}/ts\.h5: field 'targets': expected float32 or float16, found int64")(
    lambda tmp: target_file_config(tmp, target_set(tmp / "ts.h5", targets=np.zeros((len(digits_keys()), 20), np.int64))))
case("targetset-infinite", 2, r"{tmp}/ts\.h5: field 'targets': expected finite values or NaN, found inf")(
    lambda tmp: target_file_config(tmp, target_set(tmp / "ts.h5", targets=np.full((len(digits_keys()), 20), np.inf, np.float32))))
case("targetset-group-not-dataset", 2, r"{tmp}/ts\.h5: fields 'targets', 'image_keys': expected datasets")(
    lambda tmp: (target_set(tmp / "ts.h5", targets=None), h5py.File(tmp / "ts.h5", "a").create_group("targets"),
                 target_file_config(tmp, tmp / "ts.h5"))[2])

# --- checkpoints
case("ckpt-malicious-fit", 2, r"{tmp}/evil\.ckpt: refusing to load this checkpoint: its pickle asks for posix\.system", ("MARKER",))(
    lambda tmp: fit(tmp, classifier(), "--ckpt_path", str(malicious_checkpoint(tmp / "evil.ckpt", tmp / "MARKER"))))
case("ckpt-malicious-eval", 2, r"{tmp}/run/checkpoints/last\.ckpt: refusing to load this checkpoint", ("MARKER", "run/eval"))(
    lambda tmp: ["eval", "--ckpt", str(malicious_checkpoint(make_run(tmp / "run"), tmp / "MARKER")), "--no-log", "--no-progress"])
case("ckpt-empty", 2, r"{tmp}/empty\.ckpt: not a readable PyTorch checkpoint \(EOFError: empty file\)")(
    lambda tmp: ["test", "--config", str(write_yaml(tmp / "config.yaml", classifier())), "--ckpt_path",
                 str((tmp / "empty.ckpt", (tmp / "empty.ckpt").write_bytes(b""))[0])])
case("ckpt-garbage", 2, r"{tmp}/junk\.ckpt: not a readable PyTorch checkpoint")(
    lambda tmp: ["validate", "--config", str(write_yaml(tmp / "config.yaml", classifier())), "--ckpt_path",
                 str((tmp / "junk.ckpt", (tmp / "junk.ckpt").write_bytes(b"PK\x03\x04 not a zip"))[0])])
case("ckpt-not-a-dict", 2, r"{tmp}/list\.ckpt: expected a checkpoint dict .*found list")(
    lambda tmp: ["test", "--config", str(write_yaml(tmp / "config.yaml", classifier())), "--ckpt_path",
                 str((tmp / "list.ckpt", torch.save([1, 2], tmp / "list.ckpt"))[0])])
case("ckpt-twin-for-classifier", 2, r"{tmp}/twin\.ckpt: a checkpoint of neuroreg\.twin\.module\.TwinModule, but the config's model is "
     r"neuroreg\.models\.classifier\.RegularizedClassifier")(
    lambda tmp: ["test", "--config", str(write_yaml(tmp / "config.yaml", classifier())), "--ckpt_path",
                 str((tmp / "twin.ckpt", torch.save({"state_dict": {}, "hyper_parameters": {
                     "_class_path": "neuroreg.twin.module.TwinModule", "num_neurons": 50, "core": {}}}, tmp / "twin.ckpt"))[0])])
case("ckpt-twin-hparams-for-classifier", 2, r"{tmp}/twin\.ckpt: its hyper_parameters \['core'\] are not arguments of "
     r"neuroreg\.models\.classifier\.RegularizedClassifier")(
    lambda tmp: ["predict", "--config", str(write_yaml(tmp / "config.yaml", classifier())), "--ckpt_path",
                 str((tmp / "twin.ckpt", torch.save({"state_dict": {}, "hyper_parameters": {"num_neurons": 50, "core": {}}},
                                                    tmp / "twin.ckpt"))[0])])
case("ckpt-twin-count-for-classifier", 2, r"{tmp}/twin\.ckpt: its hyper_parameters do not fit the config's model "
     r"neuroreg\.models\.classifier\.RegularizedClassifier")(
    lambda tmp: ["test", "--config", str(write_yaml(tmp / "config.yaml", classifier())), "--ckpt_path",
                 str((tmp / "twin.ckpt", torch.save({"state_dict": {}, "hyper_parameters": {"num_neurons": 50}}, tmp / "twin.ckpt"))[0])])
case("eval-ckpt-missing", 2, r"{tmp}/nope\.ckpt")(lambda tmp: ["eval", "--ckpt", str(tmp / "nope.ckpt"), "--no-log"])
case("eval-no-config", 2, r"{tmp}/lone/last\.ckpt: no config\.yaml found")(
    lambda tmp: ["eval", "--ckpt", str((tmp / "lone" / "last.ckpt", (tmp / "lone").mkdir(),
                                        torch.save({"state_dict": {}}, tmp / "lone" / "last.ckpt"))[0]), "--no-log"])

case("eval-recording-not-hdf5", 2, r"{tmp}/heldout\.h5: not a readable HDF5 file", ("run/eval",))(
    lambda tmp: ["eval", "--ckpt", str(make_run(tmp / "run")), "--recording",
                 str((tmp / "heldout.h5", (tmp / "heldout.h5").write_bytes(b"junk"))[0]), "--layers", "layer1", "--no-log"])
case("eval-recording-missing-dataset", 2, r"{tmp}/heldout\.h5: missing dataset '/trial_image'", ("run/eval",))(
    lambda tmp: ["eval", "--ckpt", str(make_run(tmp / "run")), "--recording",
                 str((make_recording().save(tmp / "heldout.h5"), h5py.File(tmp / "heldout.h5", "a").__delitem__("trial_image"),
                      tmp / "heldout.h5")[2]), "--layers", "layer1", "--no-log"])

# --- budgets (eval options)
case("eval-max-images-zero", 2, r"--max-images: expected an integer >= 1, found 0", ("run/eval",))(
    lambda tmp: ["eval", "--ckpt", str(make_run(tmp / "run")), "--max-images", "0", "--no-log"])
case("eval-unknown-suite", 2, r"argument --suite: invalid choice: 'huge'")(
    lambda tmp: ["eval", "--ckpt", str(make_run(tmp / "run")), "--suite", "huge"])
case("eval-bad-data-yaml", 2, r"{tmp}/data\.yaml: line \d+, column \d+: cannot read YAML", ("run/eval",))(
    lambda tmp: ["eval", "--ckpt", str(make_run(tmp / "run")), "--data", str(write_yaml(tmp / "data.yaml", "data: [\n")), "--no-log"])

# --- manifests and data files
case("manifest-yaml-syntax", 1, r"{tmp}/manifests/toy\.yaml: line \d+, column \d+: cannot read YAML")(
    lambda tmp: manifest(tmp, "name: toy\nfiles: [\n"))
case("manifest-missing-field", 1, r"{tmp}/manifests/toy\.yaml.*citation")(lambda tmp: manifest(tmp, bad_manifest(citation=None)))
case("manifest-bad-species", 1, r"{tmp}/manifests/toy\.yaml.*species.*fish")(lambda tmp: manifest(tmp, bad_manifest(species="fish")))
case("manifest-unknown-name", 1, r"nope")(
    lambda tmp: manifest(tmp, GOOD_MANIFEST)[:2] + ["nope", "--manifests", str(tmp / "manifests")])
case("convert-not-fetched", 1, r"toy: not fetched yet: .*toy\.npz", ("out.h5",))(
    lambda tmp: ["data", "convert", "toy", "--manifests", str(write_yaml(tmp / "manifests" / "toy.yaml", GOOD_MANIFEST).parent),
                 "--data-dir", str(tmp / "data"), "--out", str(tmp / "out.h5")])

# --- sweeps, recipes, comparisons
case("sweep-missing", 2, r"{tmp}/nope\.yaml: sweep file not found")(lambda tmp: ["sweep", "expand", str(tmp / "nope.yaml")])
case("sweep-yaml-syntax", 2, r"{tmp}/sweep\.yaml: line \d+, column \d+: cannot read YAML")(
    lambda tmp: ["sweep", "expand", str(write_yaml(tmp / "sweep.yaml", "method: grid\nparameters: {a: [\n"))])
case("sweep-bad-field", 2, r"{tmp}/sweep\.yaml: field 'method'")(
    lambda tmp: ["sweep", "expand", str(write_yaml(tmp / "sweep.yaml", {"method": "sideways", "parameters": {"seed_everything": {"values": [0]}},
                                                                       "command": ["neuroreg", "fit", "${args}"]}))])
case("sweep-index-out-of-range", 2, r"index")(
    lambda tmp: ["sweep", "expand", str(write_yaml(tmp / "sweep.yaml", {"method": "grid", "parameters": {"seed_everything": {"values": [0, 1]}},
                                                                       "command": ["neuroreg", "fit", "${args}"]})), "--index", "7"])
case("repro-unknown-recipe", 2, r"nope")(lambda tmp: ["repro", "nope", "--dry-run"])
case("repro-seeds-zero", 2, r"--seeds: expected an integer >= 1, found 0")(lambda tmp: ["repro", "quickstart", "--seeds", "0", "--dry-run"])
case("repro-recipe-yaml-syntax", 2, r"{tmp}/recipe\.yaml: line \d+, column \d+: cannot read YAML")(
    lambda tmp: ["repro", str(write_yaml(tmp / "recipe.yaml", "title: x\nscales: {mini: [\n")), "--dry-run"])
case("compare-missing-run", 2, r"{tmp}/nope", ("cmp",))(lambda tmp: ["compare", str(tmp / "nope"), "--out", str(tmp / "cmp")])
case("compare-bad-json", 2, r"{tmp}/run_a/eval/report\.json: expected a JSON evaluation report", ("cmp",))(
    lambda tmp: ["compare", str(report_dir(tmp, "{not json").parent.parent), "--out", str(tmp / "cmp")])


def run_in_process(argv: list[str], capfd) -> tuple[int, str, str]:
    """``neuroreg argv`` in this process: its exit status and the real stdout / stderr (file
    descriptors captured); an exception escaping ``main`` is printed as the interpreter would."""
    try:
        rc = main(argv)
    except SystemExit as err:
        rc = err.code if isinstance(err.code, int) else 1
    except BaseException:  # noqa: BLE001 - the interpreter's behaviour: traceback, status 1
        traceback.print_exc()
        rc = 1
    out, err = capfd.readouterr()
    return rc, out, err


def leftovers(tmp: Path) -> list[str]:
    """Temporary files a writer would leave behind on failure."""
    return [str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.name.endswith(".tmp") or ".tmp" in p.suffixes]


@pytest.mark.parametrize("bad", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_a_short_error(bad: Case, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NEUROREG_DEBUG", raising=False)
    argv = bad.build(tmp_path)
    capfd.readouterr()
    rc, out, err = run_in_process(argv, capfd)
    assert "Traceback" not in out + err, err
    assert rc == bad.rc, err
    assert re.search(bad.match.replace("{tmp}", re.escape(str(tmp_path))), err), err
    assert len(err.strip().splitlines()) <= 12, f"not a short message:\n{err}"
    assert not leftovers(tmp_path)
    for path in bad.absent:
        assert not (tmp_path / path).exists(), f"{path} was written"


# ----------------------------------------------------------------------------- the process itself
def neuroreg(*argv: str, cwd: Path, limit_bytes: int | None = None, env=None, timeout: float = 120):
    """``python -m neuroreg.cli argv``; with ``limit_bytes``, no file it writes may grow past it
    (``RLIMIT_FSIZE``, SIGXFSZ ignored: a write fails with ``EFBIG`` as on a full disk)."""

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run([sys.executable, "-m", "neuroreg.cli", *argv], capture_output=True, text=True, cwd=cwd,
                          env={**ENV, **(env or {})}, preexec_fn=limit if limit_bytes else None, timeout=timeout)


def test_data_convert_on_a_full_disk_is_a_clean_error(tmp_path):
    """h5py crashed the process when the disk filled during ``data convert``; now the error names
    the output file and nothing is written."""
    import hashlib
    import io

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    np.savez(buf, images=rng.integers(0, 256, (64, 16, 16)).astype(np.uint8),
             responses=rng.normal(size=(64, 30)).astype(np.float32), tiers=np.array(["train"] * 54 + ["test"] * 10))
    payload = buf.getvalue()
    m = copy.deepcopy(GOOD_MANIFEST)
    m["files"][0].update(sha256=hashlib.sha256(payload).hexdigest(), size=len(payload))
    write_yaml(tmp_path / "manifests" / "toy.yaml", m)
    base = ["data", "--manifests", str(tmp_path / "manifests"), "--data-dir", str(tmp_path / "data")]
    from neuroreg.data.fetch import local_path
    from neuroreg.data.manifests import load_manifest

    toy = load_manifest(tmp_path / "manifests" / "toy.yaml")
    target = local_path(toy, toy.files[0], tmp_path / "data")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(payload)
    out = tmp_path / "out" / "toy.h5"
    proc = neuroreg(*base, "convert", "toy", "--out", str(out), cwd=tmp_path, limit_bytes=len(payload) // 2)
    assert proc.returncode == 1, proc.stderr
    assert re.search(rf"(File too large|No space left on device): cannot write {re.escape(str(out))} \(nothing was written",
                     proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() and not leftovers(tmp_path)
    ok = neuroreg(*base, "convert", "toy", "--out", str(out), cwd=tmp_path)  # the same command with room succeeds
    assert ok.returncode == 0, ok.stderr
    assert h5py.is_hdf5(out)


def test_targetset_and_checkpoint_writes_on_a_full_disk(tmp_path):
    """The TargetSet writer, a TargetSet stream and ``last.ckpt`` under a file-size limit: a
    clean ``OSError`` naming the file, and no file (nor temporary file) left."""
    script = f"""
import os, signal, resource, sys, errno
import numpy as np, torch
sys.path.insert(0, {str(ROOT / 'tests')!r})
from neuroreg.targets.format import TargetSet, TargetSetStream
out = {str(tmp_path)!r}
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
ts = TargetSet(np.ones((100, 100), np.float32), np.array([str(i) for i in range(100)]), key="k")
for name, write in [("ts.h5", lambda p: ts.save(p)),
                    ("stream.h5", lambda p: TargetSetStream(p, ts.image_keys, 100, "k").__enter__().write(0, ts.targets) or None),
                    ("last.ckpt", None)]:
    path = os.path.join(out, name)
    try:
        if write is None:  # how every checkpoint of a fit is written
            from neuroreg.runs.checkpoints import AtomicCheckpointIO
            AtomicCheckpointIO().save_checkpoint({{"state_dict": {{"w": torch.ones(100, 100)}}}}, path)
        elif name == "stream.h5":
            with TargetSetStream(path, ts.image_keys, 100, "k") as s:
                s.write(0, ts.targets)
        else:
            write(path)
        print(name, "WRITTEN")
    except OSError as err:
        print(name, "ERROR", err.errno in (errno.EFBIG, errno.ENOSPC), err)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for name in ("ts.h5", "stream.h5", "last.ckpt"):
        (line,) = [ln for ln in lines if ln.startswith(name + " ")]
        assert line.startswith(f"{name} ERROR True") and f"cannot write {tmp_path / name} (nothing was written" in line, line
        assert not (tmp_path / name).exists()
    assert not leftovers(tmp_path)


@pytest.mark.slow
def test_eval_on_a_full_disk_writes_nothing(tmp_path):
    """``neuroreg eval`` (a small budget: clean and noise accuracy of 8 images) whose report does
    not fit on the disk: a short error naming the folder, exit status 1, no eval folder left."""
    ckpt = make_run(tmp_path / "run")
    script = f"""
import resource, signal, sys
from neuroreg.cli import main
from neuroreg.evaluation import suite
suite.SUITES["quick"] = suite.Budget(max_images=8, noise_sigmas=(0.0, 0.1), linf_epsilons=(), fgsm=False, check_images=8,
                                     robust_images=None)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1500, 1500))
sys.exit(main(["eval", "--ckpt", {str(ckpt)!r}, "--no-log", "--no-progress"]))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV, timeout=180, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert re.search(rf"neuroreg eval: error: .*(File too large|No space left on device): cannot write the evaluation to "
                     rf"{re.escape(str(tmp_path / 'run' / 'eval'))} \(nothing was written", proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "eval").exists() and not leftovers(tmp_path)


@pytest.mark.slow
def test_fit_on_a_full_disk_keeps_no_partial_checkpoint(tmp_path):
    """A fit whose checkpoint does not fit on the disk ends with a short error naming it and
    exit status 1; no partial checkpoint is left (Lightning's own writer left a truncated one)."""
    cfg = classifier()
    cfg["trainer"] = {**TRAINER, "fast_dev_run": False, "enable_checkpointing": True, "max_epochs": 1,
                      "limit_train_batches": 1, "limit_val_batches": 1,
                      "logger": {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": "runs", "name": "t"}}}
    cfg["model"]["init_args"]["backbone"]["init_args"]["widths"] = [16, 32]  # a checkpoint of ~100 kB
    config = write_yaml(tmp_path / "config.yaml", cfg)
    proc = neuroreg("fit", "--config", str(config), cwd=tmp_path, limit_bytes=40_000)
    assert proc.returncode == 1, proc.stderr
    assert re.search(r"neuroreg fit: error: .*(File too large|No space left on device): cannot write \S+\.ckpt \(nothing was written", proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.rglob("*.ckpt")) and not leftovers(tmp_path)


def test_debug_shows_the_traceback(tmp_path, monkeypatch, capfd):
    """``--debug`` anywhere on the command line (here after the subcommand's options, in a real
    process) or ``NEUROREG_DEBUG=1`` prints the traceback before the same short message."""
    config = write_yaml(tmp_path / "config.yaml", classifier(std=[-1.0]))
    shown = neuroreg("fit", "--config", str(config), "--debug", cwd=tmp_path)
    assert shown.returncode == 2, shown.stderr
    assert "Traceback (most recent call last)" in shown.stderr
    assert shown.stderr.rstrip().splitlines()[-2] == "neuroreg fit: error: std: expected positive values, found [-1.0]"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NEUROREG_DEBUG", "1")
    rc, _, err = run_in_process(["fit", "--config", str(config)], capfd)
    assert rc == 2 and "Traceback (most recent call last)" in err and "RegularizedClassifier" in err
    monkeypatch.setenv("NEUROREG_DEBUG", "0")
    rc, _, err = run_in_process(["fit", "--config", str(config)], capfd)
    assert rc == 2 and "Traceback" not in err and "--debug or NEUROREG_DEBUG=1" in err


def test_ctrl_c_exits_130_without_a_traceback(tmp_path):
    cfg = classifier()
    cfg["trainer"] = {**TRAINER, "fast_dev_run": False, "max_epochs": 1000}
    config = write_yaml(tmp_path / "config.yaml", cfg)
    proc = subprocess.Popen([sys.executable, "-m", "neuroreg.cli", "fit", "--config", str(config)], cwd=tmp_path, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not list(tmp_path.rglob("*")):
        time.sleep(0.2)
    time.sleep(6)  # into the fit
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in out + err
    assert "neuroreg fit: interrupted" in err


def test_stage_logs_are_never_overwritten(tmp_path):
    """Two invocations in the same second (a rerun, or two at once) each get their own stage
    log, and an older run's log of the same stage is left as it was."""
    from neuroreg.repro.launchers import new_log

    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "fit-a.log").write_text("an older run's log\n")
    made = [new_log(logs, "fit-a") for _ in range(3)]
    for i, path in enumerate(made):
        path.write_text(f"run {i}\n")
    assert (logs / "fit-a.log").read_text() == "an older run's log\n"
    assert len(set(made)) == 3 and [p.read_text() for p in made] == ["run 0\n", "run 1\n", "run 2\n"]
    assert all(re.fullmatch(rf"fit-a-\d{{8}}T\d{{6}}Z-{os.getpid()}(\.[23])?\.log", p.name) for p in made), made


def test_a_pickle_checkpoint_would_really_run_code(tmp_path):
    """The malicious checkpoint of the cases above is real: a plain unpickler runs its payload."""
    ckpt = malicious_checkpoint(tmp_path / "evil.ckpt", tmp_path / "ran")
    torch.load(ckpt, weights_only=False)
    assert (tmp_path / "ran").exists()
    assert pickle.dumps(Payload(tmp_path / "x"))  # picklable as written


def test_exit_status_says_refused_or_failed():
    """2: the input was refused; 1: the command failed while it ran (a full disk, a failed stage,
    an unexpected error, which is named by its type)."""
    import errno

    from neuroreg.cli import explain
    from neuroreg.repro.runner import ReproError

    def raised(err):
        try:
            raise err
        except BaseException as caught:  # noqa: BLE001
            return caught

    assert explain(raised(ValueError("x: expected 1, found 2"))) == ("x: expected 1, found 2", 2)
    assert explain(raised(KeyError("no such key 'a'"))) == ("no such key 'a'", 2)
    assert explain(raised(FileNotFoundError("nope.h5 not found"))) == ("nope.h5 not found", 2)
    assert explain(raised(OSError(errno.ENOSPC, "No space left on device: cannot write a.h5"))) == (
        "[Errno 28] No space left on device: cannot write a.h5", 1)
    assert explain(raised(ReproError("stage fit-0 failed"))) == ("stage fit-0 failed", 1)
    assert explain(raised(RuntimeError("CUDA out of memory"))) == ("RuntimeError: CUDA out of memory", 1)
