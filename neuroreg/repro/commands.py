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
Several processes share the work through claims in the output folder: ``--jobs N``
starts N − 1 helper processes on this machine; on several machines, run the same
command on each, pointed at one shared ``--out`` folder, from a shared working
directory (the twin and target caches under ``data/`` are shared that way too). The
process that started without ``--worker`` writes ``OUT/report/`` when every stage is
done.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .recipe import RecipeError, list_recipes, load_recipe
from .runner import ReproError, clear_failures, describe, plan, run_stages, spawn_workers
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
                   help="processes on this machine, each with cores/jobs threads (default auto: one per CPU core, "
                        "at most 4, on a machine without a GPU; 1 with a GPU)")
    p.add_argument("--wandb", metavar="PROJECT", help="also log every fit to this W&B project (grouped by recipe)")
    p.add_argument("--data-dir", help="where manifests' files are fetched and read, by the fetch stages and by the "
                                      "data sources of fits and evaluations ($NEUROREG_DATA_DIR; default: neuroreg data's default)")
    p.add_argument("--stale-after", type=float, default=300.0, help="seconds after which another process's silent claim is taken over")
    p.add_argument("--dry-run", action="store_true", help="print the stages and whether they are done, then exit")
    p.add_argument("--no-progress", action="store_true", help="hide Lightning's progress bars")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p


def _worker_argv(args: argparse.Namespace, recipe_path: Path, out: Path, seeds: list[int]) -> list[str]:
    argv = [str(recipe_path), "--scale", args.scale, "--seed-list", *map(str, seeds), "--out", str(out),
            "--stale-after", str(args.stale_after), "--no-progress"]
    if args.wandb:
        argv += ["--wandb", args.wandb]
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    return argv


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

    import torch

    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    workers = []
    if not args.worker:
        write_json(out / "repro.json", describe(recipe, scale, seeds, stages))
        clear_failures(stages)
        print(f"neuroreg repro: {recipe.title} — {scale.name} scale, {len(scale.arms)} arms × {len(seeds)} seeds, "
              f"{len(stages)} stages, {sum(s.done() for s in stages)} already done; output {out}", flush=True)
        if args.jobs > 1:
            workers = spawn_workers(_worker_argv(args, recipe.path, out, seeds), args.jobs - 1, out, threads)
    if args.jobs > 1 or args.worker:
        torch.set_num_threads(threads)
    try:
        run_stages(stages, stale_after=args.stale_after, echo=lambda m: print(m, flush=True))
    finally:
        for proc, log in workers:
            proc.wait()
            log.close()
    if args.worker:
        return 0 if all(s.done() for s in stages) else 1
    missing = [s for s in stages if not s.done()]
    if missing:
        print(f"neuroreg repro: {len(missing)} stage(s) did not finish:", file=sys.stderr)
        for s in missing:
            why = "skipped: a stage it needs failed"
            if (s.folder / FAILED).is_file():
                why = json.loads((s.folder / FAILED).read_text())["error"]
            print(f"  {s.name} ({s.folder}): {why}", file=sys.stderr)
        print("neuroreg repro: run the same command again to retry; finished stages are kept.", file=sys.stderr)
        return 1
    from .report import write_report

    plan_json = json.loads((out / "repro.json").read_text())
    paths = write_report(plan_json, out / "report")
    print(paths["summary_md"].read_text())
    print(f"neuroreg: reproduction report written to {out / 'report'}")
    return 0
