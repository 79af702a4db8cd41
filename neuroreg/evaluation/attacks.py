"""Gradient-based adversarial attacks (white box, untargeted).

The threat model: images ``x`` in [0, 1] with labels ``y``; an attack searches a
perturbation ``delta`` in the norm ball ``||delta||_p <= eps`` (per example) such that
``x + delta`` stays in [0, 1] and maximises the cross-entropy of ``model(x + delta)``
against ``y``. Supported norms: ``"linf"`` (p = inf) and ``"l2"`` (p = 2, over all of
``C * H * W`` pixels of one image).

The model is called as a function ``model(images) -> logits [batch, classes]`` on images
in [0, 1]; normalisation is its own business. **The caller puts the model in eval mode**
(dropout off, batch-norm running statistics) before attacking; these functions neither
check nor change the mode, and never touch parameter gradients (they differentiate with
respect to the input only).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

NORMS = ("linf", "l2")


def _per_example_l2(t: Tensor) -> Tensor:
    """L2 norm of each example of ``t [batch, ...]``, shaped ``[batch, 1, ..., 1]`` for broadcasting."""
    return t.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (t.dim() - 1)))


def _random_start(x: Tensor, eps: float, norm: str, generator: torch.Generator | None) -> Tensor:
    """Uniform sample from the ``norm`` ball of radius ``eps`` (per example), shape of ``x``.

    Sampled on the generator's device (CPU by default) and moved to ``x.device`` so a CPU
    generator seeds CPU and GPU runs alike.
    """
    device = generator.device if generator is not None else x.device
    if norm == "linf":
        u = torch.rand(x.shape, generator=generator, device=device, dtype=x.dtype)
        return ((2 * u - 1) * eps).to(x.device)
    # l2: direction uniform on the sphere, radius eps * U^(1/d) (uniform in the ball)
    d = x[0].numel()
    direction = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
    direction = direction / _per_example_l2(direction).clamp_min(1e-12)
    radius = torch.rand((x.shape[0],), generator=generator, device=device, dtype=x.dtype).pow(1.0 / d)
    return (direction * eps * radius.view(-1, *([1] * (x.dim() - 1)))).to(x.device)


def _ascent_step(grad: Tensor, step_size: float, norm: str) -> Tensor:
    """Steepest-ascent step of length ``step_size`` in the ``norm`` geometry.

    linf: ``step_size * sign(grad)``; l2: ``step_size * grad / ||grad||_2`` (0 where the
    gradient vanishes).
    """
    if norm == "linf":
        return step_size * grad.sign()
    return step_size * grad / _per_example_l2(grad).clamp_min(1e-12)


def _project(delta: Tensor, x: Tensor, eps: float, norm: str) -> Tensor:
    """Project ``delta`` onto the ``norm`` ball of radius ``eps``, then onto the box [0, 1] - x.

    The box step only shrinks coordinates towards 0, so the result lies in both sets.
    """
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        scale = (eps / _per_example_l2(delta).clamp_min(1e-12)).clamp(max=1.0)
        delta = delta * scale
    return (x + delta).clamp(0.0, 1.0) - x


def _validate(
    x: Tensor, y: Tensor, eps: float, steps: int, step_size: float | None, norm: str, restarts: int
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


def _loss_and_wrong(logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Per-example cross-entropy ``[batch]`` and misclassification flags ``[batch]`` (bool)."""
    if logits.dim() != 2 or logits.shape[0] != y.shape[0]:
        raise ValueError(
            f"pgd: model must return logits [batch, classes] with batch = {y.shape[0]}, "
            f"found shape {tuple(logits.shape)}"
        )
    return F.cross_entropy(logits.float(), y, reduction="none"), logits.argmax(dim=1) != y


def pgd(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    eps: float,
    steps: int = 10,
    step_size: float | None = None,
    norm: str = "linf",
    random_start: bool = True,
    restarts: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Projected gradient descent attack (Madry et al. 2018), untargeted, L∞ or L2.

    Starting from ``delta_0`` (uniform in the ball if ``random_start``, else 0), iterate

    .. math::

        \\delta_{k+1} = \\Pi\\big(\\delta_k + \\alpha\\, s(\\nabla_\\delta
            \\mathrm{CE}(f(x + \\delta_k), y))\\big)

    with ``s(g) = sign(g)`` for L∞ and ``s(g) = g / ||g||_2`` for L2, and ``Π`` the
    projection onto ``{||delta|| <= eps} ∩ {0 <= x + delta <= 1}``. Every iterate
    ``delta_0 … delta_steps`` of every restart is a candidate; per example the attack
    returns the candidate ranked highest by (misclassified, cross-entropy), i.e. a
    misclassified one if any was found, else the one of highest loss.

    Args:
        model: ``images [batch, C, H, W] in [0, 1] -> logits [batch, classes]``, already in
            eval mode (the caller's job; not checked).
        x: clean images ``[batch, C, H, W]`` in [0, 1].
        y: true labels ``[batch]`` (int64).
        eps: radius of the ball; L∞ in [0, 1], L2 in [0, sqrt(C*H*W)]. ``0`` returns a copy of
            ``x`` without calling the model.
        steps: number of gradient steps (>= 0; 0 evaluates the start point only).
        step_size: ``alpha``; default ``2.5 * eps / steps``.
        norm: ``"linf"`` or ``"l2"``.
        random_start: start from a uniform sample of the ball instead of ``x``.
        restarts: independent runs (>= 1); only meaningful with ``random_start`` (without it
            every run is identical and only one is made).
        generator: randomness for the start points (CPU or ``x``'s device); ``None`` uses
            torch's global generator.

    Returns:
        Adversarial images ``[batch, C, H, W]``, detached, in [0, 1], with
        ``||x_adv - x|| <= eps`` per example (up to float rounding).

    Raises:
        ValueError: on an unknown norm, ``eps`` outside its range, negative ``steps``,
            ``restarts < 1``, a non-positive ``step_size``, ``x`` outside [0, 1], or
            shapes of ``x`` / ``y`` / logits that do not match.

    Works inside ``torch.inference_mode()`` / ``torch.no_grad()`` (as under Lightning's
    validation and test loops): the inputs are cloned into normal tensors and gradients
    are enabled locally.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)).eval()
        >>> x, y = torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 2, 0])
        >>> x_adv = pgd(model, x, y, eps=8 / 255, generator=torch.Generator().manual_seed(0))
    """
    eps = float(eps)
    _validate(x, y, eps, steps, step_size, norm, restarts)
    with torch.inference_mode(False), torch.enable_grad():
        x = x.detach().clone()
        y = y.detach().clone().long()
        if eps == 0 or x.shape[0] == 0:
            return x
        alpha = float(step_size) if step_size is not None else 2.5 * eps / max(steps, 1)
        n_runs = restarts if random_start else 1
        shape = (-1,) + (1,) * (x.dim() - 1)

        best = x.clone()
        best_loss = torch.full((x.shape[0],), -math.inf, device=x.device)
        best_wrong = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)

        def consider(candidate: Tensor, loss: Tensor, wrong: Tensor) -> None:
            better = (wrong & ~best_wrong) | ((wrong == best_wrong) & (loss > best_loss))
            best.copy_(torch.where(better.view(shape), candidate, best))
            best_loss.copy_(torch.where(better, loss, best_loss))
            best_wrong.copy_(best_wrong | wrong)

        for _ in range(n_runs):
            if random_start:
                delta = _project(_random_start(x, eps, norm, generator), x, eps, norm)
            else:
                delta = torch.zeros_like(x)
            for k in range(steps + 1):
                delta.requires_grad_(True)
                loss, wrong = _loss_and_wrong(model(x + delta), y)
                consider((x + delta).detach(), loss.detach(), wrong)
                if k == steps:
                    break
                (grad,) = torch.autograd.grad(loss.sum(), delta)
                delta = _project(delta.detach() + _ascent_step(grad, alpha, norm), x, eps, norm)
        return best


def fgsm(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    eps: float,
    norm: str = "linf",
) -> Tensor:
    """Fast gradient (sign) method (Goodfellow et al. 2015): one full-size step from ``x``.

    .. math::

        x_{adv} = \\operatorname{clip}_{[0,1]}\\big(x + \\epsilon\\, s(\\nabla_x
            \\mathrm{CE}(f(x), y))\\big)

    with ``s = sign`` (L∞) or ``g / ||g||_2`` (L2) — the special case ``steps=1``,
    ``step_size=eps``, no random start of :func:`pgd` (which keeps ``x`` itself for an
    example whose loss the step does not increase).

    Args:
        model: ``images [batch, C, H, W] in [0, 1] -> logits [batch, classes]``, in eval mode.
        x: clean images ``[batch, C, H, W]`` in [0, 1].
        y: labels ``[batch]``.
        eps: step length / ball radius (see :func:`pgd` for ranges).
        norm: ``"linf"`` or ``"l2"``.

    Returns:
        Adversarial images ``[batch, C, H, W]`` in [0, 1] with ``||x_adv - x|| <= eps``.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)).eval()
        >>> x_adv = fgsm(model, torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 2, 0]), eps=0.03)
    """
    return pgd(model, x, y, eps, steps=1, step_size=eps, norm=norm, random_start=False, restarts=1)
