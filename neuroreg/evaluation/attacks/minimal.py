"""Minimal adversarial perturbation per image: binary search over PGD radii."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from neuroreg.evaluation.attacks.base import expected_loss, validate_attack
from neuroreg.evaluation.attacks.gradient import pgd_core


def minimal_epsilon(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    eps_max: float,
    norm: str = "l2",
    steps: int = 20,
    search_steps: int = 10,
    restarts: int = 1,
    random_start: bool = False,
    generator: torch.Generator | None = None,
    eot_samples: int = 1,
) -> Tensor:
    """Per image, the smallest radius at which PGD flips the prediction (binary search).

    For each example, ``lo = 0`` and ``hi = eps_max``; PGD is run at ``mid = (lo + hi) / 2``
    (step size ``2.5 mid / steps``) and ``hi ← mid`` if it finds a misclassified point,
    else ``lo ← mid``; after ``search_steps`` halvings ``hi`` is returned: an upper bound on
    the minimal adversarial perturbation size within ``eps_max · 2^-search_steps`` of the
    radius at which *this attack* starts to succeed (the measure Li et al. 2019 report).
    Examples misclassified without perturbation get 0; examples PGD cannot flip even at
    ``eps_max`` get ``inf``.

    Args:
        model: ``images [B, C, H, W] in [0, 1] -> logits [B, classes]``, in eval mode.
        x: clean images ``[B, C, H, W]`` in [0, 1]; y: labels ``[B]``.
        eps_max: largest radius searched (see :func:`pgd` for the range per norm).
        norm: ``"linf"`` or ``"l2"``.
        steps, restarts, random_start, generator, eot_samples: passed to PGD.
        search_steps: halvings of the interval (>= 1).

    Returns:
        ``[B]`` float tensor of radii in ``{0} ∪ (0, eps_max] ∪ {inf}``.

    Raises:
        ValueError: as :func:`pgd`, or ``search_steps < 1``.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)).eval()
        >>> r = minimal_epsilon(model, torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 2, 0]), eps_max=1.0)
        >>> r.shape
        torch.Size([4])
    """
    eps_max = float(eps_max)
    validate_attack(x, y, eps_max, steps, None, norm, restarts, eot_samples)
    if isinstance(search_steps, bool) or not isinstance(search_steps, int) or search_steps < 1:
        raise ValueError(f"minimal_epsilon: search_steps must be an integer >= 1, found {search_steps!r}")
    with torch.inference_mode(False), torch.enable_grad():
        x = x.detach().clone()
        y = y.detach().clone().long()
        n = x.shape[0]
        out = torch.zeros(n, device=x.device)
        if n == 0 or eps_max == 0:
            return out

        def flips(eps: Tensor, idx: Tensor) -> Tensor:
            adv = pgd_core(
                model, x[idx], y[idx], eps.to(x.dtype), steps, None, norm, random_start, restarts,
                generator, eot_samples,
            )
            with torch.no_grad():
                return expected_loss(model, adv, y[idx], eot_samples, need_grad=False)[1]

        with torch.no_grad():
            clean_wrong = expected_loss(model, x, y, eot_samples, need_grad=False)[1]
        todo = torch.nonzero(~clean_wrong).flatten()
        if todo.numel() == 0:
            return out
        ok = flips(torch.full((todo.numel(),), eps_max, device=x.device), todo)
        out[todo[~ok]] = math.inf
        todo = todo[ok]
        lo = torch.zeros(todo.numel(), device=x.device)
        hi = torch.full((todo.numel(),), eps_max, device=x.device)
        for _ in range(search_steps):
            if todo.numel() == 0:
                break
            mid = (lo + hi) / 2
            hit = flips(mid, todo)
            hi = torch.where(hit, mid, hi)
            lo = torch.where(hit, lo, mid)
        out[todo] = hi
        return out
