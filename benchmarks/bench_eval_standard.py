"""Wall time of the ``standard`` (or any) evaluation suite on a briefly trained quickstart model.

Trains the quickstart config for ``--epochs`` epochs (no end-of-fit evaluation) into a
temporary directory, unless ``--ckpt`` names an existing quickstart checkpoint, then
runs :func:`neuroreg.evaluation.commands.evaluate_checkpoint` with the suite's budget on
the CPU and prints the wall time of each part (``report["timing_s"]``) and in total.

With ``--max-images`` (and ``--scale-counts``) the run is shortened, and each part's
time is extrapolated to the suite's own image counts: parts over the test set scale
with ``min(max_images, test set) / images used``; the AutoAttack, minimal perturbation,
decision-based and check / Square parts with their own counts likewise (the
extrapolation assumes time linear in images, true up to batching effects). Without
them the estimate equals the measurement.

    OMP_NUM_THREADS=2 python benchmarks/bench_eval_standard.py [--suite standard] [--epochs 1]
        [--ckpt RUN/checkpoints/x.ckpt] [--max-images 200 --scale-counts 0.5]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def train(epochs: int) -> Path:
    """Fit the quickstart config for ``epochs`` epochs into a temporary directory; its checkpoint."""
    from neuroreg.cli import main as neuroreg

    tmp = Path(tempfile.mkdtemp(prefix="neuroreg-bench-"))
    neuroreg([
        "fit", "--config", str(ROOT / "experiments" / "quickstart.yaml"), f"--trainer.max_epochs={epochs}",
        "--trainer.callbacks=[]", f"--trainer.default_root_dir={tmp}",
        f"--trainer.logger.init_args.save_dir={tmp / 'runs'}", "--trainer.enable_progress_bar=false",
    ])
    return next(tmp.rglob("*.ckpt"))


def main() -> None:
    import torch

    from neuroreg.evaluation.commands import evaluate_checkpoint, find_run_config, load_data
    from neuroreg.evaluation.suite import budget_for, default_measurements

    p = argparse.ArgumentParser()
    p.add_argument("--suite", default="standard")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--ckpt", type=Path)
    p.add_argument("--max-images", type=int, help="shorten: at most this many test images")
    p.add_argument("--scale-counts", type=float, default=1.0,
                   help="shorten: multiply the AutoAttack / Square / minimal / decision / check image counts")
    args = p.parse_args()
    ckpt = args.ckpt or train(args.epochs)
    full = budget_for(args.suite)
    # report timing key -> the Budget fields counting the images of that part and of the parts it runs itself
    parts = {m.name: [q.images for q in (m, *m.parts) if q.images] for m in default_measurements()}
    counts = sorted({f for fields in parts.values() for f in fields})
    scaled = {k: max(1, int(getattr(full, k) * args.scale_counts)) if getattr(full, k) else 0 for k in counts}
    budget = replace(full, **scaled, **({"max_images": args.max_images} if args.max_images else {}))
    out = Path(tempfile.mkdtemp(prefix="neuroreg-bench-eval-")) / "eval"
    t, cpu = time.perf_counter(), time.process_time()
    report, _ = evaluate_checkpoint(ckpt, budget=budget, suite=args.suite, out=out, device="cpu", progress=False,
                                    log_to_run=False)
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    n = report["n_images"]
    dm = load_data(find_run_config(ckpt))
    dm.setup("test")
    n_test = len(dm.test_dataloader().dataset)
    n_full = min(full.max_images or n_test, n_test)
    print(f"threads={torch.get_num_threads()} checkpoint={ckpt} suite={args.suite} test images used={n} "
          f"(the suite's: {n_full})")
    total_est = wall - sum(report["timing_s"].values())  # model rebuild, data, writing
    print(f"{'part':<22}{'measured s':>11}{'images':>8}{'suite images':>14}{'est. s':>9}")
    for part, secs in report["timing_s"].items():
        fields = parts.get(part, [])
        if not fields:  # over the test set
            used, target = n, n_full
        else:  # the largest of its counts (sanity also runs the Square check on square_images)
            used = max(min(getattr(budget, f), n) for f in fields)
            target = max(min(getattr(full, f), n_full) for f in fields)
        est = secs * target / max(used, 1)
        total_est += est
        print(f"{part:<22}{secs:>11.1f}{used:>8}{target:>14}{est:>9.1f}")
    print(f"{args.suite} suite wall time: {wall:.1f} s measured (CPU time {cpu:.1f} s); "
          f"estimated for the full budget: {total_est:.1f} s")
    dec = report.get("decision")
    if dec:
        print(f"decision-based L2 ({dec['attack']}) median {dec['median']} over {dec['n_images']} images, "
              f"{dec['queries']} queries; "
              f"white-box minimal L2 median {report['minimal_perturbation']['l2']['median']}")
    if os.getloadavg()[0] > os.cpu_count():
        print(f"note: load average {os.getloadavg()[0]:.1f} > {os.cpu_count()} cores: other processes share the CPU")


if __name__ == "__main__":
    main()
