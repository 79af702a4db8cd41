"""Training and attack throughput: images/s and the step-time cost of each regularizer.

For ResNet-18 and FastResNet, one training step (forward, cross-entropy plus one
regularizer on ``layer3`` toward random targets, backward, SGD) for every regularizer
of :mod:`neuroreg.regularizers`, reported as images/s and the ratio of its step time
to the plain (unregularized) step; then PGD and APGD-CE throughput (images/s for a
full attack) and twin training throughput (trials/s).

On a GPU: batch 512 of 32×32 RGB images, bf16 autocast, channels-last, 10 timed steps
after 3 warm-up steps. Without one, the same table at a CPU-small size (batch 16 of
16×16 images, float32, 2 timed steps after 1 warm-up, 5-step attacks); CPU numbers say nothing about GPU speed, and
on a shared machine only the ratios measured within one run are comparable.

    python benchmarks/bench_gpu.py [--device cuda|cpu] [--batch N] [--steps N] [--precision bf16|fp32] [--channels-last]

``--precision bf16 --channels-last`` on a CPU runs the GPU settings' code path (autocast
to bfloat16 on the CPU), which the tests do at a tiny size.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
from torch import nn

import neuroreg.regularizers as regs
from neuroreg.models.backbones import FastResNet, ResNet18
from neuroreg.models.classifier import RegularizedClassifier
from neuroreg.regularizers import StepContext

NEURONS = 200
REGULARIZERS = [n for n in regs.__all__ if n.endswith("Regularizer") and n != "Regularizer"]


def timed(fn, steps: int, warmup: int, device: str) -> float:
    """Seconds per call of ``fn`` (median of ``steps`` after ``warmup``)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def classifier(backbone_name: str, reg_name: str | None, size: int, device: str, channels_last: bool):
    backbone = ResNet18(3) if backbone_name == "ResNet18" else FastResNet(3)
    regularizers = {} if reg_name is None else {"r": getattr(regs, reg_name)(["layer3"])}
    model = RegularizedClassifier(backbone, regularizers=regularizers, num_neurons={"t": NEURONS}, mean=[0.5] * 3,
                                  std=[0.25] * 3, channels_last=channels_last).to(device)
    model.build(size)
    return model.to(device)


def train_step(model, x, y, t, autocast):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    mask = ~torch.isnan(t)

    def step():
        with autocast():
            with model.taps.capture() as feats:
                logits = model(x)
            ce = nn.functional.cross_entropy(logits, y)
            loss = ce
            ctx = StepContext(task_loss=ce, step=0, epoch=0)
            for reg in model.regularizers.values():
                out = reg({layer: feats[layer] for layer in reg.layers}, t, mask, context=ctx)
                loss = loss + reg.loss_weight(out["loss"], ctx) * out["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--attack-steps", type=int, default=None)
    p.add_argument("--threads", type=int, default=1, help="CPU threads (more than one oversubscribes a shared machine)")
    p.add_argument("--precision", choices=("bf16", "fp32"), default=None, help="default: bf16 autocast on a GPU, else fp32")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None, help="default: on a GPU")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    gpu = a.device == "cuda"
    batch = a.batch or (512 if gpu else 16)
    a.size = a.size or (32 if gpu else 16)
    steps = a.steps or (10 if gpu else 2)
    warmup = 3 if gpu else 1
    attack_steps = a.attack_steps or (20 if gpu else 5)
    bf16 = (a.precision or ("bf16" if gpu else "fp32")) == "bf16"
    channels_last = gpu if a.channels_last is None else a.channels_last
    if gpu:
        torch.backends.cudnn.benchmark = True
    if bf16:
        def autocast():
            return torch.autocast("cuda" if gpu else "cpu", dtype=torch.bfloat16)
    else:
        autocast = contextlib.nullcontext
    torch.manual_seed(0)
    x = torch.rand(batch, 3, a.size, a.size, device=a.device)
    y = torch.randint(0, 10, (batch,), device=a.device)
    t = torch.rand(batch, NEURONS, device=a.device)
    settings = ", ".join(["bf16 autocast" if bf16 else "float32"] + (["channels-last"] if channels_last else []))
    print(f"device {a.device}; batch {batch}, {a.size}x{a.size} RGB, {settings}; "
          f"{steps} timed steps after {warmup} warm-up")
    print(f"{'backbone':<11} {'regularizer':<26} {'images/s':>9} {'step ms':>8} {'÷ plain':>8}")
    for name in ("ResNet18", "FastResNet"):
        plain = None
        for reg_name in [None, *REGULARIZERS]:
            model = classifier(name, reg_name, a.size, a.device, channels_last=channels_last).train()
            sec = timed(train_step(model, x, y, t, autocast), steps, warmup, a.device)
            plain = sec if plain is None else plain
            print(f"{name:<11} {reg_name or 'none (plain)':<26} {batch / sec:>9,.0f} {1000 * sec:>8.1f} {sec / plain:>8.2f}")

    from neuroreg.evaluation.attacks.autoattack import apgd
    from neuroreg.evaluation.attacks.gradient import pgd

    print(f"{'attack':<38} {'images/s':>9} {'s/batch':>8}")
    for name in ("ResNet18", "FastResNet"):
        model = classifier(name, None, a.size, a.device, channels_last=channels_last).eval()
        for attack, fn in (("PGD", lambda m=model: pgd(m, x, y, eps=8 / 255, steps=attack_steps)),
                           ("APGD-CE", lambda m=model: apgd(m, x, y, eps=8 / 255, steps=attack_steps))):
            sec = timed(fn, 1, 0 if not gpu else 1, a.device)
            print(f"{name + ' ' + attack + f' ({attack_steps} steps)':<38} {batch / sec:>9,.0f} {sec:>8.2f}")

    from neuroreg.twin.cores import Stacked2dCore
    from neuroreg.twin.module import TwinModule
    from neuroreg.twin.transforms import StimulusTransform

    twin = TwinModule(core=Stacked2dCore(1, 32, input_kernel=9, hidden_kernel=7, layers=3), num_neurons=1000,
                      transform=StimulusTransform(size=(36, 64))).to(a.device).train()
    images = torch.rand(batch, 1, 36, 64, device=a.device)
    responses = torch.poisson(torch.ones(batch, 1000, device=a.device))
    opt = torch.optim.Adam(twin.parameters(), lr=1e-3)

    def twin_step():
        with autocast():
            loss = twin.loss(twin(images), responses)["loss"] + twin.core.regularizer()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    sec = timed(twin_step, steps, warmup, a.device)
    print(f"twin (Stacked2dCore 3x32, Gaussian readout, 1000 neurons, 36x64): {batch / sec:,.0f} trials/s ({1000 * sec:.1f} ms/step)")


if __name__ == "__main__":
    main()
