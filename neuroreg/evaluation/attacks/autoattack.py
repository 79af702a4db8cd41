"""AutoAttack (Croce & Hein 2020) through the ``pyautoattack`` package."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from neuroreg.evaluation.attacks.base import autoattack_norm, validate_attack


def autoattack(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    eps: float,
    norm: str = "linf",
    version: str = "standard",
    n_classes: int | None = None,
    seed: int = 0,
    batch_size: int = 250,
    eot_samples: int = 20,
) -> Tensor:
    """AutoAttack (Croce & Hein 2020) through the ``pyautoattack`` package.

    ``version="standard"``: APGD-CE, APGD-T, FAB-T, Square (5000 queries) — the RobustBench
    protocol for deterministic models. ``version="rand"``: APGD-CE and APGD-DLR with
    expectation over transformation (``eot_samples`` gradient samples per step) — for
    stochastic models. With fewer than 10 classes the targeted attacks use ``C - 1``
    target classes; with fewer than 4 classes (no targeted DLR loss) ``standard`` runs
    APGD-CE, FAB-T and Square, and with 2 classes ``rand`` runs APGD-CE only.

    The global torch RNG is left as it was (AutoAttack reseeds it internally).

    Args:
        model: ``images in [0, 1] -> logits``, in eval mode (an ``nn.Module`` or callable).
        x: images ``[B, C, H, W]`` in [0, 1]; y: labels ``[B]``.
        eps: radius (L∞ in [0, 1]).
        norm: ``"linf"`` or ``"l2"``.
        version: ``"standard"`` or ``"rand"``.
        n_classes: number of classes (default: from one forward pass).
        seed: AutoAttack's seed.
        batch_size: images per AutoAttack batch.
        eot_samples: EOT iterations of the ``rand`` version.

    Returns:
        Adversarial images ``[B, C, H, W]`` in [0, 1], ``||x_adv - x|| <= eps``.

    Raises:
        ValueError: unknown norm or version, eps out of range, bad shapes.
    """
    from pyautoattack import AutoAttack

    eps = float(eps)
    validate_attack(x, y, eps, 1, None, norm, 1, max(1, int(eot_samples)))
    if version not in ("standard", "rand"):
        raise ValueError(f"autoattack: version must be 'standard' or 'rand', found {version!r}")
    x = x.detach().clone()
    y = y.detach().clone().long()
    if eps == 0 or x.shape[0] == 0:
        return x
    if n_classes is None:
        with torch.no_grad():
            n_classes = int(model(x[:1]).shape[1])
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []), torch.inference_mode(False):
        if n_classes < 4 and version == "standard":  # the targeted DLR loss needs >= 4 classes
            aa = AutoAttack(model, norm=autoattack_norm(norm), eps=eps, version="custom", seed=seed, device=x.device,
                            attacks=["apgd-ce", "fab-t", "square"])
            aa.square.n_queries = 5000
        elif n_classes < 3 and version == "rand":  # the DLR loss needs >= 3 classes
            aa = AutoAttack(model, norm=autoattack_norm(norm), eps=eps, version="custom", seed=seed, device=x.device,
                            attacks=["apgd-ce"])
        else:
            aa = AutoAttack(model, norm=autoattack_norm(norm), eps=eps, version=version, seed=seed, device=x.device)
        aa.verbose = False
        targets = max(1, min(9, n_classes - 1))
        aa.apgd_targeted.n_target_classes = targets
        aa.fab.n_target_classes = targets
        if version == "rand":
            aa.apgd.eot_iter = int(eot_samples)
        return aa.run_standard_evaluation(x, y, batch_size=batch_size)[0].detach().clamp(0, 1)
