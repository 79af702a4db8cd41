"""Adversarial attacks (untargeted): gradient-based (white box) and decision-based.

The threat model: images ``x`` in [0, 1] with labels ``y``; an attack searches a
perturbation ``delta`` in the norm ball ``||delta||_p <= eps`` (per example) such that
``x + delta`` stays in [0, 1] and maximises the cross-entropy of ``model(x + delta)``
against ``y``. Supported norms: ``"linf"`` (p = inf) and ``"l2"`` (p = 2, over all of
``C * H * W`` pixels of one image).

The model is called as a function ``model(images) -> logits [batch, classes]`` on images
in [0, 1]; normalisation is its own business. **The caller puts the model in eval mode**
(dropout off, batch-norm running statistics) before attacking; these functions neither
check nor change the mode, and never touch parameter gradients (they differentiate with
respect to the input only). :func:`hop_skip_jump` sees only predicted labels and runs
without gradients.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

NORMS = ("linf", "l2")


def _per_example_l2(t: Tensor) -> Tensor:
    """L2 norm of each example of ``t [batch, ...]``, shaped ``[batch, 1, ..., 1]`` for broadcasting."""
    return t.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (t.dim() - 1)))


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
    direction = direction / _per_example_l2(direction).clamp_min(1e-12)
    radius = torch.rand((x.shape[0],), generator=generator, device=device, dtype=x.dtype).pow(1.0 / d)
    return (direction * radius.view(-1, *([1] * (x.dim() - 1)))).to(x.device) * eps


def _ascent_step(grad: Tensor, step_size: Tensor, norm: str) -> Tensor:
    """Steepest-ascent step of length ``step_size`` in the ``norm`` geometry.

    linf: ``step_size * sign(grad)``; l2: ``step_size * grad / ||grad||_2`` (0 where the
    gradient vanishes).
    """
    if norm == "linf":
        return step_size * grad.sign()
    return step_size * grad / _per_example_l2(grad).clamp_min(1e-12)


def _project(delta: Tensor, x: Tensor, eps: Tensor, norm: str) -> Tensor:
    """Project ``delta`` onto the ``norm`` ball of radius ``eps [batch, 1, ..., 1]``, then onto the box [0, 1] - x.

    The box step only shrinks coordinates towards 0, so the result lies in both sets.
    """
    if norm == "linf":
        delta = torch.maximum(torch.minimum(delta, eps), -eps)
    else:
        scale = (eps / _per_example_l2(delta).clamp_min(1e-12)).clamp(max=1.0)
        delta = delta * scale
    return (x + delta).clamp(0.0, 1.0) - x


SCHEDULES = ("constant", "cosine")


def _check_eot(eot_samples: int) -> None:
    if isinstance(eot_samples, bool) or not isinstance(eot_samples, int) or eot_samples < 1:
        raise ValueError(f"pgd: eot_samples must be an integer >= 1, found {eot_samples!r}")


def _validate(
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
    _validate(x, y, eps, steps, step_size, norm, restarts, eot_samples, schedule)
    with torch.inference_mode(False), torch.enable_grad():
        x = x.detach().clone()
        y = y.detach().clone().long()
        if eps == 0 or x.shape[0] == 0:
            return x
        eps_t = torch.full((x.shape[0],), eps, device=x.device, dtype=x.dtype)
        alpha = None if step_size is None else torch.full_like(eps_t, float(step_size))
        return _pgd_core(model, x, y, eps_t, steps, alpha, norm, random_start, restarts, generator, eot_samples, schedule)


def _expected_loss(
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


def _pgd_core(
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
            loss, wrong, grad = _expected_loss(model, x + delta, y, eot_samples, need_grad=k < steps)
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
    _validate(x, y, eps_max, steps, None, norm, restarts, eot_samples)
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
            adv = _pgd_core(
                model, x[idx], y[idx], eps.to(x.dtype), steps, None, norm, random_start, restarts,
                generator, eot_samples,
            )
            with torch.no_grad():
                return _expected_loss(model, adv, y[idx], eot_samples, need_grad=False)[1]

        with torch.no_grad():
            clean_wrong = _expected_loss(model, x, y, eot_samples, need_grad=False)[1]
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


def _aa_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ValueError(f"autoattack: norm must be one of {NORMS}, found {norm!r}")
    return {"linf": "Linf", "l2": "L2"}[norm]


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
    _validate(x, y, eps, 1, None, norm, 1, max(1, int(eot_samples)))
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
            aa = AutoAttack(model, norm=_aa_norm(norm), eps=eps, version="custom", seed=seed, device=x.device,
                            attacks=["apgd-ce", "fab-t", "square"])
            aa.square.n_queries = 5000
        elif n_classes < 3 and version == "rand":  # the DLR loss needs >= 3 classes
            aa = AutoAttack(model, norm=_aa_norm(norm), eps=eps, version="custom", seed=seed, device=x.device,
                            attacks=["apgd-ce"])
        else:
            aa = AutoAttack(model, norm=_aa_norm(norm), eps=eps, version=version, seed=seed, device=x.device)
        aa.verbose = False
        targets = max(1, min(9, n_classes - 1))
        aa.apgd_targeted.n_target_classes = targets
        aa.fab.n_target_classes = targets
        if version == "rand":
            aa.apgd.eot_iter = int(eot_samples)
        return aa.run_standard_evaluation(x, y, batch_size=batch_size)[0].detach().clamp(0, 1)


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
    _validate(x, y, eps, 1, None, norm, 1)
    x = x.detach().clone()
    y = y.detach().clone().long()
    if eps == 0 or x.shape[0] == 0:
        return x
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []), torch.no_grad():
        attack = SquareAttack(
            model, norm=_aa_norm(norm), n_queries=int(n_queries), eps=eps, p_init=0.8, n_restarts=1,
            seed=seed, verbose=False, device=x.device, resc_schedule=False,
        )
        return attack.perturb(x, y).detach().clamp(0, 1)


class DecisionResult(NamedTuple):
    """Outcome of :func:`hop_skip_jump`, one entry per example.

    Attributes:
        adversarial: the closest misclassified images found ``[batch, C, H, W]`` in [0, 1]
            (the clean image where none was found or it is misclassified already).
        distance: their L2 distance to the clean images ``[batch]``: ``0`` for an example
            misclassified without perturbation, ``inf`` where no misclassified start point
            was found.
        queries: label queries spent per example ``[batch]`` (int64, ``<= max_queries``).
    """

    adversarial: Tensor
    distance: Tensor
    queries: Tensor


def _check_positive_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"hop_skip_jump: {name} must be an integer >= {minimum}, found {value!r}")
    return value


def hop_skip_jump(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    max_queries: int = 1000,
    *,
    init_samples: int = 100,
    max_samples: int = 10_000,
    start_draws: int = 20,
    step_halvings: int = 25,
    generator: torch.Generator | None = None,
    eot_samples: int = 1,
    batch_size: int = 1024,
) -> DecisionResult:
    """HopSkipJump (Chen, Jordan & Wainwright 2020), a decision-based L2 attack, batched.

    Decision-based attacks see only the predicted label — Brendel et al. (2018)'s Boundary
    Attack, used by Li et al. (2019) to evaluate their brain-regularised networks, is the
    first of them; HopSkipJump reaches smaller distances with the same number of queries.
    With ``φ(z) = [argmax f(z) ≠ y]`` (one *query*) and ``θ = d^{-3/2}`` (``d = C·H·W``):

    1. **start**: the nearest (L2) image of the batch that the model labels differently
       from ``y``, else the first of ``start_draws`` uniform noise images with ``φ = 1``;
       a bisection on the segment from ``x`` to it (to relative precision ``θ``) gives a
       point ``x_0`` just on the adversarial side of the decision boundary.
    2. **iteration t = 1, 2, …**: the boundary normal is estimated from
       ``B_t = min(init_samples·√t, max_samples)`` unit directions ``u_b``:
       ``v ∝ Σ_b (φ(x_{t-1} + δ u_b) − φ̄) u_b`` with ``δ = 0.1`` at ``t = 1``, else
       ``δ = ||x_{t-1} − x|| / d``; then a step ``ξ = ||x_{t-1} − x|| / √t`` along ``v``,
       halved until the point is adversarial; then the bisection toward ``x`` again.
    3. stop when an example's ``max_queries`` label queries are spent; the closest
       adversarial point found is returned.

    Every candidate is clipped to [0, 1]; every returned point was labelled ≠ ``y`` by a
    query (the start points of step 1 by their own clean query). The model's scores are
    reduced to labels at once (``argmax`` of the mean softmax over ``eot_samples`` passes;
    one query costs ``eot_samples`` forward passes), and everything runs under
    ``torch.no_grad()``: no gradients.

    Args:
        model: ``images [B, C, H, W] in [0, 1] -> logits [B, classes]``, in eval mode.
        x: clean images ``[batch, C, H, W]`` in [0, 1]; also the pool of start points.
        y: labels ``[batch]`` (int64 / int32).
        max_queries: label queries per example (>= 1), the clean query included.
        init_samples: ``B_1``, the directions of the first gradient estimate (>= 1).
        max_samples: cap on ``B_t`` (>= 1).
        start_draws: uniform noise images tried per example without a start in the batch.
        step_halvings: at most this many halvings of the step size per iteration.
        generator: randomness for noise starts and directions (CPU or ``x``'s device).
        eot_samples: forward passes averaged per query (stochastic models).
        batch_size: images per forward pass.

    Returns:
        :class:`DecisionResult` ``(adversarial, distance, queries)``.

    Raises:
        ValueError: ``x`` / ``y`` of bad dtype, shape or range, or a count argument below
            its minimum (named).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)).eval()
        >>> x, y = torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 2, 0])
        >>> r = hop_skip_jump(model, x, y, max_queries=200, generator=torch.Generator().manual_seed(0))
        >>> r.distance.shape
        torch.Size([4])
    """
    try:
        _validate(x, y, 0.0, 0, None, "l2", 1, eot_samples)
    except ValueError as err:
        raise ValueError(str(err).replace("pgd:", "hop_skip_jump:", 1)) from None
    _check_positive_int("max_queries", max_queries, 1)
    _check_positive_int("init_samples", init_samples, 1)
    _check_positive_int("max_samples", max_samples, 1)
    _check_positive_int("start_draws", start_draws, 0)
    _check_positive_int("step_halvings", step_halvings, 0)
    _check_positive_int("batch_size", batch_size, 1)
    with torch.no_grad():
        x = x.detach().clone()
        y = y.detach().clone().long()
        n = x.shape[0]
        queries = torch.zeros(n, dtype=torch.long, device=x.device)
        if n == 0:
            return DecisionResult(x, torch.zeros(0, device=x.device), queries)
        d = x[0].numel()
        shape = (-1,) + (1,) * (x.dim() - 1)
        theta = d ** -1.5
        bisect_steps = max(10, math.ceil(math.log2(1 / theta)))
        gen_device = generator.device if generator is not None else x.device

        def labels(z: Tensor) -> Tensor:
            out = []
            for s in range(0, z.shape[0], batch_size):
                chunk = z[s : s + batch_size]
                if eot_samples == 1:
                    out.append(model(chunk).argmax(dim=1))
                else:
                    probs = sum(model(chunk).float().softmax(dim=1) for _ in range(eot_samples))
                    out.append(probs.argmax(dim=1))
            return torch.cat(out)

        def adversarial(z: Tensor, idx: Tensor) -> Tensor:
            """One query per row of ``z`` [m, C, H, W], charged to example ``idx`` [m]."""
            queries.index_add_(0, idx, torch.ones_like(idx))
            return labels(z) != y[idx]

        def norm(t: Tensor) -> Tensor:
            return t.flatten(1).norm(dim=1)

        def bisect(idx: Tensor, far: Tensor) -> Tensor:
            """Boundary points on the segments x[idx] -> far (adversarial), adversarial side."""
            lo = torch.zeros(len(idx), device=x.device, dtype=x.dtype)
            hi = torch.ones_like(lo)
            for _ in range(bisect_steps):
                live = torch.nonzero(queries[idx] < max_queries).flatten()
                if live.numel() == 0:
                    break
                mid = (lo[live] + hi[live]) / 2
                base = x[idx[live]]
                hit = adversarial(base + mid.view(shape) * (far[live] - base), idx[live])
                hi[live] = torch.where(hit, mid, hi[live])
                lo[live] = torch.where(hit, lo[live], mid)
            base = x[idx]
            return base + hi.view(shape) * (far - base)

        pred = labels(x)
        queries += 1
        wrong = pred != y
        distance = torch.where(wrong, 0.0, math.inf).to(device=x.device, dtype=x.dtype)
        best = x.clone()

        # ------------------------------------------------------------ start points
        start = x.clone()
        found = torch.zeros(n, dtype=torch.bool, device=x.device)
        pair = torch.cdist(x.flatten(1), x.flatten(1))
        pair = pair.masked_fill(pred.view(1, -1) == y.view(-1, 1), math.inf)
        nearest_d, nearest = pair.min(dim=1)
        ok = ~wrong & torch.isfinite(nearest_d)
        start[ok], found[ok] = x[nearest[ok]], True
        for _ in range(start_draws):
            need = torch.nonzero(~wrong & ~found & (queries < max_queries)).flatten()
            if need.numel() == 0:
                break
            noise = torch.rand((len(need), *x.shape[1:]), generator=generator, device=gen_device)
            noise = noise.to(device=x.device, dtype=x.dtype)
            hit = adversarial(noise, need)
            start[need[hit]], found[need[hit]] = noise[hit], True

        todo = torch.nonzero(~wrong & found).flatten()
        current = x.clone()
        if todo.numel():
            current[todo] = bisect(todo, start[todo])
        dist_now = norm(current - x)
        best[todo], distance[todo] = current[todo], dist_now[todo]

        # ------------------------------------------------------------ iterations
        active = ~wrong & found
        t = 0
        while True:
            t += 1
            active &= queries + bisect_steps + 2 <= max_queries
            idx = torch.nonzero(active).flatten()
            if idx.numel() == 0:
                break
            room = int((max_queries - queries[idx] - bisect_steps - 1).min())
            samples = max(1, min(int(init_samples * math.sqrt(t)), max_samples, room))
            point, dist = current[idx], dist_now[idx]
            delta = torch.full_like(dist, 0.1) if t == 1 else dist / d
            # boundary normal from label queries around the boundary point
            direction = torch.zeros_like(point)
            per = max(1, batch_size // samples)
            for s in range(0, len(idx), per):
                sl = slice(s, s + per)
                u = torch.randn((point[sl].shape[0], samples, *x.shape[1:]), generator=generator, device=gen_device)
                u = u.to(device=x.device, dtype=x.dtype)
                u = u / u.flatten(2).norm(dim=2).clamp_min(1e-12).view(*u.shape[:2], *([1] * (x.dim() - 1)))
                dl = delta[sl].view(-1, 1, *([1] * (x.dim() - 1)))
                probe = (point[sl].unsqueeze(1) + dl * u).clamp(0.0, 1.0)
                u = (probe - point[sl].unsqueeze(1)) / dl
                hit = adversarial(probe.flatten(0, 1), idx[sl].repeat_interleave(samples))
                f = hit.view(-1, samples).to(x.dtype) * 2 - 1
                mean = f.mean(dim=1, keepdim=True)
                centred = torch.where(mean.abs() == 1, mean, f - mean)  # all ±1: mean direction, signed
                direction[sl] = (centred.view(*centred.shape, *([1] * (x.dim() - 1))) * u).mean(dim=1)
            direction = direction / norm(direction).clamp_min(1e-12).view(shape)
            # geometric step-size search along the estimate
            step = dist / math.sqrt(t)
            moved = point.clone()
            done = torch.zeros(len(idx), dtype=torch.bool, device=x.device)
            for _ in range(step_halvings + 1):
                live = torch.nonzero(~done & (queries[idx] < max_queries)).flatten()
                if live.numel() == 0:
                    break
                cand = (point[live] + step[live].view(shape) * direction[live]).clamp(0.0, 1.0)
                hit = adversarial(cand, idx[live])
                moved[live[hit]], done[live[hit]] = cand[hit], True
                step[live[~hit]] /= 2
            ok = torch.nonzero(done).flatten()
            if ok.numel():
                current[idx[ok]] = bisect(idx[ok], moved[ok])
                dist_now[idx[ok]] = norm(current[idx[ok]] - x[idx[ok]])
            better = active & (dist_now < distance)
            best[better], distance[better] = current[better], dist_now[better]
        return DecisionResult(best, distance, queries)
