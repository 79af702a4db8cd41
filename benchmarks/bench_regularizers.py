"""Training-step time with each regularizer, divided by the plain training step.

Same backbone, same batch (random 32×32 images, batch 128 by default, 300 target
neurons), same machine; each step is forward + backward + optimizer step of
:class:`~neuroreg.models.classifier.RegularizedClassifier`. Configurations are
timed round-robin in a rotating order (so drift in machine load and position in the
round hit all of them alike) and the median step time is reported.

    python benchmarks/bench_regularizers.py                  # ResNet-18, CPU
    python benchmarks/bench_regularizers.py --device cuda --steps 30

Targets: ratio <= 1.15 for similarity, rsa, cka, dcca, spectral; <= 1.3 for cotraining.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from neuroreg.models.backbones import ResNet18, SmallResNet
from neuroreg.models.classifier import RegularizedClassifier
from neuroreg.regularizers import (
    CKARegularizer,
    CotrainingRegularizer,
    DCCARegularizer,
    RSARegularizer,
    SimilarityRegularizer,
    SpectralRegularizer,
)

TARGETS = {"similarity": 1.15, "rsa": 1.15, "cka": 1.15, "dcca": 1.15, "spectral": 1.15, "cotraining": 1.3}


def configurations() -> dict:
    """name -> factory of the regularizer dict (layers as in the experiment configs)."""
    return {
        "plain": dict,
        "similarity": lambda: {"r": SimilarityRegularizer(["layer1", "layer2"])},
        "rsa": lambda: {"r": RSARegularizer(["layer2"])},
        "cka": lambda: {"r": CKARegularizer(["layer3"])},
        "dcca": lambda: {"r": DCCARegularizer(["layer2"], dim=10)},
        "spectral": lambda: {"r": SpectralRegularizer(["layer3"], tau=5)},
        "cotraining": lambda: {"r": CotrainingRegularizer(["layer2"])},
    }


def make_model(backbone: str, regs: dict, neurons: int, device: str) -> RegularizedClassifier:
    torch.manual_seed(0)
    net = ResNet18(3) if backbone == "resnet18" else SmallResNet(3, [32, 64, 128, 256])
    model = RegularizedClassifier(net, num_neurons={"t": neurons}, image_size=32, regularizers=regs,
                                  mean=[0.5] * 3, std=[0.25] * 3, optimizer=lambda p: torch.optim.SGD(p, lr=0.01))
    model.log = lambda *a, **k: None  # no trainer: time the step itself
    return model.to(device).train()


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", choices=["resnet18", "small"], default="resnet18")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--neurons", type=int, default=300)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    g = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.rand(args.batch_size, 3, 32, 32, generator=g),
        "label": torch.randint(0, 10, (args.batch_size,), generator=g),
        "targets": {"t": torch.rand(args.batch_size, args.neurons, generator=g) * 3},
    }
    batch = {k: ({kk: vv.to(args.device) for kk, vv in v.items()} if isinstance(v, dict) else v.to(args.device)) for k, v in batch.items()}
    models = {name: make_model(args.backbone, make(), args.neurons, args.device) for name, make in configurations().items()}
    optims = {name: m.configure_optimizers() for name, m in models.items()}
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    def step(name: str) -> float:
        sync()
        t0 = time.perf_counter()
        optims[name].zero_grad(set_to_none=True)
        models[name].training_step(batch, 0).backward()
        optims[name].step()
        sync()
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {name: [] for name in models}
    names = list(models)
    for i in range(args.warmup + args.steps):
        for name in names[i % len(names) :] + names[: i % len(names)]:  # rotate: no position bias
            t = step(name)
            if i >= args.warmup:
                times[name].append(t)
    median = {name: statistics.median(ts) for name, ts in times.items()}
    ratios = {name: median[name] / median["plain"] for name in models}
    print(f"backbone={args.backbone} batch={args.batch_size} neurons={args.neurons} device={args.device} "
          f"threads={torch.get_num_threads()} steps={args.steps} (median)")
    print(f"| {'regularizer':<11} | {'step (ms)':>9} | {'ratio':>5} | {'target':>6} |")
    print(f"|{'-' * 13}|{'-' * 11}|{'-' * 7}|{'-' * 8}|")
    for name in models:
        target = f"<= {TARGETS[name]}" if name in TARGETS else ""
        print(f"| {name:<11} | {1000 * median[name]:9.1f} | {ratios[name]:5.3f} | {target:>6} |")
    return ratios


if __name__ == "__main__":
    main()
