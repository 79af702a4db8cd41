"""Attack strength: robust accuracy per attack and under the ensemble, and what it costs.

For each quickstart-like checkpoint (trained here for ``--epochs`` epochs per config, or
every ``*.ckpt`` of a ``neuroreg repro`` output folder given by ``--runs``), prints the
robust accuracy at 2/255 and 4/255 under each ensemble member alone (the budget's PGD-10,
AutoAttack's APGD-CE and APGD-T) and under the ensemble (the per-image worst case), the
ensemble's margin over PGD-10, then the wall time of the quick suite on the first model
without the ensemble (the PGD-only suite of before) and with it, as a ratio in the last line.

On a machine shared with other jobs, OMP_NUM_THREADS=1 is much faster than 2 (threads wait on
each other); the numbers below the table are wall times, so say which you ran.

    OMP_NUM_THREADS=2 python benchmarks/bench_attack_strength.py [--epochs 1] [--images 16] [--runs OUT] [--suite-images N]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ("quickstart/mini/baseline.yaml", "quickstart_oracle.yaml")  # no twin to fit: oracle targets
EPSILONS = (0.0, 2 / 255, 4 / 255)


def train(config: Path, epochs: int, out: Path) -> Path:
    from neuroreg.cli import main as neuroreg

    neuroreg([
        "fit", "--config", str(config), f"--trainer.max_epochs={epochs}", "--trainer.callbacks=[]",
        f"--trainer.default_root_dir={out}", f"--trainer.logger.init_args.save_dir={out / 'runs'}",
        "--trainer.enable_progress_bar=false",
    ])
    return next(out.rglob("last.ckpt"), None) or next(out.rglob("*.ckpt"))


def main() -> None:
    import torch

    from neuroreg.evaluation.commands import find_run_config, load_data, load_model
    from neuroreg.evaluation.measurements import Ensemble
    from neuroreg.evaluation.suite import SUITES, default_measurements, evaluate

    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--images", type=int, default=16, help="images attacked per model")
    p.add_argument("--runs", type=Path, help="a neuroreg repro output folder: evaluate its checkpoints")
    p.add_argument("--suite-images", type=int, help="time the quick suite on this many test images (default: its own)")
    args = p.parse_args()
    root = args.runs
    if args.runs is not None:
        folders = sorted({c.parent for c in args.runs.rglob("*.ckpt")})  # one checkpoint per run: last.ckpt if kept
        ckpts = [f / "last.ckpt" if (f / "last.ckpt").is_file() else sorted(f.glob("*.ckpt"))[-1] for f in folders]
        if not ckpts:
            raise SystemExit(f"--runs {args.runs}: expected checkpoints (*.ckpt) below it, found none")
    else:
        tmp = root = Path(tempfile.mkdtemp(prefix="neuroreg-bench-"))
        base = ROOT / "experiments"
        ckpts = [train(base / c, args.epochs, tmp / Path(c).stem) for c in CONFIGS]

    def loaded(ckpt: Path):
        config = find_run_config(ckpt)
        dm = load_data(config)
        dm.setup("test")
        return load_model(ckpt, config).eval(), dm.test_dataloader()

    quick = SUITES["quick"]
    budget = dataclasses.replace(quick, max_images=args.images, robust_images=args.images, linf_epsilons=EPSILONS,
                                 l2_epsilons=())
    only = [m for m in default_measurements() if m.name in ("clean_accuracy", "robust_linf")]
    print(f"threads={torch.get_num_threads()} images={args.images} "
          f"ensemble: PGD-{budget.pgd_steps}, APGD-CE / APGD-T {budget.apgd_steps} iterations, "
          f"{budget.apgd_targets} targets")
    print(f"{'model':<40}{'ε':>7}{'pgd':>8}{'apgd_ce':>9}{'apgd_t':>8}{'ensemble':>10}{'margin':>8}")
    for ckpt in ckpts:
        model, loader = loaded(ckpt)
        section = evaluate(model, loader, budget, measurements=only, progress=False, device="cpu")["robust_linf"]
        name = "/".join(ckpt.relative_to(root).parts[:2])[:39]
        for i, eps in enumerate(section["epsilon"]):
            if eps == 0:
                continue
            cols = [section["members"].get(k, [float("nan")] * len(section["epsilon"]))[i]
                    for k in ("pgd", "apgd_ce", "apgd_t")]
            ens = section["accuracy"][i]
            print(f"{name:<40}{f'{eps * 255:.0f}/255':>7}{cols[0]:>8.3f}{cols[1]:>9.3f}{cols[2]:>8.3f}{ens:>10.3f}"
                  f"{cols[0] - ens:>+8.3f}")

    model, loader = loaded(ckpts[0])
    if args.suite_images is not None:
        quick = dataclasses.replace(quick, max_images=args.suite_images)
    print(f"quick suite on {quick.max_images} images (the ensemble on {min(quick.max_images, quick.robust_images)})")
    walls = {}
    for label, ms in (("PGD only", [m for m in default_measurements() if not isinstance(m, Ensemble)]),
                      ("ensemble", default_measurements())):
        t = time.perf_counter()
        evaluate(model, loader, quick, measurements=ms, progress=False, device="cpu")
        walls[label] = time.perf_counter() - t
        print(f"quick suite ({label}): {walls[label]:.1f} s")
    print(f"quick suite wall time: {walls['PGD only']:.1f} s before (PGD only), {walls['ensemble']:.1f} s after "
          f"(ensemble, target < 120 s): ratio {walls['ensemble'] / walls['PGD only']:.2f}")


if __name__ == "__main__":
    main()
