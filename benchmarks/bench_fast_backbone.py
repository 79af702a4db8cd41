"""FastResNet against ResNet-18 on ClutteredDigits at equal epochs (test accuracy, seconds per epoch).

Both train from the same seed with the same schedule (SGD, Nesterov momentum 0.9,
weight decay 5e-4, label smoothing 0.1, a one-cycle learning rate peaking at
``--lr``), the same batches and the same number of epochs, on a GPU when there is one.
The defaults are CPU-small (16×16 images, a few epochs): the numbers say whether the fast
backbone keeps ResNet-18's accuracy at equal epochs, not what either reaches at full scale.

    python benchmarks/bench_fast_backbone.py [--size 16] [--epochs 6] [--batch 128] [--device cuda|cpu]
        [--train-images N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from neuroreg.data.images import ClutteredDigits
from neuroreg.models.backbones import FastResNet, ResNet18


def run(name: str, backbone: nn.Module, data, epochs: int, batch: int, lr: float, seed: int,
        device: str = "cpu") -> tuple[float, float]:
    (xtr, ytr), (xte, yte) = data
    torch.manual_seed(seed)
    model = nn.Sequential(backbone, nn.Linear(backbone.out_features, 10)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps = epochs * (len(xtr) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.25)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        perm = rng.permutation(len(xtr))
        for s in range(0, len(xtr) - batch + 1, batch):
            idx = perm[s : s + batch]
            loss = nn.functional.cross_entropy(model(xtr[idx]), ytr[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    if device == "cuda":
        torch.cuda.synchronize()
    per_epoch = (time.perf_counter() - t0) / epochs
    model.eval()
    with torch.no_grad():
        acc = float((model(xte).argmax(1) == yte).float().mean())
    print(f"{name:<12} test accuracy {acc:.3f}   {per_epoch:6.1f} s/epoch")
    return acc, per_epoch


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="CPU threads (more than one oversubscribes a shared machine)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--train-images", type=int, default=None, help="use the first N training images (default: all)")
    a = p.parse_args()
    if a.train_images is not None and a.train_images < a.batch:
        p.error(f"--train-images: expected at least one batch ({a.batch}), found {a.train_images}")
    torch.set_num_threads(a.threads)
    images = ClutteredDigits(size=a.size)

    def tensors(split, limit=None):
        s = images.split(split)
        x = torch.from_numpy(s.images[:limit]).float().div_(255.0)
        return ((x - 0.5) / 0.25).to(a.device), torch.from_numpy(s.labels[:limit]).to(a.device)

    data = (tensors("train", a.train_images), tensors("test"))
    where = f"CPU ({torch.get_num_threads()} threads)" if a.device == "cpu" else torch.cuda.get_device_name()
    print(f"ClutteredDigits {a.size}x{a.size}: {len(data[0][1])} train / {len(data[1][1])} test images; "
          f"{a.epochs} epochs, batch {a.batch}, {where}")
    fast, t_fast = run("FastResNet", FastResNet(3, widths=[32, 64, 128, 128]), data, a.epochs, a.batch, a.lr, a.seed,
                       a.device)
    ref, t_ref = run("ResNet18", ResNet18(3), data, a.epochs, a.batch, a.lr, a.seed, a.device)
    print(f"accuracy difference (FastResNet - ResNet18): {100 * (fast - ref):+.1f} points; time per epoch ratio {t_fast / t_ref:.2f}")


if __name__ == "__main__":
    main()
