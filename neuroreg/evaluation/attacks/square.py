"""The Square score-based black-box attack (Andriushchenko et al. 2020), a gradient-masking check."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from neuroreg.evaluation.attacks.base import autoattack_norm, validate_attack


def square_attack(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    eps: float,
    norm: str = "linf",
    n_queries: int = 1000,
    seed: int = 0,
) -> Tensor:
    """Square Attack (Andriushchenko et al. 2020), a score-based black-box attack, via ``pyautoattack``.

    Uses only the model's outputs (no gradients): a check for gradient masking — it must
    not beat a white-box attack at the same ``eps``. The global torch RNG is left as it was.

    Args:
        model: ``images in [0, 1] -> logits``, eval mode.
        x: images ``[B, C, H, W]`` in [0, 1]; y: labels ``[B]``.
        eps: radius; norm: ``"linf"`` or ``"l2"``.
        n_queries: query budget per example.
        seed: the attack's seed.

    Returns:
        Adversarial images ``[B, C, H, W]``.
    """
    from pyautoattack.square import SquareAttack

    eps = float(eps)
    validate_attack(x, y, eps, 1, None, norm, 1)
    x = x.detach().clone()
    y = y.detach().clone().long()
    if eps == 0 or x.shape[0] == 0:
        return x
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []), torch.no_grad():
        attack = SquareAttack(
            model, norm=autoattack_norm(norm), n_queries=int(n_queries), eps=eps, p_init=0.8, n_restarts=1,
            seed=seed, verbose=False, device=x.device, resc_schedule=False,
        )
        return attack.perturb(x, y).detach().clamp(0, 1)
