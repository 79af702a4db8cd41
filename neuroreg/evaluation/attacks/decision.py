"""Decision-based L2 attacks, which see predicted labels only: HopSkipJump and the Boundary Attack.

Both are run by the Adversarial Robustness Toolbox (ART, ``art.attacks.evasion``); this
module gives them a label oracle that counts queries per image, a seeded start and a
hard query budget.

Decision-based attacks see only the predicted label ``argmax f(z)`` (one *query*). Per
example, with a budget of ``max_queries`` queries (the clean query included):

1. **clean**: an example already misclassified gets distance 0 (one query).
2. **start**: the nearest (L2) image of the batch whose clean query gave a label ``≠ y``
   (no query needed), else the first of ``start_draws`` uniform noise images labelled
   ``≠ y``; then ``start_bisections`` bisection steps on the segment from ``x`` to it
   (blending, as Foolbox's default start does with noise); the point on the adversarial
   side is the start, and an upper bound on the distance returned.
3. **attack**: ART's implementation runs from that start until the example's budget is
   spent (its label oracle stops it there) or it ends by itself.

The closest (L2) queried point labelled ``≠ y`` is returned: every returned point was
labelled misclassified by a query. Candidates are clipped to [0, 1]. Stochastic models:
a query is the majority vote of ``eot_samples`` forward passes (:func:`vote_labels`), so
the attack sees a stable label; a query then costs ``eot_samples`` passes, and the
returned distance is that of a point the vote labelled misclassified. Everything runs
under ``torch.no_grad()``. Randomness: the noise starts draw from ``generator``; ART's
directions draw from NumPy's global random state, seeded from ``generator`` for the call
and restored after.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from neuroreg.evaluation.attacks.base import validate_attack


class DecisionResult(NamedTuple):
    """Outcome of a decision-based attack, one entry per example.

    Attributes:
        adversarial: the closest misclassified images found ``[batch, C, H, W]`` in [0, 1]
            (the clean image where none was found or it is misclassified already).
        distance: their L2 distance to the clean images ``[batch]``: ``0`` for an example
            misclassified without perturbation, ``inf`` where no misclassified point was found.
        queries: label queries spent per example ``[batch]`` (int64, ``<= max_queries``).
    """

    adversarial: Tensor
    distance: Tensor
    queries: Tensor


class _BudgetSpent(Exception):
    """Raised by the label oracle once an image's query budget is spent (ends the library's run)."""


def vote_labels(model: Callable[[Tensor], Tensor], z: Tensor, eot_samples: int = 1, batch_size: int = 1024) -> Tensor:
    """Labels ``[m]`` of images ``z [m, C, H, W]``: the majority vote of ``eot_samples`` forward passes.

    A decision-based attack needs a stable label per query; for a stochastic model each
    query is the most frequent argmax over ``eot_samples`` passes (ties go to the lower
    class index). With ``eot_samples = 1`` it is the plain argmax.

    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    >>> vote_labels(model, torch.rand(5, 1, 2, 2), eot_samples=3).shape
    torch.Size([5])
    """
    out = []
    with torch.no_grad():
        for s in range(0, z.shape[0], batch_size):
            chunk = z[s : s + batch_size]
            if eot_samples == 1:
                out.append(model(chunk).argmax(dim=1))
                continue
            counts = None
            for _ in range(eot_samples):
                logits = model(chunk)
                hot = torch.nn.functional.one_hot(logits.argmax(dim=1), logits.shape[1])
                counts = hot if counts is None else counts + hot
            out.append(counts.argmax(dim=1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=z.device)


class _Oracle:
    """ART's ``predict_fn`` for one image: labels as one-hot rows, queries counted and capped.

    Every queried point the model labels ``≠ label`` is a candidate; the closest (L2) is kept.
    """

    def __init__(self, label_fn: Callable[[Tensor], Tensor], x: Tensor, label: int, classes: int, budget: int,
                 best: Tensor, best_distance: float) -> None:
        self.label_fn, self.x, self.label, self.classes = label_fn, x, label, classes
        self.budget, self.used = budget, 0
        self.best, self.best_distance = best, best_distance

    def __call__(self, z: np.ndarray) -> np.ndarray:
        take = min(len(z), self.budget - self.used)
        if take <= 0:
            raise _BudgetSpent
        batch = torch.from_numpy(np.asarray(z[:take], dtype=np.float32)).to(self.x.device, self.x.dtype).clamp(0, 1)
        labels = self.label_fn(batch)
        self.used += take
        dist = (batch - self.x).flatten(1).norm(dim=1)
        dist = torch.where(labels != self.label, dist, math.inf)
        k = int(dist.argmin())
        if float(dist[k]) < self.best_distance:
            self.best, self.best_distance = batch[k].clone(), float(dist[k])
        if take < len(z):
            raise _BudgetSpent
        return torch.nn.functional.one_hot(labels, self.classes).float().cpu().numpy()


@contextlib.contextmanager
def _numpy_seeded(seed: int) -> Iterator[None]:
    """Seed NumPy's global random state (ART draws its directions from it), restore it after."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _check_count(fn: str, name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{fn}: {name} must be an integer >= {minimum}, found {value!r}")
    return value


def _decision_attack(
    fn: str,
    make_attack: Callable[[Any, int], Any],
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    max_queries: int,
    start_draws: int,
    start_bisections: int,
    generator: torch.Generator | None,
    eot_samples: int,
    batch_size: int,
) -> DecisionResult:
    try:
        validate_attack(x, y, 0.0, 0, None, "l2", 1, eot_samples)
    except ValueError as err:
        raise ValueError(str(err).replace("pgd:", f"{fn}:", 1)) from None
    _check_count(fn, "max_queries", max_queries, 1)
    _check_count(fn, "start_draws", start_draws, 0)
    _check_count(fn, "start_bisections", start_bisections, 0)
    _check_count(fn, "batch_size", batch_size, 1)
    from art.estimators.classification import BlackBoxClassifier

    with torch.no_grad():
        x = x.detach().clone()
        y = y.detach().clone().long()
        n = x.shape[0]
        queries = torch.zeros(n, dtype=torch.long, device=x.device)
        if n == 0:
            return DecisionResult(x, torch.zeros(0, device=x.device), queries)
        shape = (-1,) + (1,) * (x.dim() - 1)
        gen_device = generator.device if generator is not None else x.device
        classes = int(model(x[:1]).shape[1])  # one forward pass, not a label query

        def labels(z: Tensor) -> Tensor:
            return vote_labels(model, z, eot_samples, batch_size)

        def adversarial(z: Tensor, idx: Tensor) -> Tensor:
            queries.index_add_(0, idx, torch.ones_like(idx))
            return labels(z) != y[idx]

        pred = labels(x)
        queries += 1
        wrong = pred != y
        distance = torch.where(wrong, 0.0, math.inf).to(device=x.device, dtype=x.dtype)
        best = x.clone()

        # start: the nearest batch image labelled otherwise, else the first adversarial uniform noise,
        # blended toward x by bisection
        start = x.clone()
        found = torch.zeros(n, dtype=torch.bool, device=x.device)
        pair = torch.cdist(x.flatten(1), x.flatten(1)).masked_fill(pred.view(1, -1) == y.view(-1, 1), math.inf)
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
        idx = torch.nonzero(found).flatten()
        lo = torch.zeros(len(idx), device=x.device, dtype=x.dtype)
        hi = torch.ones_like(lo)
        for _ in range(start_bisections):
            live = torch.nonzero(queries[idx] < max_queries).flatten()
            if live.numel() == 0:
                break
            mid = (lo[live] + hi[live]) / 2
            base = x[idx[live]]
            hit = adversarial(base + mid.view(shape) * (start[idx[live]] - base), idx[live])
            hi[live] = torch.where(hit, mid, hi[live])
            lo[live] = torch.where(hit, lo[live], mid)
        start[idx] = x[idx] + hi.view(shape) * (start[idx] - x[idx])
        best[idx] = start[idx]
        distance[idx] = (start[idx] - x[idx]).flatten(1).norm(dim=1)

        # the library's attack from that start, image by image, until the budget is spent
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=gen_device))
        with _numpy_seeded(seed):
            for i in idx.tolist():
                room = max_queries - int(queries[i])
                if room <= 0:
                    continue
                oracle = _Oracle(labels, x[i : i + 1], int(y[i]), classes, room, best[i], float(distance[i]))
                classifier = BlackBoxClassifier(oracle, tuple(x.shape[1:]), classes, clip_values=(0.0, 1.0))
                attack = make_attack(classifier, max_queries)
                with contextlib.suppress(_BudgetSpent):
                    attack.generate(x[i : i + 1].cpu().numpy(), y=np.array([int(y[i])]),
                                    x_adv_init=start[i : i + 1].cpu().numpy())
                queries[i] += oracle.used
                best[i], distance[i] = oracle.best, oracle.best_distance
        return DecisionResult(best, distance, queries)




def hop_skip_jump(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    max_queries: int = 1000,
    *,
    start_draws: int = 100,
    start_bisections: int = 10,
    generator: torch.Generator | None = None,
    eot_samples: int = 1,
    batch_size: int = 1024,
) -> DecisionResult:
    """HopSkipJump (Chen, Jordan & Wainwright 2020), L2, run by ART's ``HopSkipJump``.

    Each iteration estimates the boundary normal from label queries around a boundary
    point (``100·√t`` directions at iteration ``t``, at most 10,000), steps along it with a
    geometric step-size search and bisects back toward ``x``.

    The procedure (clean query, blended-noise start, budget) is the module's.

    Args:
        model: ``images [B, C, H, W] in [0, 1] -> logits [B, classes]``, in eval mode.
        x: clean images ``[batch, C, H, W]`` in [0, 1]; also the pool of start points.
        y: labels ``[batch]`` (int64 / int32).
        max_queries: label queries per example (>= 1), the clean query included.
        start_draws: uniform noise images tried per example without a start in the batch (>= 0).
        start_bisections: bisection steps from the noise image toward ``x`` (>= 0).
        generator: randomness of the starts and the seed of ART's draws (CPU or ``x``'s device).
        eot_samples: forward passes voted per query (stochastic models).
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
        >>> r.distance.shape, bool((r.queries <= 200).all())
        (torch.Size([4]), True)
    """
    from art.attacks.evasion.hop_skip_jump import HopSkipJump

    def make(classifier: Any, iterations: int) -> Any:
        return HopSkipJump(classifier, batch_size=batch_size, targeted=False, norm=2, max_iter=iterations,
                           max_eval=10_000, init_eval=100, init_size=max(1, start_draws), verbose=False)

    return _decision_attack("hop_skip_jump", make, model, x, y, max_queries, start_draws, start_bisections,
                            generator, eot_samples, batch_size)


def boundary_attack(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    max_queries: int = 1000,
    *,
    start_draws: int = 100,
    start_bisections: int = 10,
    generator: torch.Generator | None = None,
    eot_samples: int = 1,
    batch_size: int = 1024,
) -> DecisionResult:
    """The Boundary Attack (Brendel, Rauber & Bethge 2018), L2, run by ART's ``BoundaryAttack``.

    The attack Li et al. (2019) evaluated their networks with (in Foolbox). Each step
    draws 20 random orthogonal steps of relative size ``δ`` along the sphere around ``x``,
    keeps the adversarial ones and moves them a fraction ``ε`` toward ``x``, adapting ``δ``
    and ``ε`` to the success rates (ART's defaults: ``δ = ε = 0.01``, factor 0.667).

    The procedure (clean query, blended-noise start, budget) is the module's.

    Args:
        model: ``images [B, C, H, W] in [0, 1] -> logits [B, classes]``, in eval mode.
        x: clean images ``[batch, C, H, W]`` in [0, 1]; also the pool of start points.
        y: labels ``[batch]`` (int64 / int32).
        max_queries: label queries per example (>= 1), the clean query included.
        start_draws: uniform noise images tried per example without a start in the batch (>= 0).
        start_bisections: bisection steps from the noise image toward ``x`` (>= 0).
        generator: randomness of the starts and the seed of ART's draws (CPU or ``x``'s device).
        eot_samples: forward passes voted per query (stochastic models).
        batch_size: images per forward pass.

    Returns:
        :class:`DecisionResult` ``(adversarial, distance, queries)``.

    Raises:
        ValueError: ``x`` / ``y`` of bad dtype, shape or range, or a count argument below
            its minimum (named).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)).eval()
        >>> x, y = torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 2, 0])
        >>> r = boundary_attack(model, x, y, max_queries=200, generator=torch.Generator().manual_seed(0))
        >>> r.distance.shape, bool((r.queries <= 200).all())
        (torch.Size([4]), True)
    """
    from art.attacks.evasion.boundary import BoundaryAttack

    def make(classifier: Any, iterations: int) -> Any:
        return BoundaryAttack(classifier, batch_size=batch_size, targeted=False, max_iter=iterations,
                              init_size=max(1, start_draws), verbose=False)

    return _decision_attack("boundary_attack", make, model, x, y, max_queries, start_draws, start_bisections,
                            generator, eot_samples, batch_size)


#: the decision-based attacks by their name in a budget (``Budget.decision_attack``)
DECISION_ATTACKS: dict[str, Callable[..., DecisionResult]] = {
    "hopskipjump": hop_skip_jump,
    "boundary": boundary_attack,
}


def decision_attack(name: str) -> Callable[..., DecisionResult]:
    """The attack function of ``name`` (a key of :data:`DECISION_ATTACKS`).

    >>> decision_attack("boundary").__name__
    'boundary_attack'

    Raises:
        ValueError: unknown name (lists the known ones).
    """
    if name not in DECISION_ATTACKS:
        raise ValueError(f"decision_attack: expected one of {sorted(DECISION_ATTACKS)}, found {name!r}")
    return DECISION_ATTACKS[name]
