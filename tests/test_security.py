"""What neuroreg refuses to load: a checkpoint whose pickle would run code is refused by every
path that reads one, with a message naming the file, a non-zero exit, and no side effect; files
it writes honour the umask."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from _runs import DATA, MODEL, make_run
from neuroreg.cli import main
from neuroreg.io import CheckpointError, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TWIN_CONFIG = ROOT / "experiments" / "twin" / "sim_mouse_v1.yaml"
REFUSED = r"refusing to load this checkpoint: its pickle asks for posix\.system.*weights-only"


class Payload:
    """Unpickling this calls ``os.system("touch <marker>")``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def malicious_checkpoint(path: Path, marker: Path, fmt: str = "zip") -> Path:
    """A file shaped like a Lightning checkpoint whose pickle runs ``touch marker`` when loaded
    by a plain unpickler (torch's zip format, or a bare pickle)."""
    content = {"state_dict": {}, "hyper_parameters": {"num_neurons": 7, "payload": Payload(marker)}, "global_step": 0}
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "zip":
        torch.save(content, path)
    else:  # "pickle2", "pickle4": a bare pickle of that protocol
        path.write_bytes(pickle.dumps(content, protocol=int(fmt[-1])))
    return path


@pytest.fixture
def marker(tmp_path):
    out = tmp_path / "PAYLOAD_RAN"
    yield out
    assert not out.exists(), "the checkpoint's payload ran"


def test_the_payload_runs_under_a_plain_unpickler(tmp_path):
    """The test file is really malicious: a plain load runs it (so the refusals below mean something)."""
    hit = tmp_path / "ran"
    ckpt = malicious_checkpoint(tmp_path / "evil.ckpt", hit)
    torch.load(ckpt, weights_only=False)
    assert hit.exists()


@pytest.mark.parametrize("fmt", ["zip", "pickle2", "pickle4"])
@pytest.mark.parametrize("mmap", [False, True])
def test_load_checkpoint_refuses_code_and_names_the_file(tmp_path, marker, fmt, mmap):
    ckpt = malicious_checkpoint(tmp_path / "evil.ckpt", marker, fmt)
    pattern = REFUSED if fmt != "pickle4" else r"refusing to load this checkpoint: its pickle uses .*weights-only"
    with pytest.raises(CheckpointError, match=str(ckpt) + ".*" + pattern):
        load_checkpoint(ckpt, mmap=mmap)


@pytest.mark.parametrize("content, pattern", [
    (b"", r"not a readable PyTorch checkpoint \(EOFError: empty file\)"),
    (b"hello", r"not a readable PyTorch checkpoint"),
    (None, r"checkpoint file not found"),
])
def test_load_checkpoint_names_a_broken_or_missing_file(tmp_path, content, pattern):
    path = tmp_path / "broken.ckpt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"{path}: {pattern}"):
        load_checkpoint(path)
    torch.save([1, 2], path)
    with pytest.raises(CheckpointError, match=f"{path}: expected a checkpoint dict .*found list"):
        load_checkpoint(path)


def tiny_fit_config(path: Path) -> Path:
    """A classifier fit of one short epoch (the tiny run of ``tests/_runs.py``)."""
    cfg = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 1, "limit_train_batches": 1, "limit_val_batches": 1,
                    "limit_test_batches": 1, "limit_predict_batches": 1, "enable_progress_bar": False,
                    "enable_model_summary": False,
                    "logger": {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": "runs", "name": "tiny"}}},
        "model": MODEL, "data": DATA,
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def refused(capsys, rc, ckpt):
    err = capsys.readouterr().err
    assert rc == 2, err
    assert str(ckpt) in err and "posix.system" in err and "weights-only" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("subcommand", ["fit", "validate", "test", "predict"])
def test_lightning_subcommands_refuse_ckpt_path(tmp_path, marker, monkeypatch, capsys, subcommand):
    monkeypatch.chdir(tmp_path)
    config = tiny_fit_config(tmp_path / "cfg.yaml")
    ckpt = malicious_checkpoint(tmp_path / "evil.ckpt", marker)
    refused(capsys, main([subcommand, "--config", str(config), "--ckpt_path", str(ckpt)]), ckpt)


def test_weights_only_false_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = tiny_fit_config(tmp_path / "cfg.yaml")
    assert main(["test", "--config", str(config), "--weights_only=false"]) == 2
    assert "--weights_only: expected true or null, found false" in capsys.readouterr().err


def test_eval_refuses(tmp_path, marker, capsys):
    ckpt = make_run(tmp_path / "run")
    malicious_checkpoint(ckpt, marker)
    refused(capsys, main(["eval", "--ckpt", str(ckpt), "--suite", "quick", "--no-log", "--no-progress"]), ckpt)


def test_eval_refuses_in_a_subprocess(tmp_path, marker):
    ckpt = malicious_checkpoint(make_run(tmp_path / "run"), marker)
    proc = subprocess.run([sys.executable, "-m", "neuroreg.cli", "eval", "--ckpt", str(ckpt)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    assert proc.returncode == 2, proc.stderr
    assert str(ckpt) in proc.stderr and "posix.system" in proc.stderr


@pytest.mark.slow
def test_resume_refuses_and_real_checkpoints_load_weights_only(tmp_path, marker, monkeypatch, capsys):
    """A fit's checkpoints load weights-only (nothing allow-listed) and honour the umask; once the
    unfinished run's last.ckpt is replaced, the rerun that would resume it refuses."""
    monkeypatch.chdir(tmp_path)
    config = tiny_fit_config(tmp_path / "cfg.yaml")
    from fsspec.implementations.local import get_umask

    # fsspec (Lightning's checkpoint writer) caches the umask the first time a process saves a
    # file; a real process has one umask, this test changes it mid-process, so drop the cache
    get_umask.cache_clear()
    old = os.umask(0o002)
    try:
        assert main(["fit", "--config", str(config)]) == 0
    finally:
        os.umask(old)
        get_umask.cache_clear()
    run = tmp_path / "runs" / "tiny" / "version_0"
    last = run / "checkpoints" / "last.ckpt"
    checkpoints = sorted((run / "checkpoints").glob("*.ckpt"))
    assert len(checkpoints) == 2  # Lightning's epoch checkpoint and neuroreg's last.ckpt
    for path in [*checkpoints, run / "fit_status.json", run / "config.yaml"]:
        assert mode(path) == 0o664, path
    for path in checkpoints:
        genuine = load_checkpoint(path)
        assert {"state_dict", "optimizer_states", "callbacks", "hyper_parameters"} <= set(genuine)
    allowed = {(g[0] if isinstance(g, tuple) else g).__module__.split(".")[0] for g in torch.serialization.get_safe_globals()}
    assert allowed <= {"builtins", "torch", "traceback"}  # torch's own list: neuroreg allow-lists nothing
    status = json.loads((run / "fit_status.json").read_text())
    (run / "fit_status.json").write_text(json.dumps({**status, "state": "running", "pid": dead_pid()}))
    malicious_checkpoint(last, marker)
    capsys.readouterr()
    refused(capsys, main(["fit", "--config", str(config)]), last.relative_to(tmp_path))  # as the run folder is found


def test_twin_targets_refuse(tmp_path, marker):
    from neuroreg.data.images import Digits
    from neuroreg.targets.twin import TwinTargets

    ckpt = malicious_checkpoint(tmp_path / "twin.ckpt", marker)
    targets = TwinTargets(checkpoint=str(ckpt), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(CheckpointError, match=f"{ckpt}: {REFUSED}"):
        _ = targets.num_neurons
    with pytest.raises(CheckpointError, match=f"{ckpt}: {REFUSED}"):
        targets.target_set(Digits())
    assert not list(tmp_path.rglob("*.h5"))  # no TargetSet written


def test_analysis_load_twin_refuses(tmp_path, marker):
    from neuroreg.analysis.results import AnalysisError
    from neuroreg.analysis.twin import load_twin

    ckpt = malicious_checkpoint(tmp_path / "twin.ckpt", marker)
    with pytest.raises(AnalysisError, match=f"{ckpt}: {REFUSED}"):
        load_twin(ckpt, config=TWIN_CONFIG)


def test_torchvision_core_refuses_weights(tmp_path, marker):
    from neuroreg.twin.cores import TorchvisionCore

    weights = malicious_checkpoint(tmp_path / "weights.pt", marker)
    with pytest.raises(CheckpointError, match=f"{weights}: {REFUSED}"):
        TorchvisionCore("resnet18", weights_path=str(weights))


# ------------------------------------------------------------------ umask
@pytest.fixture
def group_umask():
    old = os.umask(0o002)
    yield 0o664
    os.umask(old)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_written_files_honour_the_umask(tmp_path, group_umask):
    """Recordings (cached or converted: both through ``NeuralRecording.save``) and TargetSets (whole or
    streamed) are group-writable under umask 002 (downloads and the lock file: tests/data/test_fetch.py)."""
    from neuroreg.data.simulated import V1Population
    from neuroreg.targets.format import TargetSet, TargetSetStream

    images = np.random.default_rng(0).integers(0, 256, (4, 1, 32, 32), dtype=np.uint8)
    rec_path = V1Population(n_neurons=5, preset="mouse_v1", seed=1).record(images, repeats=2, seed=0).save(tmp_path / "cache" / "rec.h5")
    ts = TargetSet(targets=np.zeros((3, 2), np.float32), image_keys=np.array(["a", "b", "c"]), key="k", source="test")
    ts_path = ts.save(tmp_path / "targets" / "t.h5")
    with TargetSetStream(tmp_path / "targets" / "s.h5", np.array(["a"]), 2, "k", source="test") as out:
        out.write(0, np.zeros((1, 2), np.float32))
    written = [rec_path, ts_path, tmp_path / "targets" / "s.h5"]
    for path in written:
        assert mode(path) == group_umask, path
    assert mode(tmp_path / "cache") == 0o775 and mode(tmp_path / "targets") == 0o775
