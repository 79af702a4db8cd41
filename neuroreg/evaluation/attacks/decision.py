"""Decision-based attacks: HopSkipJump (L2), which sees predicted labels only."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from neuroreg.evaluation.attacks.base import validate_attack


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
        validate_attack(x, y, 0.0, 0, None, "l2", 1, eot_samples)
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
