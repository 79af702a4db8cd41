"""``neuroreg repro``: run a paper recipe end to end and write its comparison report.

::

    neuroreg repro --list
    neuroreg repro quickstart                        # mini scale, 3 seeds, runs/repro/quickstart-mini/
                                                     # (one process per CPU core on a machine without a GPU)
    neuroreg repro li2019 --scale mini --seeds 3 --jobs 2
    neuroreg repro li2019 --scale full --seeds 5 --out /shared/repro/li2019 --wandb my-project

Stages (fetch → twin fit → target prediction → fits of every arm × seed → evaluation)
are cached by content and resumable: run the same command again after an interruption
and finished stages are skipped, an interrupted fit resumes from its last checkpoint.
Where they run is the launcher's (:mod:`neuroreg.repro.launchers`): ``--launcher local``
(default) runs ``--jobs`` stages at a time on this machine through submitit's local
executor, shows one progress display and writes ``OUT/report/`` at the end; each stage's
own output goes to its log under ``OUT/logs/``. ``--launcher slurm`` submits one sbatch
job per stage that is not done (``--dependency=afterok`` on the stages it needs) and a
last job that writes the report, then returns; run the same command again (or with
``--dry-run``) to see what is done. One invocation per output folder at a time; without
SLURM, several machines cannot share one output folder.

::

    neuroreg repro li2019 --scale full --seeds 5 --launcher slurm --partition gpu --account lab \
        --time 720 --gpus 1 --cpus 8 --mem 32 --out /shared/repro/li2019
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from .launchers import LOGS, SUBMITIT, LocalLauncher, Progress, SlurmLauncher, add_launcher_arguments, resources_from
from .recipe import RecipeError, list_recipes, load_recipe
from .runner import ReproError, describe, plan
from .stages import FAILED, write_json


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="neuroreg repro", description="Reproduce a paper recipe: twin, targets, fits, evaluation, report.")
    p.add_argument("recipe", nargs="?", help="recipe name (experiments/<name>/recipe.yaml), folder or file")
    p.add_argument("--list", action="store_true", help="list the shipped recipes and exit")
    p.add_argument("--scale", default="mini", help="mini (embedded data, CPU), real (small real recordings, CPU) or full (downloads, GPU); default mini")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds 0..N-1 (default 3)")
    p.add_argument("--seed-list", type=int, nargs="+", help="explicit seeds instead of --seeds")
    p.add_argument("--out", type=Path, help="output folder (default runs/repro/<recipe>-<scale>)")
    p.add_argument("--jobs", default="auto",
                   help="--launcher local: stages at a time, each with cores/jobs threads (default auto: one per CPU "
                        "core, at most 4, on a machine without a GPU; 1 with a GPU)")
    p.add_argument("--wandb", metavar="PROJECT", help="also log every fit to this W&B project (grouped by recipe)")
    p.add_argument("--data-dir", help="where manifests' files are fetched and read, by the fetch stages and by the "
                                      "data sources of fits and evaluations ($NEUROREG_DATA_DIR; default: neuroreg data's default)")
    p.add_argument("--dry-run", action="store_true", help="print the stages and whether they are done, then exit")
    p.add_argument("--no-progress", action="store_true", help="no Lightning progress bars in the stages' logs")
    add_launcher_arguments(p)
    return p


def _jobs(value: str) -> int:
    """``--jobs``: an integer >= 1, or ``auto`` (one per core, at most 4, without a GPU; 1 with one)."""
    if value == "auto":
        import torch

        return 1 if torch.cuda.is_available() else max(1, min(os.cpu_count() or 1, 4))
    try:
        jobs = int(value)
    except ValueError:
        jobs = 0
    if jobs < 1:
        raise RecipeError(f"--jobs: expected an integer >= 1 or 'auto', found {value!r}")
    return jobs


def main(argv: list[str]) -> int:
    """Entry point of ``neuroreg repro``; returns the exit status (2: bad input, 1: a stage failed)."""
    import json

    args = parser().parse_args(argv)
    if args.list:
        for name in list_recipes():
            r = load_recipe(name)
            print(f"{name:14s} {', '.join(r.scales):10s} {r.title}")
        return 0
    try:
        if not args.recipe:
            raise RecipeError(f"expected a recipe name; known recipes: {list_recipes()}")
        args.jobs = _jobs(args.jobs)
        if args.seed_list is None and args.seeds < 1:
            raise RecipeError(f"--seeds: expected an integer >= 1, found {args.seeds}")
        seeds = list(dict.fromkeys(args.seed_list)) if args.seed_list else list(range(args.seeds))
        recipe = load_recipe(args.recipe)
        scale = recipe.scale(args.scale)
        if args.data_dir:  # the fits' and evaluations' own data sources (e.g. a ManifestRecording) read from it too
            os.environ["NEUROREG_DATA_DIR"] = str(Path(args.data_dir).resolve())
        out = (args.out or Path("runs") / "repro" / f"{recipe.name}-{scale.name}").resolve()
        stages = plan(recipe, scale, seeds, out, wandb_project=args.wandb, data_dir=args.data_dir, progress=not args.no_progress)
    except (RecipeError, ReproError, KeyError, FileNotFoundError) as err:
        print(f"neuroreg repro: error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        for s in stages:
            state = "done" if s.done() else "failed" if s.failed() else "to do"
            print(f"{state:7s} {s.name:32s} {s.folder}")
        return 0

    write_json(out / "repro.json", describe(recipe, scale, seeds, stages))
    print(f"neuroreg repro: {recipe.title} — {scale.name} scale, {len(scale.arms)} arms × {len(seeds)} seeds, "
          f"{len(stages)} stages, {sum(s.done() for s in stages)} already done; output {out}", flush=True)
    if args.launcher == "slurm":
        return _submit_slurm(args, scale.name, stages, out)
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    launcher = LocalLauncher(out / LOGS / SUBMITIT, out / LOGS, jobs=args.jobs, threads=threads)
    progress = Progress(stages, args.jobs)
    try:
        launcher.run(stages, progress)
    finally:
        progress.close()
    missing = [s for s in stages if not s.done()]
    if missing:
        print(f"neuroreg repro: {len(missing)} stage(s) did not finish:", file=sys.stderr)
        for s in missing:
            why = "skipped: a stage it needs failed"
            if (s.folder / FAILED).is_file():
                why = json.loads((s.folder / FAILED).read_text())["error"]
            log = launcher.log_paths.get(s.name)
            print(f"  {s.name} ({s.folder}): {why}{f'; log {log}' if log else ''}", file=sys.stderr)
        print("neuroreg repro: run the same command again to retry; finished stages are kept.", file=sys.stderr)
        return 1
    paths = write_report_of(str(out))
    claims_md = out / "report" / "claims.md"
    if claims_md.is_file():
        print(claims_md.read_text().rstrip())
    print(f"neuroreg repro: report written to {out / 'report'} (tables: {paths['summary_md']})")
    return 0


def write_report_of(out: str) -> dict[str, Path]:
    """Write ``OUT/report/`` from ``OUT/repro.json`` (the last job of a SLURM submission)."""
    import json

    from .report import write_report

    plan_json = json.loads((Path(out) / "repro.json").read_text())
    return write_report(plan_json, Path(out) / "report")


def _submit_slurm(args: argparse.Namespace, scale: str, stages, out: Path) -> int:
    """Submit the stages that are not done, and the report after them, as SLURM jobs."""
    try:
        resources = resources_from(args, scale)
    except ValueError as err:
        print(f"neuroreg repro: error: {err}", file=sys.stderr)
        return 2
    launcher = SlurmLauncher(out / LOGS / SUBMITIT, out / LOGS, resources, setup=args.slurm_setup)
    try:
        ids = launcher.submit(stages, then=write_report_of, then_args=(str(out),), echo=lambda m: print(f"neuroreg repro: {m}"))
    except (RuntimeError, OSError, subprocess.SubprocessError) as err:  # no srun / sbatch, or sbatch refused
        print(f"neuroreg repro: error: cannot submit to SLURM: {err}", file=sys.stderr)
        return 1
    print(f"neuroreg repro: {len(ids) - 1} stage job(s) and the report job submitted; the report will be in "
          f"{out / 'report'}; `squeue --me` follows them, and the same command with --dry-run shows what is done")
    return 0
