"""Launchers of ``neuroreg repro``: stages as submitit jobs, locally and as SLURM batch scripts."""

import io
import json
import os
import re
import stat
import sys
import time
from pathlib import Path

import cloudpickle
import pytest

from neuroreg.repro.launchers import (
    LocalLauncher,
    Progress,
    Resources,
    SlurmLauncher,
    execute,
    log_tail,
    new_log,
)
from neuroreg.repro.stages import FAILED, Stage

# the stage functions below run in the jobs' own processes: pickled by value, not by module name
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _hello(stage):
    print(f"hello from {stage.name}", flush=True)
    print("a warning on stderr", file=sys.stderr, flush=True)
    return {"pid": os.getpid(), "executor": os.environ.get("SUBMITIT_EXECUTOR"), "t": time.time()}


def _boom(stage):
    print("about to fail", flush=True)
    raise ValueError("no luck")


def _stages(tmp_path):
    a = Stage("twin a", "twin", "k1", tmp_path / "a", _hello)
    b = Stage("fit b seed 0", "fit", "k2", tmp_path / "b", _hello, deps=(a,))
    c = Stage("targets c", "targets", "k3", tmp_path / "c", _boom)
    d = Stage("eval d", "eval", "k4", tmp_path / "d", _hello, deps=(c, b))
    return a, b, c, d


def test_local_launcher_runs_stages_as_submitit_jobs(tmp_path):
    a, b, c, d = _stages(tmp_path)
    out = io.StringIO()
    launcher = LocalLauncher(tmp_path / "logs" / "submitit", tmp_path / "logs", jobs=2, poll=0.1)
    progress = Progress([a, b, c, d], jobs=2, file=out, bar=False)
    left = launcher.run([a, b, c, d], progress)
    assert [s.name for s in left] == ["targets c", "eval d"]
    ra, rb = a.result(), b.result()
    # each stage ran in a job process of submitit's local executor, b only after a was done
    assert ra["executor"] == rb["executor"] == "local" and ra["pid"] != os.getpid() and ra["pid"] != rb["pid"]
    assert rb["t"] > ra["t"] and ra["key"] == "k1" and ra["stage"] == "twin a" and ra["wall_s"] >= 0
    # the stage's output (stdout and stderr) is in its own log, not on the console
    log_a = launcher.log_paths["twin a"]
    assert log_a.parent == tmp_path / "logs" and log_a.name.startswith("twin-a-")
    assert "hello from twin a" in log_a.read_text() and "a warning on stderr" in log_a.read_text()
    failed = json.loads((c.folder / FAILED).read_text())
    assert failed["error"] == "ValueError: no luck" and "Traceback" in failed["traceback"]
    assert not d.folder.exists()  # never started
    lines = out.getvalue().splitlines()
    assert "hello from" not in out.getvalue()
    assert sum(line.startswith("neuroreg repro: [") for line in lines) == 2
    assert any(re.match(r"neuroreg repro: \[1/4\] done (twin a|fit b seed 0) \(\d+ s\); ETA", line) for line in lines)
    i = lines.index("neuroreg repro: FAILED targets c: ValueError: no luck")
    assert lines[i + 1] == f"  last lines of its log {launcher.log_paths['targets c']}:"
    assert "    about to fail" in lines[i + 2:] and "    ValueError: no luck" in lines[i + 2:]
    assert "neuroreg repro: skipped eval d: targets c failed" in lines

    # a second run: done stages are not submitted again; the failed one is retried (and fails again)
    before = sorted(p.name for p in (tmp_path / "logs").glob("*.log"))
    c2 = Stage("targets c", "targets", "k3", tmp_path / "c", _hello)
    d2 = Stage("eval d", "eval", "k4", tmp_path / "d", _hello, deps=(c2, b))
    launcher = LocalLauncher(tmp_path / "logs" / "submitit", tmp_path / "logs", jobs=2, poll=0.1)
    assert launcher.run([a, b, c2, d2]) == []
    assert set(launcher.log_paths) == {"targets c", "eval d"} and a.result() == ra
    assert not (c.folder / FAILED).exists() and d2.done()
    after = sorted(p.name for p in (tmp_path / "logs").glob("*.log"))
    assert set(before) < set(after)  # earlier logs kept, new ones added


def test_execute_skips_a_done_stage_and_writes_done_last(tmp_path):
    calls = []
    s = Stage("x", "t", "k", tmp_path / "x", lambda st: calls.append(st.name) or {"v": 1})
    log = new_log(tmp_path / "logs", "x")
    assert execute(s, str(log))["v"] == 1 and s.result()["v"] == 1
    assert execute(s, str(log))["v"] == 1 and calls == ["x"]
    assert new_log(tmp_path / "logs", "x") != log  # exclusively created, a new name


def test_log_tail_shows_a_progress_bar_as_its_last_state(tmp_path):
    p = tmp_path / "x.log"
    p.write_text("one\nEpoch 0: 10%\rEpoch 0: 50%\rEpoch 0: 100%\n\n" + "".join(f"l{i}\n" for i in range(20)))
    assert log_tail(p, 3) == ["l17", "l18", "l19"]
    assert log_tail(p, 22)[:2] == ["one", "Epoch 0: 100%"]
    assert log_tail(tmp_path / "missing.log") == []


def test_progress_eta_from_finished_stages(tmp_path):
    stages = [Stage(f"s{i}", "t", str(i), tmp_path / f"s{i}", _hello) for i in range(5)]
    p = Progress(stages, jobs=2, file=io.StringIO(), bar=False)
    assert p.eta() is None
    p.started(stages[0])
    p.running["s0"] -= 10.0  # it took 10 s
    p.finished(stages[0])
    assert p.eta() == pytest.approx(10.0 * 4 / 2, rel=0.01)  # 4 left, 2 at a time
    p.close()


def test_progress_eta_weighs_each_kind_and_counts_earlier_runs(tmp_path):
    fits = [Stage(f"fit{i}", "fit", str(i), tmp_path / f"fit{i}", _hello) for i in range(3)]
    evals = [Stage(f"eval{i}", "eval", str(i), tmp_path / f"eval{i}", _hello) for i in range(3)]
    report = Stage("report", "report", "r", tmp_path / "report", _hello)
    fits[0].folder.mkdir()
    fits[0].done_path.write_text(json.dumps({"stage": "fit0", "key": "0", "wall_s": 100.0}))  # an earlier run's
    p = Progress([*fits, *evals, report], jobs=1, file=io.StringIO(), bar=False)
    assert p.done == 1
    assert p.eta() == pytest.approx(100.0 * 6)  # nothing else measured yet: every stage left counts the fit's 100 s
    p.started(evals[0])
    p.running["eval0"] -= 4.0
    p.finished(evals[0])
    # 2 fits x 100 s, 2 evaluations x 4 s, and the report (no kind measured) at the mean of all (52 s)
    assert p.eta() == pytest.approx(2 * 100 + 2 * 4 + 52, rel=1e-3)
    p.started(fits[1])
    p.running["fit1"] -= 30.0  # running for 30 s: 70 s of it left
    assert p.eta() == pytest.approx(70 + 100 + 2 * 4 + 52, rel=1e-3)
    p.failed_stage(fits[1], "boom", None)
    p.skipped(evals[1], "fit1")
    assert p.eta() == pytest.approx(100 + 4 + 52, rel=1e-3)
    p.close()


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """``sbatch`` and ``srun`` on PATH: sbatch records its arguments and prints a new job id."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "sbatch_calls.txt"
    counter = tmp_path / "next_id"
    counter.write_text("1000")
    (bin_dir / "sbatch").write_text(
        "#!/bin/sh\n"
        f'n=$(cat {counter}); n=$((n + 1)); echo $n > {counter}\n'
        f'echo "$@" >> {record}\n'
        'echo "Submitted batch job $n"\n'
    )
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for f in bin_dir.iterdir():
        f.chmod(f.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return record


def _sbatch_flags(script: Path) -> dict[str, str]:
    flags = {}
    for line in script.read_text().splitlines():
        m = re.fullmatch(r"#SBATCH --([\w-]+)(?:=(.*))?", line)
        if m:
            flags[m.group(1)] = m.group(2) if m.group(2) is not None else True
    return flags


def _write_report(out):
    return out


def test_slurm_launcher_writes_batch_scripts_with_dependencies(tmp_path, fake_slurm):
    twin = Stage("twin t", "twin", "k0", tmp_path / "twin", _hello)
    fetch = Stage("fetch m", "fetch", "k1", tmp_path / "fetch", _hello)
    fetch.folder.mkdir()
    (fetch.folder / "done.json").write_text("{}")  # done: not submitted, and not a dependency
    fit = Stage("fit similarity seed 0", "fit", "k2", tmp_path / "fit", _hello, deps=(fetch, twin),
                info={"trainer": {"accelerator": "gpu", "devices": 4, "num_nodes": 2}})
    ev = Stage("eval similarity seed 0", "eval", "k3", tmp_path / "ev", _hello, deps=(fit,))
    resources = Resources.for_scale("full", partition="gpu", account="lab", time=720, cpus=6, mem_gb=48)
    launcher = SlurmLauncher(tmp_path / "logs" / "submitit", tmp_path / "logs", resources,
                             setup=["source /shared/venv/bin/activate"])
    printed = []
    ids = launcher.submit([fetch, twin, fit, ev], then=_write_report, then_args=("OUT",), echo=printed.append)
    assert ids == {"twin t": "1001", "fit similarity seed 0": "1002", "eval similarity seed 0": "1003", "report": "1004"}
    calls = fake_slurm.read_text().splitlines()
    assert len(calls) == 4 and all(c.endswith(".sh") for c in calls)
    folder = tmp_path / "logs" / "submitit"
    twin_f, fit_f, ev_f, rep_f = (_sbatch_flags(folder / f"{i}_submission.sh") for i in ("1001", "1002", "1003", "1004"))
    for f in (twin_f, fit_f, ev_f, rep_f):
        assert f["partition"] == "gpu" and f["account"] == "lab" and f["time"] == "720" and f["cpus-per-task"] == "6"
        assert f["mem"] == "48GB" and f["signal"] == "USR1@90" and f["requeue"] is True
    assert twin_f["job-name"] == "neuroreg-twin-t" and twin_f["gpus-per-node"] == "1" and "dependency" not in twin_f
    assert twin_f["nodes"] == "1" and twin_f["ntasks-per-node"] == "1"
    # a DDP fit on 2 nodes x 4 GPUs: one task per GPU, after the twin (the fetch is done already)
    assert (fit_f["nodes"], fit_f["ntasks-per-node"], fit_f["gpus-per-node"]) == ("2", "4", "4")
    assert fit_f["dependency"] == "afterok:1001" and fit_f["kill-on-invalid-dep"] == "yes"
    assert ev_f["dependency"] == "afterok:1002" and ev_f["gpus-per-node"] == "1"
    assert rep_f["dependency"] == "afterok:1001:1002:1003" and "gpus-per-node" not in rep_f
    text = (folder / "1002_submission.sh").read_text()
    assert "source /shared/venv/bin/activate" in text and "export OMP_NUM_THREADS=6" in text
    assert "srun" in text and "submitit.core._submit" in text
    # the job's pickle holds execute(stage, log): the stage's log is named at submission
    assert (folder / "1002_submitted.pkl").is_file() and launcher.log_paths["fit similarity seed 0"].is_file()
    assert printed[1].startswith("submitted fit similarity seed 0: job 1002 after 1001; log ")


def test_slurm_launcher_submits_sweep_points_as_one_array(tmp_path, fake_slurm):
    points = [Stage(f"point {i}", "sweep", f"k{i}", tmp_path / f"p{i}", _hello) for i in range(3)]
    launcher = SlurmLauncher(tmp_path / "sub", tmp_path / "logs", Resources.for_scale("mini", partition="cpu"))
    ids = launcher.submit_array(points, parallel=2, echo=lambda m: None)
    assert ids == ["1001_0", "1001_1", "1001_2"]
    assert len(fake_slurm.read_text().splitlines()) == 1
    script = next((tmp_path / "sub").glob("1001_submission.sh"))
    flags = _sbatch_flags(script)
    assert flags["array"] == "0-2%2" and flags["partition"] == "cpu" and "gpus-per-node" not in flags
    assert flags["signal"] == "USR1@90"


def test_slurm_launcher_without_slurm_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    launcher = SlurmLauncher(tmp_path / "sub", tmp_path / "logs", Resources())
    with pytest.raises(RuntimeError, match="srun"):
        launcher.submit([Stage("x", "t", "k", tmp_path / "x", _hello)])


def test_repro_with_the_slurm_launcher_submits_every_stage_then_the_report(tmp_path, fake_slurm, capsys):
    from neuroreg.cli import main

    out = tmp_path / "out"
    argv = ["repro", "quickstart", "--seeds", "1", "--out", str(out), "--launcher", "slurm", "--partition", "cpu",
            "--account", "lab", "--time", "30"]
    assert main(argv) == 0
    plan_json = json.loads((out / "repro.json").read_text())
    stages = plan_json["stages"]
    calls = fake_slurm.read_text().splitlines()
    assert len(calls) == len(stages) + 1  # every stage, then the report
    printed = capsys.readouterr().out
    assert f"{len(stages)} stage job(s) and the report job submitted" in printed
    ids = {s["name"]: str(1001 + i) for i, s in enumerate(stages)}
    for s in stages:
        flags = _sbatch_flags(out / "logs" / "submitit" / f"{ids[s['name']]}_submission.sh")
        assert flags["partition"] == "cpu" and flags["time"] == "30" and flags["cpus-per-task"] == "2"  # mini's CPUs
        deps = [ids[d] for d in s["deps"]]
        assert flags.get("dependency") == ("afterok:" + ":".join(deps) if deps else None), s["name"]
    report = _sbatch_flags(out / "logs" / "submitit" / f"{1001 + len(stages)}_submission.sh")
    assert report["dependency"] == "afterok:" + ":".join(ids[s["name"]] for s in stages)
    assert not any((Path(s["folder"]) / "done.json").exists() for s in stages)  # submitted, not run here
    assert main([*argv[:-2], "--time", "0"]) == 2
    assert "--time: expected a number >= 1, found 0" in capsys.readouterr().err


def test_sweep_points_as_one_slurm_array(tmp_path, fake_slurm, capsys):
    from neuroreg.cli import main
    from neuroreg.sweeps import load_sweep

    ROOT = Path(__file__).resolve().parents[2]
    path = ROOT / "experiments" / "sweeps" / "similarity_weight.yaml"
    sweep = load_sweep(path)
    out = tmp_path / "sweep"
    assert main(["sweep", "run", str(path), "--all", "--launcher", "slurm", "--partition", "cpu", "--parallel", "4",
                 "--out", str(out), "--", "--trainer.fast_dev_run=true"]) == 0
    assert f"{sweep.size} point(s) of {path} submitted as one array" in capsys.readouterr().out
    script = out / "logs" / "submitit" / "1001_submission.sh"
    assert _sbatch_flags(script)["array"] == f"0-{sweep.size - 1}%4"
    pickles = sorted((out / "logs" / "submitit").glob("1001_*_submitted.pkl"))
    assert len(pickles) == sweep.size
    with open(out / "logs" / "submitit" / "1001_2_submitted.pkl", "rb") as f:
        delayed = cloudpickle.load(f)
    stage = delayed.args[0]
    assert stage.name == "point 2" and stage.info["argv"] == [*sweep.cli_args(sweep.point(2)), "--trainer.fast_dev_run=true"]
    # a bad index range: nothing submitted, a clear error
    assert main(["sweep", "run", str(ROOT / "experiments" / "sweeps" / "similarity_random.yaml"), "--all",
                 "--launcher", "slurm"]) == 2
    assert "pass --count N" in capsys.readouterr().err


def test_multinode_ddp_config_under_slurm(tmp_path, monkeypatch):
    """experiments/cluster/li2019_full_ddp.yaml: its trainer settings, the batch layout the SLURM
    launcher asks for, and the ranks Lightning takes from srun's environment (on CPUs here)."""
    from jsonargparse import ArgumentParser
    from lightning_fabric.plugins.environments import SLURMEnvironment
    from pytorch_lightning import Trainer
    from pytorch_lightning.strategies import DDPStrategy

    from neuroreg.repro.runner import resolved_config

    ROOT = Path(__file__).resolve().parents[2]
    cfg = resolved_config(ROOT / "experiments" / "cluster" / "li2019_full_ddp.yaml", [])
    trainer_cfg = cfg["trainer"]
    assert (trainer_cfg["accelerator"], trainer_cfg["devices"], trainer_cfg["num_nodes"], trainer_cfg["strategy"]) == ("gpu", 4, 2, "ddp")
    assert trainer_cfg["sync_batchnorm"] is True
    (plugin,) = trainer_cfg["plugins"]
    assert plugin["class_path"].endswith("SLURMEnvironment")
    assert plugin["init_args"]["auto_requeue"] is True and plugin["init_args"]["requeue_signal"] == "SIGUSR1"
    assert cfg["model"]["init_args"]["optimizer"]["init_args"]["lr"] == pytest.approx(0.1 * 8)  # linear in the 8 processes
    launcher = SlurmLauncher(tmp_path, tmp_path, Resources.for_scale("full"))
    params = launcher.parameters("fit", "fit similarity seed 0", {k: trainer_cfg[k] for k in ("accelerator", "devices", "num_nodes")})
    assert (params["nodes"], params["ntasks_per_node"], params["gpus_per_node"]) == (2, 4, 4)
    assert params["additional_parameters"]["signal"] == "USR1@90"
    # rank 5 of 8 (node 1, local rank 1), as srun starts it; CPUs stand in for the GPUs
    for key, value in {"SLURM_NTASKS": "8", "SLURM_NTASKS_PER_NODE": "4", "SLURM_PROCID": "5", "SLURM_LOCALID": "1",
                       "SLURM_NODEID": "1", "SLURM_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "77",
                       "SLURM_JOB_NAME": "neuroreg-fit"}.items():
        monkeypatch.setenv(key, value)
    # building a Trainer as rank 5 sets the process-wide rank of Lightning's rank-zero helpers: restore it after
    # this test, or every later logger and rank_zero_warn in this process acts as a non-zero rank
    from lightning_fabric.utilities import rank_zero as fabric_rank_zero
    from pytorch_lightning.utilities import rank_zero as pl_rank_zero

    for module in (fabric_rank_zero, pl_rank_zero):
        monkeypatch.setattr(module.rank_zero_only, "rank", getattr(module.rank_zero_only, "rank", 0))
    # SLURMEnvironment writes the main address and port it derives into os.environ: undo that too, or a
    # later DDP run of this process waits for a rendezvous at gpu07
    for key in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(key, "unset")  # recorded first, so the undo restores the original state
        monkeypatch.delenv(key)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(Trainer, "trainer", fail_untyped=False)
    section = {**{k: v for k, v in trainer_cfg.items() if k in ("devices", "num_nodes", "strategy", "sync_batchnorm", "plugins")},
               "accelerator": "cpu", "logger": False, "enable_checkpointing": False, "default_root_dir": str(tmp_path)}
    trainer = parser.instantiate_classes(parser.parse_object({"trainer": section}))["trainer"]
    env = trainer._accelerator_connector.cluster_environment
    assert isinstance(env, SLURMEnvironment) and env.auto_requeue and env.requeue_signal.name == "SIGUSR1"
    assert isinstance(trainer.strategy, DDPStrategy)
    assert (trainer.num_nodes, trainer.num_devices, trainer.world_size) == (2, 4, 8)
    assert (trainer.global_rank, trainer.local_rank, trainer.node_rank) == (5, 1, 1)
    assert env.main_address == "gpu07"
    assert pl_rank_zero.rank_zero_only.rank == 5  # what the restore above undoes


def _visible(stage):
    return {"cuda": os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")}


def test_local_jobs_see_the_gpus_this_process_sees(tmp_path, monkeypatch):
    for value, seen in (("3,5", "3,5"), (None, "<unset>")):
        if value is None:
            monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        else:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
        s = Stage("gpus", "t", "k", tmp_path / str(value), _visible)
        assert LocalLauncher(tmp_path / "sub", tmp_path / "logs", poll=0.1).run([s]) == []
        assert s.result()["cuda"] == seen


TINY_FIT = """
seed_everything: 0
trainer:
  accelerator: cpu
  devices: 1
  max_epochs: 2
  limit_train_batches: 3
  limit_val_batches: 1
  deterministic: true
  enable_model_summary: false
  enable_progress_bar: false
model:
  class_path: neuroreg.models.classifier.RegularizedClassifier
  init_args:
    backbone:
      class_path: neuroreg.models.backbones.SmallResNet
      init_args: {in_channels: 1, widths: [8, 16]}
    mean: [0.3]
    std: [0.32]
    optimizer:
      class_path: torch.optim.AdamW
      init_args: {lr: 0.003}
data:
  class_path: neuroreg.data.datamodules.RegularizedDataModule
  init_args:
    images:
      class_path: neuroreg.data.images.Digits
      init_args: {size: 16, split_seed: 0}
    batch_size: 64
    eval_batch_size: 256
"""

# the body of a SLURM job: execute() of a fit stage; after its first epoch the job gets SLURM's
# signal (USR1), on which Lightning saves an HPC checkpoint and calls `scontrol requeue`
JOB = """
import json, os, signal, sys, threading, time
from pathlib import Path
from neuroreg.repro.launchers import execute
from neuroreg.repro.runner import _run_fit
from neuroreg.repro.stages import Stage

spec = json.loads(sys.argv[1])
folder = Path(spec["folder"])
stage = Stage("fit tiny seed 0", "fit", "k", folder, _run_fit(spec["argv"], False))
if spec["signal"]:
    def signal_after_the_first_epoch():
        while not (folder / "checkpoints" / "last.ckpt").is_file():
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGUSR1)
    threading.Thread(target=signal_after_the_first_epoch, daemon=True).start()
execute(stage, spec["log"])
"""


@pytest.mark.slow
def test_a_fit_signalled_under_slurm_is_requeued_and_resumes_from_its_hpc_checkpoint(tmp_path):
    import subprocess

    from neuroreg.repro.runner import _loggers

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "scontrol_calls.txt"
    # SLURM requeues by ending the job: the fake scontrol records the call and kills the job's process
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {record}\nkill -9 $PPID\n')
    (bin_dir / "scontrol").chmod(0o755)
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_FIT)
    folder = tmp_path / "out" / "runs" / "tiny" / "seed0-k"
    folder.mkdir(parents=True)
    argv = ["fit", "--config", str(config), f"--trainer.default_root_dir={folder}",
            f"--trainer.logger={json.dumps(_loggers(folder, folder.name, None))}"]
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SLURM_JOB_ID": "4242",
           "SLURM_JOB_NAME": "neuroreg-fit-tiny", "SLURM_NTASKS": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
           "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost"}
    log = tmp_path / "fit.log"

    def job(signal: bool) -> subprocess.CompletedProcess:
        spec = json.dumps({"folder": str(folder), "argv": argv, "signal": signal, "log": str(log)})
        return subprocess.run([sys.executable, "-c", JOB, spec], env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=600)

    first = job(signal=True)
    assert first.returncode == -9, first.stderr[-2000:]
    assert record.read_text().split() == ["requeue", "4242"]
    assert [p.name for p in folder.glob("hpc_ckpt_*.ckpt")] == ["hpc_ckpt_1.ckpt"]
    assert not (folder / "done.json").exists()
    assert "Handling auto-requeue signal" in log.read_text()
    # the requeued job runs the same stage: the HPC checkpoint becomes last.ckpt and the fit resumes from it
    second = job(signal=False)
    assert second.returncode == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "the checkpoint saved on SLURM's requeue signal (hpc_ckpt_1.ckpt)" in text
    assert "resuming fit tiny seed 0" in text and "neuroreg: resuming from" in text
    assert not list(folder.glob("hpc_ckpt_*.ckpt"))
    done = json.loads((folder / "done.json").read_text())
    assert done["epochs"] == 2 and done["global_step"] == 6
    assert json.loads((folder / "fit_status.json").read_text())["state"] == "complete"


@pytest.mark.slow
def test_sweep_points_run_as_local_jobs(tmp_path, monkeypatch, capsys):
    import yaml

    from neuroreg.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(TINY_FIT)
    sweep = {"method": "grid", "parameters": {"model.init_args.optimizer.init_args.lr": {"values": [0.001, 0.01]}},
             "command": ["${env}", "neuroreg", "fit", "--config", str(tmp_path / "tiny.yaml"), "${args}"]}
    (tmp_path / "lr.yaml").write_text(yaml.safe_dump(sweep))
    argv = ["sweep", "run", "lr.yaml", "--all", "--jobs", "2", "--out", "sw", "--", "--trainer.fast_dev_run=true"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "neuroreg sweep: 2 of 2 point(s) done" in printed and "Epoch" not in printed
    done = sorted((tmp_path / "sw").glob("point*/done.json"))
    assert len(done) == 2
    assert [json.loads(p.read_text())["argv"][-2] for p in done] == [
        "--model.init_args.optimizer.init_args.lr=0.001", "--model.init_args.optimizer.init_args.lr=0.01"]
    logs = sorted((tmp_path / "sw" / "logs").glob("point-*.log"))
    assert len(logs) == 2 and all("neuroreg sweep: point" in p.read_text() for p in logs)
    assert main(argv) == 0 and len(list((tmp_path / "sw" / "logs").glob("point-*.log"))) == 2  # nothing rerun
