"""AutoAttack (Croce & Hein 2020) through the ``pyautoattack`` package: the whole ensemble
(:func:`autoattack`) and its APGD members one at a time (:func:`apgd`)."""

from __future__ import annotations

import warnings
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


#: AutoAttack's own strength (``pyautoattack``'s ``standard`` / ``rand`` versions): the floor
#: of every ensemble member from the package (APGD iterations, restarts, target classes of
#: APGD-T, EOT samples of the ``rand`` version)
APGD_STANDARD = {"steps": 100, "restarts": 1, "targets": 9, "eot_samples": 20}

#: the APGD losses: untargeted cross-entropy, untargeted DLR, targeted DLR (APGD-T)
APGD_LOSSES = ("ce", "dlr", "dlr-targeted")
#: fewest classes each loss is defined for (the DLR losses read the 3rd / 4th largest logit)
APGD_MIN_CLASSES = {"ce": 2, "dlr": 3, "dlr-targeted": 4}


def apgd(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    eps: float,
    norm: str = "linf",
    loss: str = "ce",
    steps: int = 100,
    restarts: int = 1,
    targets: int = 9,
    eot_samples: int = 1,
    seed: int = 0,
) -> Tensor:
    """One member of AutoAttack: APGD (Croce & Hein 2020) through ``pyautoattack``.

    Auto-PGD steps with a momentum term and a step size halved at checkpoints where the
    loss stopped rising; ``loss="ce"`` is APGD-CE, ``"dlr"`` APGD-DLR (the difference of
    logits ratio ``-(z_y - max_{i≠y} z_i) / (z_π1 - z_π3)``, invariant to logit scale) and
    ``"dlr-targeted"`` APGD-T (targeted DLR toward each of the ``targets`` most likely
    wrong classes in turn, ``min(targets, C - 1)``). An image already misclassified is
    returned as it is; later restarts / targets only run on the images not yet broken.

    Args:
        model: ``images [B, C, H, W] in [0, 1] -> logits [B, classes]``, in eval mode.
        x: images ``[B, C, H, W]`` in [0, 1]; y: labels ``[B]``.
        eps: radius (L∞ in [0, 1]; L2 in image units).
        norm: ``"linf"`` or ``"l2"``.
        loss: one of :data:`APGD_LOSSES`.
        steps, restarts: iterations and random restarts (AutoAttack: 100, 1).
        targets: target classes of APGD-T (AutoAttack: 9).
        eot_samples: gradient samples per step (expectation over transformation; ``rand``: 20).
        seed: the attack's seed (the global torch RNG is left as it was).

    Returns:
        Adversarial images ``[B, C, H, W]`` in [0, 1], ``||x_adv - x|| <= eps``.

    Raises:
        ValueError: unknown loss, too few classes for it, eps out of range, bad shapes.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4)).eval()
        >>> x = torch.rand(3, 3, 2, 2)
        >>> x_adv = apgd(net, x, torch.tensor([0, 1, 2]), 8 / 255, steps=5)
        >>> bool((x_adv - x).abs().max() <= 8 / 255 + 1e-6)
        True
    """
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted

    eps = float(eps)
    validate_attack(x, y, eps, steps, None, norm, restarts, eot_samples)
    if loss not in APGD_LOSSES:
        raise ValueError(f"apgd: loss must be one of {APGD_LOSSES}, found {loss!r}")
    x = x.detach().clone()
    y = y.detach().clone().long()
    if eps == 0 or x.shape[0] == 0:
        return x
    with torch.no_grad():
        n_classes = int(model(x[:1]).shape[1])
    if n_classes < APGD_MIN_CLASSES[loss]:
        raise ValueError(f"apgd: loss {loss!r} needs >= {APGD_MIN_CLASSES[loss]} classes, found {n_classes}")
    kwargs = {"norm": autoattack_norm(norm), "eps": eps, "n_iter": int(steps), "n_restarts": int(restarts),
              "eot_iter": int(eot_samples), "seed": seed, "device": x.device, "verbose": False}
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []), \
            torch.inference_mode(False), torch.enable_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*zero gradient.*")
        if loss == "dlr-targeted":
            attack = APGDAttack_targeted(model, n_target_classes=max(1, min(int(targets), n_classes - 1)), **kwargs)
        else:
            attack = APGDAttack(model, loss=loss, **kwargs)
        adv = attack.perturb(x, y)
    return adv.detach().to(x.dtype).clamp(0, 1)
