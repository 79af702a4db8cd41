"""Where the stages of a reproduction (or the points of a sweep) run: submitit's executors.

Every stage runs as one submitit job, whose body is :func:`execute`: it does nothing
for a stage already done (``done.json``), else runs it with its output (Lightning's
progress bars, warnings, tracebacks) redirected to its own log file
``OUT/logs/<stage>-<UTC time>-<pid>.log`` and writes ``done.json`` last. Nothing else
coordinates the jobs: one process plans and submits, the executor runs.

- :class:`LocalLauncher` (``--launcher local``, the default): submitit's
  :class:`~submitit.LocalExecutor` on this machine, at most ``jobs`` stages at a time,
  each submitted once its dependencies are done; a failed stage's dependents are
  skipped. The submitting process follows them with one progress display
  (:class:`Progress`). Concurrent invocations on one output folder are not supported;
  neither is sharing one output folder between machines without SLURM.
- :class:`SlurmLauncher` (``--launcher slurm``): submitit's
  :class:`~submitit.SlurmExecutor`; each stage is an ``sbatch`` job whose dependencies
  are ``--dependency=afterok:<ids>`` of the jobs of the stages it needs
  (``--kill-on-invalid-dep=yes``: a failed stage cancels its dependents). Stages already
  done are not submitted. Resources come from the options, else from the recipe
  scale's defaults (:data:`SCALE_RESOURCES`). Fits whose trainer asks for several
  devices or nodes get one task per device (``--ntasks-per-node``, ``--nodes``), the
  layout Lightning's SLURM environment expects for DDP. The jobs ask for
  ``--signal=USR1@90`` and ``--requeue``: Lightning's
  :class:`~lightning_fabric.plugins.environments.SLURMEnvironment` (``auto_requeue``,
  its default under SLURM) answers the signal before the time limit or a preemption by
  saving an HPC checkpoint and ``scontrol requeue``-ing the job; the requeued job runs the
  same stage again, whose fit resumes from that checkpoint as its ``last.ckpt``
  (:func:`neuroreg.repro.runner._promote_hpc_checkpoint`, :mod:`neuroreg.runs.resume`).

Example:
    >>> Resources.for_scale("full", gpus=2).gpus, SCALE_RESOURCES["mini"].gpus
    (2, 0)
    >>> stage_log_stem("fit baseline seed 0")
    'fit-baseline-seed-0'
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import socket
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .stages import FAILED, Stage, write_json

#: sub-folder of an output folder that holds the stages' logs
LOGS = "logs"
#: sub-folder of ``LOGS`` that holds submitit's job files
SUBMITIT = "submitit"
#: the signal SLURM sends before a job's time limit, the one Lightning's SLURMEnvironment requeues on
REQUEUE_SIGNAL = "USR1"
#: lines of a failed stage's log shown on the console
TAIL_LINES = 12


@dataclass(frozen=True)
class Resources:
    """What one SLURM job asks for (``time`` in minutes, ``mem_gb`` per node)."""

    cpus: int = 2
    gpus: int = 0
    mem_gb: float = 8
    time: int = 60
    partition: str | None = None
    account: str | None = None
    qos: str | None = None

    @classmethod
    def for_scale(cls, scale: str, **given: Any) -> Resources:
        """The scale's defaults (:data:`SCALE_RESOURCES`) with the ``given`` values that are not ``None``."""
        base = SCALE_RESOURCES.get(scale, SCALE_RESOURCES["full"])
        return dataclasses.replace(base, **{k: v for k, v in given.items() if v is not None})


#: default resources of a job per recipe scale (mini and real run on CPUs, full on a GPU)
SCALE_RESOURCES = {
    "mini": Resources(cpus=2, gpus=0, mem_gb=8, time=60),
    "real": Resources(cpus=4, gpus=0, mem_gb=16, time=4 * 60),
    "full": Resources(cpus=8, gpus=1, mem_gb=32, time=24 * 60),
}


def stage_log_stem(name: str) -> str:
    """A file-name stem for a stage's log: its name with runs of other characters as ``-``."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", name).strip("-") or "stage"


def new_log(folder: Path, stem: str) -> Path:
    """A new, empty ``folder/<stem>-<UTC time>-<pid>.log`` (created exclusively: a rerun or
    a concurrent submission never overwrites another's log; ``.2``, ``.3`` … when taken)."""
    folder.mkdir(parents=True, exist_ok=True)
    base = f"{stem}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}"
    for n in range(1, 1000):
        path = folder / (f"{base}.log" if n == 1 else f"{base}.{n}.log")
        try:
            with open(path, "x"):
                return path
        except FileExistsError:
            continue
    raise FileExistsError(f"{folder}: no free log name for {stem}")


def _rank() -> int:
    for key in ("SLURM_PROCID", "SUBMITIT_LOCAL_GLOBALID", "RANK"):
        if os.environ.get(key):
            return int(os.environ[key])
    return 0


@contextmanager
def redirected(log: Path | None):
    """Send this process's stdout and stderr (file descriptors 1 and 2, so child processes
    and C libraries too) to ``log``, appended; restored afterwards. ``None``: unchanged."""
    if log is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "a", buffering=1) as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def execute(stage: Stage, log: str | None = None, threads: int | None = None) -> dict[str, Any]:
    """The body of a stage's job: run ``stage`` unless it is done, and mark it done.

    Output goes to ``log`` (the other ranks of a multi-task job write ``<log>.rank<k>``).
    Only rank 0 writes ``done.json`` / ``failed.json``. Returns the ``done.json`` payload.

    Raises:
        Exception: whatever the stage raised (after ``failed.json`` is written).
    """
    if stage.done():
        return stage.result()
    rank = _rank()
    path = None if log is None else Path(log) if rank == 0 else Path(f"{log}.rank{rank}")
    stage.folder.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        (stage.folder / FAILED).unlink(missing_ok=True)
    with redirected(path):
        if threads:
            import torch

            torch.set_num_threads(threads)
        from neuroreg.console import quiet_lightning

        quiet_lightning()
        t0 = time.time()
        try:
            result = stage.run(stage)
        except BaseException as err:
            traceback.print_exc()
            if rank == 0:
                write_json(stage.folder / FAILED, {"stage": stage.name, "error": f"{type(err).__name__}: {err}",
                                                    "traceback": traceback.format_exc(), "log": log})
            raise
        payload = {**result, "stage": stage.name, "key": stage.key, "wall_s": round(time.time() - t0, 2),
                   "host": socket.gethostname()}
        if rank == 0:
            write_json(stage.done_path, payload)
    return payload


def log_tail(path: Path | None, lines: int = TAIL_LINES) -> list[str]:
    """The last ``lines`` non-empty lines of a log, each as a terminal would show it (the text
    after its last carriage return, so a progress bar counts as its final state)."""
    if path is None or not Path(path).is_file():
        return []
    text = Path(path).read_bytes().decode(errors="replace")  # not read_text: it turns each \r into a line end
    shown = [line.rsplit("\r", 1)[-1].rstrip() for line in text.split("\n")]
    return [line for line in shown if line.strip()][-lines:]


def _error_line(stage: Stage, err: BaseException) -> str:
    """The stage's own error (from ``failed.json``), else the job's."""
    try:
        return json.loads((stage.folder / FAILED).read_text())["error"]
    except (OSError, ValueError, KeyError):
        last = str(err).strip().splitlines()
        return last[-1] if last else type(err).__name__


# -------------------------------------------------------------------- console
def _done_wall(stage: Stage) -> float | None:
    """The wall time an earlier run recorded in the stage's ``done.json``, if any."""
    if not stage.done():
        return None
    try:
        wall = float(stage.result()["wall_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return wall if wall >= 0 else None


class Progress:
    """One progress display over the stages: done / running / left, the running stages'
    names and an ETA (tqdm, on a terminal), and one line per stage that finishes, fails
    or is skipped (always).

    The ETA sums, over the stages not finished, the mean wall time of finished stages of
    the same kind (fits, evaluations and reports take very different times), or of all
    finished stages for a kind none has finished yet; a running stage counts what it
    has left of that. Stages finished by an earlier run count through the ``wall_s`` of
    their ``done.json``. The sum is divided by the parallel jobs."""

    def __init__(self, stages: Sequence[Stage], jobs: int, file: TextIO | None = None, bar: bool | None = None,
                 prefix: str = "neuroreg repro"):
        from tqdm import tqdm

        self.file = file or sys.stdout
        self.total = len(stages)
        self.done = sum(s.done() for s in stages)
        self.jobs = max(1, jobs)
        self.prefix = prefix
        self.running: dict[str, float] = {}
        self.kinds = {s.name: s.kind for s in stages}
        self.pending = {s.name for s in stages if not s.done()}
        self.walls: dict[str, list[float]] = {}  # by stage kind
        for s in stages:
            wall = _done_wall(s)
            if wall is not None:
                self.walls.setdefault(s.kind, []).append(wall)
        self.failed = 0
        self.t0 = time.time()
        show = self.file.isatty() if bar is None else bar
        self.bar = tqdm(total=self.total, initial=self.done, file=self.file, disable=not show, leave=False,
                        dynamic_ncols=True, unit="stage", bar_format="{n_fmt}/{total_fmt} stages |{bar:20}| {desc}")
        self._refresh()

    def eta(self) -> float | None:
        """Seconds left (see the class); ``None`` before any stage has a wall time."""
        every = [w for ws in self.walls.values() for w in ws]
        if not every:
            return None
        overall = sum(every) / len(every)
        now = time.time()
        left = 0.0
        for name in self.pending:
            ws = self.walls.get(self.kinds[name])
            expected = sum(ws) / len(ws) if ws else overall
            left += max(0.0, expected - (now - self.running[name])) if name in self.running else expected
        return left / self.jobs

    def _eta_text(self) -> str:
        eta = self.eta()
        if eta is None:
            return "ETA after the first stage"
        return f"ETA {eta / 60:.0f} min" if eta >= 90 else f"ETA {eta:.0f} s"

    def _refresh(self) -> None:
        left = self.total - self.done - self.failed - len(self.running)
        names = ", ".join(self.running)
        self.bar.set_description_str(f"{len(self.running)} running{': ' + names if names else ''}; {left} left; {self._eta_text()}")

    def line(self, text: str) -> None:
        if self.bar.disable:
            print(text, file=self.file, flush=True)
        else:
            self.bar.write(text, file=self.file)

    def started(self, stage: Stage) -> None:
        self.running[stage.name] = time.time()
        self._refresh()

    def finished(self, stage: Stage) -> None:
        wall = time.time() - self.running.pop(stage.name, time.time())
        self.walls.setdefault(stage.kind, []).append(wall)
        self.pending.discard(stage.name)
        self.done += 1
        self.bar.update(1)
        self._refresh()
        self.line(f"{self.prefix}: [{self.done}/{self.total}] done {stage.name} ({wall:.0f} s); {self._eta_text()}")

    def failed_stage(self, stage: Stage, error: str, log: Path | None) -> None:
        self.running.pop(stage.name, None)
        self.pending.discard(stage.name)
        self.failed += 1
        self._refresh()
        self.line(f"{self.prefix}: FAILED {stage.name}: {error}")
        tail = log_tail(log)
        if tail:
            self.line(f"  last lines of its log {log}:")
            for text in tail:
                self.line(f"    {text}")
        elif log is not None:
            self.line(f"  log: {log}")

    def skipped(self, stage: Stage, because: str) -> None:
        self.pending.discard(stage.name)
        self.failed += 1
        self._refresh()
        self.line(f"{self.prefix}: skipped {stage.name}: {because} failed")

    def close(self) -> None:
        self.bar.close()


# ---------------------------------------------------------------------- local
class LocalLauncher:
    """Runs stages on this machine through submitit's :class:`~submitit.LocalExecutor`.

    Args:
        folder: submitit's job folder (pickles, its own logs).
        logs: where the stages' logs go.
        jobs: stages at a time.
        threads: torch threads per job (``None``: torch's default).
        poll: seconds between looks at the running jobs.

    Each job sees the GPUs this process sees: the local executor sets ``CUDA_VISIBLE_DEVICES``
    for its jobs, so the job's shell restores this process's value first (or unsets it).
    """

    def __init__(self, folder: Path, logs: Path, jobs: int = 1, threads: int | None = None, poll: float = 0.5):
        self.folder, self.logs = Path(folder), Path(logs)
        self.jobs, self.threads, self.poll = max(1, jobs), threads, poll
        self.log_paths: dict[str, Path] = {}

    def _executor(self):
        import shlex

        import submitit

        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        setup = ["unset CUDA_VISIBLE_DEVICES"] if visible is None else [f"export CUDA_VISIBLE_DEVICES={shlex.quote(visible)}"]
        executor = submitit.LocalExecutor(folder=self.folder)
        executor.update_parameters(timeout_min=7 * 24 * 60, setup=setup)
        return executor

    def run(self, stages: Sequence[Stage], progress: Progress | None = None) -> list[Stage]:
        """Run every stage that is not done; return those still not done (failed, or skipped
        because a stage they need failed). Ctrl-C cancels the running jobs."""
        executor = self._executor()
        by_name = {s.name: s for s in stages}
        pending = [s for s in stages if not s.done()]
        running: dict[str, Any] = {}
        bad: set[str] = set()
        try:
            while pending or running:
                for stage in list(pending):
                    dead = [d.name for d in stage.deps if d.name in bad]
                    if dead:
                        pending.remove(stage)
                        bad.add(stage.name)
                        if progress:
                            progress.skipped(stage, dead[0])
                for stage in list(pending):
                    if len(running) >= self.jobs:
                        break
                    if stage.ready():
                        pending.remove(stage)
                        log = new_log(self.logs, stage_log_stem(stage.name))
                        self.log_paths[stage.name] = log
                        running[stage.name] = executor.submit(execute, stage, str(log), self.threads)
                        if progress:
                            progress.started(stage)
                    elif any(not d.done() and d.name not in running and d.name not in {p.name for p in pending}
                             for d in stage.deps):
                        # a dependency that is neither done, running nor waiting: it can never run here
                        pending.remove(stage)
                        bad.add(stage.name)
                        if progress:
                            progress.skipped(stage, next(d.name for d in stage.deps if not d.done()))
                for name, job in list(running.items()):
                    if not job.done():
                        continue
                    del running[name]
                    stage = by_name[name]
                    try:
                        job.result()
                    except Exception as err:  # the stage's error, or a job killed from outside
                        bad.add(name)
                        if progress:
                            progress.failed_stage(stage, _error_line(stage, err), self.log_paths.get(name))
                        continue
                    if progress:
                        progress.finished(stage)
                if pending or running:
                    time.sleep(self.poll)
        except BaseException:
            for job in running.values():
                job.cancel(check=False)
            raise
        return [s for s in stages if not s.done()]


# ---------------------------------------------------------------------- SLURM
class SlurmLauncher:
    """Submits stages as SLURM jobs through submitit's :class:`~submitit.SlurmExecutor`.

    Args:
        folder: submitit's job folder, on a file system the nodes share.
        logs: where the stages' logs go (shared too).
        resources: what each job asks for; ``fetch`` stages and the report ask for no GPU.
        setup: shell lines the batch script runs before the job (``module load …``, a venv).
        max_requeues: how often submitit may requeue a job it sees time out.
    """

    def __init__(self, folder: Path, logs: Path, resources: Resources, setup: Sequence[str] = (), max_requeues: int = 3):
        self.folder, self.logs, self.resources = Path(folder), Path(logs), resources
        self.setup, self.max_requeues = list(setup), max_requeues
        self.log_paths: dict[str, Path] = {}

    def executor(self):
        """A submitit SLURM executor for :attr:`folder` (``srun`` must be on PATH)."""
        import submitit

        return submitit.SlurmExecutor(folder=self.folder, max_num_timeout=self.max_requeues)

    def parameters(self, kind: str, name: str, trainer: dict[str, Any] | None = None, dependency: Sequence[str] = ()) -> dict[str, Any]:
        """The ``SlurmExecutor.update_parameters`` of one job.

        A fit whose trainer asks for ``devices: N`` (an integer) on an accelerator other
        than the CPU and ``num_nodes: M`` gets M nodes with N tasks and N GPUs each, the
        layout Lightning's SLURM environment expects for DDP; other jobs get one task."""
        r = self.resources
        gpus = 0 if kind in ("fetch", "report") else r.gpus
        nodes, tasks = 1, 1
        if kind == "fit" and trainer:
            devices = trainer.get("devices")
            nodes = int(trainer.get("num_nodes") or 1)
            if isinstance(devices, int) and devices > 1 and trainer.get("accelerator") not in ("cpu",):
                tasks = gpus = devices
        extra: dict[str, Any] = {"signal": f"{REQUEUE_SIGNAL}@90", "requeue": True}
        params: dict[str, Any] = {
            "job_name": f"neuroreg-{stage_log_stem(name)}", "time": int(r.time), "cpus_per_task": int(r.cpus),
            "mem": f"{int(r.mem_gb)}GB" if float(r.mem_gb).is_integer() else f"{int(r.mem_gb * 1024)}MB",
            "nodes": nodes, "ntasks_per_node": tasks, "setup": [f"export OMP_NUM_THREADS={int(r.cpus)}", *self.setup],
            "additional_parameters": extra,
        }
        if gpus:
            params["gpus_per_node"] = int(gpus)
        for key in ("partition", "account", "qos"):
            if getattr(r, key):
                params[key] = getattr(r, key)
        if dependency:
            params["dependency"] = "afterok:" + ":".join(dependency)
            extra["kill-on-invalid-dep"] = "yes"
        return params

    def submit(self, stages: Sequence[Stage], then: Callable[..., Any] | None = None, then_args: Sequence[Any] = (),
               echo: Callable[[str], None] = print) -> dict[str, str]:
        """Submit every stage that is not done, each after the jobs of the stages it needs;
        then, when given, ``then(*then_args)`` as a ``report`` job after all of them.
        Returns ``{stage name: job id}`` (``"report"`` for the last job)."""
        self.executor()  # no srun: fail before anything is submitted
        ids: dict[str, str] = {}
        for stage in stages:
            if stage.done():
                continue
            missing = [d.name for d in stage.deps if not d.done() and d.name not in ids]
            if missing:
                raise RuntimeError(f"{stage.name}: needs {missing[0]}, which is neither done nor part of this submission")
            deps = [ids[d.name] for d in stage.deps if d.name in ids]
            executor = self.executor()  # a new one per job: parameters set for one job never leak into the next
            executor.update_parameters(**self.parameters(stage.kind, stage.name, stage.info.get("trainer"), deps))
            log = new_log(self.logs, stage_log_stem(stage.name))
            self.log_paths[stage.name] = log
            job = executor.submit(execute, stage, str(log), None)
            ids[stage.name] = str(job.job_id)
            echo(f"submitted {stage.name}: job {job.job_id}{' after ' + ', '.join(deps) if deps else ''}; log {log}")
        if then is not None:
            executor = self.executor()
            executor.update_parameters(**self.parameters("report", "report", None, list(ids.values())))
            job = executor.submit(then, *then_args)
            ids["report"] = str(job.job_id)
            echo(f"submitted report: job {job.job_id}{' after every stage' if len(ids) > 1 else ''}")
        return ids

    def submit_array(self, stages: Sequence[Stage], parallel: int | None = None, echo: Callable[[str], None] = print) -> list[str]:
        """Submit independent stages (the points of a sweep) as one SLURM job array
        (``--array=0-<n-1>%<parallel>``). Returns the job ids (``<array id>_<index>``)."""
        todo = [s for s in stages if not s.done()]
        if not todo:
            return []
        executor = self.executor()
        params = self.parameters(todo[0].kind, todo[0].name.split(" ")[0])
        if parallel:
            params["array_parallelism"] = int(parallel)
        executor.update_parameters(**params)
        logs = [new_log(self.logs, stage_log_stem(s.name)) for s in todo]
        with executor.batch():
            jobs = [executor.submit(execute, s, str(log), None) for s, log in zip(todo, logs)]
        for s, log, job in zip(todo, logs, jobs):
            self.log_paths[s.name] = log
            echo(f"submitted {s.name}: job {job.job_id}; log {log}")
        return [str(j.job_id) for j in jobs]


# -------------------------------------------------------------------- options
def add_launcher_arguments(p: argparse.ArgumentParser) -> None:
    """``--launcher`` and the SLURM options, shared by ``neuroreg repro`` and ``neuroreg sweep run``."""
    p.add_argument("--launcher", choices=("local", "slurm"), default="local",
                   help="local: this machine's cores (default); slurm: one sbatch job per stage, with dependencies")
    g = p.add_argument_group("SLURM (--launcher slurm; defaults from the recipe's scale)")
    g.add_argument("--partition", help="sbatch --partition")
    g.add_argument("--account", help="sbatch --account")
    g.add_argument("--qos", help="sbatch --qos")
    g.add_argument("--time", type=int, metavar="MINUTES", help="time limit of each job (mini 60, real 240, full 1440)")
    g.add_argument("--cpus", type=int, help="CPUs per task (mini 2, real 4, full 8)")
    g.add_argument("--gpus", type=int, help="GPUs per node (mini 0, real 0, full 1)")
    g.add_argument("--mem", type=float, metavar="GB", help="memory per node (mini 8, real 16, full 32)")
    g.add_argument("--slurm-setup", action="append", default=[], metavar="LINE",
                   help="a shell line the batch script runs first (repeatable), e.g. 'source .venv/bin/activate'")


def resources_from(args: argparse.Namespace, scale: str) -> Resources:
    """The :class:`Resources` of the options, the rest from ``scale``'s defaults.

    Raises:
        ValueError: a count or time below its minimum (the message names the option)."""
    for opt, minimum in (("time", 1), ("cpus", 1), ("gpus", 0), ("mem", 0.001)):
        value = getattr(args, opt)
        if value is not None and value < minimum:
            raise ValueError(f"--{opt}: expected a number >= {minimum}, found {value}")
    return Resources.for_scale(scale, cpus=args.cpus, gpus=args.gpus, mem_gb=args.mem, time=args.time,
                               partition=args.partition, account=args.account, qos=args.qos)
