"""Gradient-based white-box attacks: PGD (L∞ / L2, restarts, EOT, step schedules) and FGSM."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from neuroreg.evaluation.attacks.base import expected_loss, per_example_l2, validate_attack


def _random_start(x: Tensor, eps: Tensor, norm: str, generator: torch.Generator | None) -> Tensor:
    """Uniform sample from the ``norm`` ball of radius ``eps [batch, 1, ..., 1]`` (per example), shape of ``x``.

    Sampled on the generator's device (CPU by default) and moved to ``x.device`` so a CPU
    generator seeds CPU and GPU runs alike.
    """
    device = generator.device if generator is not None else x.device
    if norm == "linf":
        u = torch.rand(x.shape, generator=generator, device=device, dtype=x.dtype)
        return (2 * u - 1).to(x.device) * eps
    # l2: direction uniform on the sphere, radius eps * U^(1/d) (uniform in the ball)
    d = x[0].numel()
    direction = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
    direction = direction / per_example_l2(direction).clamp_min(1e-12)
    radius = torch.rand((x.shape[0],), generator=generator, device=device, dtype=x.dtype).pow(1.0 / d)
    return (direction * radius.view(-1, *([1] * (x.dim() - 1)))).to(x.device) * eps


def _ascent_step(grad: Tensor, step_size: Tensor, norm: str) -> Tensor:
    """Steepest-ascent step of length ``step_size`` in the ``norm`` geometry.

    linf: ``step_size * sign(grad)``; l2: ``step_size * grad / ||grad||_2`` (0 where the
    gradient vanishes).
    """
    if norm == "linf":
        return step_size * grad.sign()
    return step_size * grad / per_example_l2(grad).clamp_min(1e-12)


def _project(delta: Tensor, x: Tensor, eps: Tensor, norm: str) -> Tensor:
    """Project ``delta`` onto the ``norm`` ball of radius ``eps [batch, 1, ..., 1]``, then onto the box [0, 1] - x.

    The box step only shrinks coordinates towards 0, so the result lies in both sets.
    """
    if norm == "linf":
        delta = torch.maximum(torch.minimum(delta, eps), -eps)
    else:
        scale = (eps / per_example_l2(delta).clamp_min(1e-12)).clamp(max=1.0)
        delta = delta * scale
    return (x + delta).clamp(0.0, 1.0) - x


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
    eot_samples: int = 1,
    schedule: str = "constant",
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

    **Stochastic models** (e.g. a VOneBlock with noise in eval mode): with
    ``eot_samples = k > 1`` the gradient is the expectation over transformation (Athalye
    et al. 2018), ``(1/k) Σ_s ∇_δ CE(f_s(x + δ), y)`` over k independent forward passes,
    the loss is the mean over those passes and "misclassified" means the argmax of the
    mean softmax differs from ``y``.

    Step size schedule: ``constant`` (``α`` every step) or ``cosine``
    (``α_k = α (1 + cos(π k / steps)) / 2``, large steps first, fine ones last).

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
        eot_samples: forward passes averaged per step (1 for a deterministic model).
        schedule: ``"constant"`` or ``"cosine"`` step sizes.

    Returns:
        Adversarial images ``[batch, C, H, W]``, detached, in [0, 1], with
        ``||x_adv - x|| <= eps`` per example (up to float rounding).

    Raises:
        ValueError: on an unknown norm, ``eps`` outside its range, negative ``steps``,
            ``restarts < 1``, a non-positive ``step_size``, ``eot_samples < 1``, an unknown schedule, ``x`` outside [0, 1], or
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
    validate_attack(x, y, eps, steps, step_size, norm, restarts, eot_samples, schedule)
    with torch.inference_mode(False), torch.enable_grad():
        x = x.detach().clone()
        y = y.detach().clone().long()
        if eps == 0 or x.shape[0] == 0:
            return x
        eps_t = torch.full((x.shape[0],), eps, device=x.device, dtype=x.dtype)
        alpha = None if step_size is None else torch.full_like(eps_t, float(step_size))
        return pgd_core(model, x, y, eps_t, steps, alpha, norm, random_start, restarts, generator, eot_samples, schedule)


def pgd_core(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    eps: Tensor,
    steps: int,
    alpha: Tensor | None,
    norm: str,
    random_start: bool,
    restarts: int,
    generator: torch.Generator | None,
    eot_samples: int = 1,
    schedule: str = "constant",
) -> Tensor:
    """PGD with a per-example radius ``eps [batch]`` (validated inputs, grad enabled)."""
    shape = (-1,) + (1,) * (x.dim() - 1)
    eps = eps.view(shape)
    alpha = (2.5 * eps / max(steps, 1)) if alpha is None else alpha.view(shape)
    n_runs = restarts if random_start else 1

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
            loss, wrong, grad = expected_loss(model, x + delta, y, eot_samples, need_grad=k < steps)
            consider((x + delta).detach(), loss, wrong)
            if k == steps:
                break
            factor = 1.0 if schedule == "constant" else 0.5 * (1 + math.cos(math.pi * k / steps))
            delta = _project(delta.detach() + _ascent_step(grad, alpha * factor, norm), x, eps, norm)
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
    step = float(eps) if float(eps) > 0 else None  # eps = 0 returns x unchanged
    return pgd(model, x, y, eps, steps=1, step_size=step, norm=norm, random_start=False, restarts=1)
