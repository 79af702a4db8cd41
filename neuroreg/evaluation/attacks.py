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
from collections.abc import Callable

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
