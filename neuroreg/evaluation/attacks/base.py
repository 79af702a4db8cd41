"""What every attack shares: the norms, input validation, the loss and the EOT average.

The threat model is described in :mod:`neuroreg.evaluation.attacks`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

NORMS = ("linf", "l2")


def per_example_l2(t: Tensor) -> Tensor:
    """L2 norm of each example of ``t [batch, ...]``, shaped ``[batch, 1, ..., 1]`` for broadcasting."""
    return t.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (t.dim() - 1)))


SCHEDULES = ("constant", "cosine")


def _check_eot(eot_samples: int) -> None:
    if isinstance(eot_samples, bool) or not isinstance(eot_samples, int) or eot_samples < 1:
        raise ValueError(f"pgd: eot_samples must be an integer >= 1, found {eot_samples!r}")


def validate_attack(
    x: Tensor, y: Tensor, eps: float, steps: int, step_size: float | None, norm: str, restarts: int,
    eot_samples: int = 1, schedule: str = "constant",
) -> None:
    if norm not in NORMS:
        raise ValueError(f"pgd: norm must be one of {NORMS}, found {norm!r}")
    if not torch.is_floating_point(x) or x.dim() < 2:
        raise ValueError(
            f"pgd: x must be floating-point images [batch, channels, height, width], "
            f"found dtype {x.dtype} with shape {tuple(x.shape)}"
        )
    if y.dim() != 1 or y.shape[0] != x.shape[0] or y.dtype not in (torch.int64, torch.int32):
        raise ValueError(
            f"pgd: y must be integer labels [batch] with batch = x.shape[0] = {x.shape[0]}, "
            f"found dtype {y.dtype} with shape {tuple(y.shape)}"
        )
    if x.numel() > 0 and (x.min() < 0 or x.max() > 1):
        raise ValueError(
            f"pgd: x must lie in [0, 1], found values in [{x.min().item():.4g}, {x.max().item():.4g}]"
        )
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"pgd: eps must be a finite number >= 0, found {eps}")
    if norm == "linf" and eps > 1:
        raise ValueError(f"pgd: eps for norm='linf' must be in [0, 1] (the image range), found {eps}")
    if norm == "l2":
        diameter = math.sqrt(x[0].numel()) if x.shape[0] > 0 else math.inf
        if eps > diameter:
            raise ValueError(
                f"pgd: eps for norm='l2' must be in [0, sqrt(C*H*W)] = [0, {diameter:.4g}] "
                f"(the diameter of the image cube), found {eps}"
            )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"pgd: steps must be an integer >= 0, found {steps!r}")
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 1:
        raise ValueError(f"pgd: restarts must be an integer >= 1, found {restarts!r}")
    if step_size is not None and (not math.isfinite(step_size) or step_size <= 0):
        raise ValueError(f"pgd: step_size must be a finite number > 0 or None, found {step_size}")
    _check_eot(eot_samples)
    if schedule not in SCHEDULES:
        raise ValueError(f"pgd: schedule must be one of {SCHEDULES}, found {schedule!r}")


def _loss_and_wrong(logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Per-example cross-entropy ``[batch]`` and misclassification flags ``[batch]`` (bool)."""
    if logits.dim() != 2 or logits.shape[0] != y.shape[0]:
        raise ValueError(
            f"pgd: model must return logits [batch, classes] with batch = {y.shape[0]}, "
            f"found shape {tuple(logits.shape)}"
        )
    return F.cross_entropy(logits.float(), y, reduction="none"), logits.argmax(dim=1) != y


def expected_loss(
    model: Callable[[Tensor], Tensor], x_in: Tensor, y: Tensor, samples: int, need_grad: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Mean CE ``[B]``, misclassified flags ``[B]`` (argmax of mean softmax) and the mean
    input gradient over ``samples`` forward passes (gradients accumulated pass by pass)."""
    loss_sum = torch.zeros(x_in.shape[0], device=x_in.device)
    probs = None
    grad = None
    for _ in range(samples):
        x_s = x_in.detach().requires_grad_(need_grad)
        logits = model(x_s)
        loss, _ = _loss_and_wrong(logits, y)
        if need_grad:
            (g,) = torch.autograd.grad(loss.sum(), x_s)
            grad = g if grad is None else grad + g
        p = logits.detach().float().softmax(dim=1)
        probs = p if probs is None else probs + p
        loss_sum += loss.detach()
    wrong = probs.argmax(dim=1) != y
    return loss_sum / samples, wrong, None if grad is None else grad / samples


def autoattack_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ValueError(f"autoattack: norm must be one of {NORMS}, found {norm!r}")
    return {"linf": "Linf", "l2": "L2"}[norm]
