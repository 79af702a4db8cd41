"""PGD throughput of neuroreg's implementation vs AutoAttack's APGD, per step.

Same model (the quickstart SmallResNet classifier, random weights: throughput does not
depend on them), same batch, same number of steps; throughput = images × steps / s.
Prints both and the ratio neuroreg / APGD.

    OMP_NUM_THREADS=2 python benchmarks/bench_attacks.py [--batch 128] [--steps 20] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    from pyautoattack.autopgd_base import APGDAttack

    from neuroreg.evaluation.attacks.gradient import pgd
    from neuroreg.models.backbones import SmallResNet
    from neuroreg.models.classifier import RegularizedClassifier

    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    torch.manual_seed(0)
    model = RegularizedClassifier(SmallResNet(in_channels=1, widths=[16, 32, 64]), num_classes=10, mean=[0.3], std=[0.32])
    model = model.to(args.device).eval()
    x = torch.rand(args.batch, 1, 32, 32, device=args.device)
    with torch.no_grad():
        y = model(x).argmax(1)
    eps = 8 / 255

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def time_it(fn) -> float:
        fn()  # warm-up
        best = float("inf")
        for _ in range(args.repeats):
            sync()
            t = time.perf_counter()
            fn()
            sync()
            best = min(best, time.perf_counter() - t)
        return best

    t_ours = time_it(lambda: pgd(model, x, y, eps, steps=args.steps, generator=torch.Generator().manual_seed(0)))
    apgd = APGDAttack(model, n_iter=args.steps, norm="Linf", eps=eps, n_restarts=1, seed=0, device=args.device)
    # APGD attacks only still-correct points; with y = predictions every point stays in play until broken
    t_apgd = time_it(lambda: apgd.perturb(x, y))
    ours = args.batch * args.steps / t_ours
    theirs = args.batch * args.steps / t_apgd
    print(f"device={args.device} batch={args.batch} steps={args.steps} threads={torch.get_num_threads()}")
    print(f"neuroreg pgd : {ours:10.1f} images*steps/s ({t_ours:.3f} s)")
    print(f"APGD (auto-attack): {theirs:10.1f} images*steps/s ({t_apgd:.3f} s)")
    print(f"ratio neuroreg / APGD = {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
