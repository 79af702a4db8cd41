"""Sanity checks against weak robustness evaluations (gradient masking and friends).

Carlini et al. (2019), "On evaluating adversarial robustness", and Athalye et al. (2018),
"Obfuscated gradients give a false sense of security", list the symptoms of an
evaluation that overestimates robustness. Each check here returns a flag dict

    {"passed": bool, "detail": str, ...numbers...}

and :func:`run_checks` collects them for the report (``report["sanity"]``). A failed
check means the robustness numbers should not be trusted as they stand.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def _flag(passed: bool, detail: str, **numbers: Any) -> dict[str, Any]:
    return {"passed": bool(passed), "detail": detail, **numbers}


def monotone_in_epsilon(epsilons: Sequence[float], accuracy: Sequence[float], tolerance: float = 1e-9) -> dict[str, Any]:
    """Accuracy must not increase with ε (a larger ball contains the smaller one).

    ``accuracy[i]`` at ``epsilons[i]``; sorted by ε before the check.
    """
    pairs = sorted(zip(epsilons, accuracy))
    bad = [(e1, a1, e2, a2) for (e1, a1), (e2, a2) in zip(pairs, pairs[1:]) if a2 > a1 + tolerance]
    detail = "accuracy is non-increasing in ε" if not bad else (
        "accuracy increases with ε at " + ", ".join(f"ε={e1:.4g}→{e2:.4g}: {a1:.3f}→{a2:.3f}" for e1, a1, e2, a2 in bad)
    )
    return _flag(not bad, detail)


def pgd_stronger_than_fgsm(
    epsilons: Sequence[float], pgd_accuracy: Sequence[float], fgsm_accuracy: Sequence[float], tolerance: float = 0.01
) -> dict[str, Any]:
    """Iterative PGD must reach accuracy <= single-step FGSM at every ε (up to ``tolerance``)."""
    bad = [(e, p, f) for e, p, f in zip(epsilons, pgd_accuracy, fgsm_accuracy) if p > f + tolerance]
    detail = "PGD is at least as strong as FGSM at every ε" if not bad else (
        "FGSM beats PGD at " + ", ".join(f"ε={e:.4g} (PGD {p:.3f} > FGSM {f:.3f})" for e, p, f in bad)
    )
    return _flag(not bad, detail)


def stronger_attack_not_weaker(
    epsilons: Sequence[float], members: Mapping[str, Sequence[float]], weaker: str = "pgd", tolerance: float = 0.02
) -> dict[str, Any]:
    """Every stronger ensemble member (APGD-CE, APGD-T, …) must reach accuracy <= the
    weaker one's (few-step PGD) at every ε on the same images, up to ``tolerance``.

    Args:
        epsilons: the ε grid; members: ``{member: [accuracy per ε]}``, ``weaker`` among them.

    A stronger attack that does worse than the weaker one points at a broken attack (a
    loss it cannot use, wrong labels or ε) rather than at a robust model.
    """
    if weaker not in members:
        return _flag(True, f"no {weaker} member to compare with", weaker=weaker)
    base = members[weaker]
    bad = [(name, e, a, p) for name, accs in members.items() if name != weaker
           for e, a, p in zip(epsilons, accs, base) if a > p + tolerance]
    detail = f"every stronger member is at least as strong as {weaker} at every ε (tolerance {tolerance})" if not bad else (
        "a stronger attack does worse than the weaker " + weaker + ": "
        + ", ".join(f"{name} {a:.3f} > {weaker} {p:.3f} at ε={e:.4g}" for name, e, a, p in bad)
    )
    return _flag(not bad, detail, weaker=weaker, tolerance=tolerance)


def headline_is_worst_case(
    epsilons: Sequence[float], headline: Sequence[float], members: Mapping[str, Sequence[float]], tolerance: float = 1e-9
) -> dict[str, Any]:
    """The headline robust accuracy (the per-image worst case over the ensemble) must be
    <= the accuracy of every member at every ε; a member below it means the headline was
    computed wrongly (not on the same images, or not as a worst case)."""
    bad = [(name, e, a, h) for name, accs in members.items()
           for e, a, h in zip(epsilons, accs, headline) if a < h - tolerance]
    detail = "the headline is <= every ensemble member at every ε" if not bad else (
        "an ensemble member is below the headline (it must be the per-image worst case): "
        + ", ".join(f"{name} {a:.3f} < headline {h:.3f} at ε={e:.4g}" for name, e, a, h in bad)
    )
    return _flag(not bad, detail)


def large_epsilon_breaks(accuracy: float, epsilon: float, threshold: float = 0.05) -> dict[str, Any]:
    """At a very large ε (e.g. L∞ 0.5: any image can be moved to mid-grey) accuracy must be near 0."""
    ok = accuracy <= threshold
    detail = (
        f"accuracy {accuracy:.3f} at ε={epsilon:.3g} (<= {threshold})" if ok
        else f"accuracy {accuracy:.3f} > {threshold} at the very large ε={epsilon:.3g}: the attack cannot "
        "break the model even where the image content can be erased — gradient masking or a broken attack"
    )
    return _flag(ok, detail, accuracy=accuracy, epsilon=epsilon)


def black_box_not_stronger(
    epsilon: float, white_box_accuracy: float, black_box_accuracy: float, tolerance: float = 0.02
) -> dict[str, Any]:
    """A black-box attack (Square) must not reach lower accuracy than the white-box one."""
    ok = black_box_accuracy >= white_box_accuracy - tolerance
    detail = (
        f"black-box {black_box_accuracy:.3f} >= white-box {white_box_accuracy:.3f} at ε={epsilon:.4g}" if ok
        else f"black-box Square attack ({black_box_accuracy:.3f}) beats white-box PGD ({white_box_accuracy:.3f}) "
        f"at ε={epsilon:.4g}: gradients are uninformative (masking)"
    )
    return _flag(ok, detail, epsilon=epsilon, white_box=white_box_accuracy, black_box=black_box_accuracy)


def decision_not_closer(
    white_box: Sequence[float | None],
    decision: Sequence[float | None],
    eps_max: float,
    resolution: float,
    tolerance: float = 0.1,
) -> dict[str, Any]:
    """The decision-based L2 distance must not undercut the white-box minimal L2 perturbation.

    On the images both measured (pairs ``(white_box[i], decision[i])``; images misclassified
    without perturbation, value 0, are left out), the white-box search proves that PGD
    failed below ``w_i = max(white_box[i] - resolution, 0)`` (``eps_max`` where it never
    flipped the image, ``None``). A label-only attack should need at least that much. The
    check fails when ``median(decision) < (1 - tolerance) · median(w)`` (``None`` decision
    values, no adversarial found, count as ``inf``): gradients mislead PGD (masking).

    Args:
        white_box: per-image minimal L2 radius from the PGD binary search (``None``: not
            flipped up to ``eps_max``).
        decision: per-image L2 distance of the decision-based attack (``None``: not found).
        eps_max: the largest radius of the white-box search.
        resolution: its bisection resolution ``eps_max / 2^search_steps``.
        tolerance: allowed relative shortfall of the decision-based median.

    Returns:
        A flag dict with ``white_box_median`` (of the lower bounds ``w``),
        ``decision_median`` and ``n_images``.
    """
    pairs = [
        (eps_max if w is None else max(float(w) - resolution, 0.0), math.inf if dec is None else float(dec))
        for w, dec in zip(white_box, decision)
        if not (w == 0 or dec == 0)
    ]
    if not pairs:
        return _flag(True, "no image measured by both attacks", n_images=0, white_box_median=None, decision_median=None)
    wb = statistics.median(p[0] for p in pairs)
    dec = statistics.median(p[1] for p in pairs)
    ok = dec >= (1 - tolerance) * wb
    detail = (
        f"decision-based median L2 {dec:.4g} >= white-box lower bound {wb:.4g} (n={len(pairs)}, tolerance {tolerance:.0%})"
        if ok else
        f"decision-based attack (labels only) finds a median L2 distance {dec:.4g} below the white-box minimal "
        f"perturbation {wb:.4g} (n={len(pairs)}): gradients mislead PGD (masking)"
    )
    return _flag(ok, detail, n_images=len(pairs), white_box_median=finite_or_none(wb), decision_median=finite_or_none(dec))


@torch.no_grad()
def is_stochastic(model: Callable[[Tensor], Tensor], x: Tensor, trials: int = 3) -> bool:
    """True when repeated forward passes on the same images give different logits."""
    first = model(x)
    return any(not torch.allclose(model(x), first, rtol=1e-5, atol=1e-6) for _ in range(trials - 1))


def stochastic_attacked_with_eot(stochastic: bool, eot_samples: int) -> dict[str, Any]:
    """A stochastic model must be attacked with expectation over transformation (k > 1)."""
    ok = (not stochastic) or eot_samples > 1
    if not stochastic:
        detail = "model is deterministic"
    elif ok:
        detail = f"stochastic model attacked with EOT over {eot_samples} samples"
    else:
        detail = "stochastic model attacked without EOT (eot_samples=1): single-sample gradients understate the attack"
    return _flag(ok, detail, stochastic=stochastic, eot_samples=eot_samples)


def input_gradients(model: Callable[[Tensor], Tensor], x: Tensor, y: Tensor) -> dict[str, Any]:
    """Input gradients of the cross-entropy must be finite and non-zero.

    Flags a failure when any gradient entry is NaN/inf, or when more than 10 % of the
    examples whose loss is above 1e-6 have an all-zero input gradient (a hard threshold,
    quantisation or a non-differentiable front end: PGD gets no signal).
    """
    with torch.inference_mode(False), torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)
        loss = F.cross_entropy(model(xg).float(), y.long(), reduction="none")
        (grad,) = torch.autograd.grad(loss.sum(), xg, allow_unused=False)
    norms = grad.flatten(1).norm(dim=1)
    non_finite = int((~torch.isfinite(grad)).flatten(1).any(1).sum())
    informative = loss.detach() > 1e-6
    zero = int(((norms == 0) & informative).sum())
    frac_zero = zero / max(int(informative.sum()), 1)
    ok = non_finite == 0 and frac_zero <= 0.1
    detail = (
        f"input gradients finite, {frac_zero:.1%} zero" if ok
        else f"input gradients: {non_finite} examples with NaN/inf, {frac_zero:.1%} of examples with non-zero loss "
        "have an all-zero gradient (masked gradients)"
    )
    return _flag(ok, detail, non_finite=non_finite, zero_fraction=frac_zero)


def all_passed(checks: Mapping[str, Mapping[str, Any]]) -> bool:
    """True when every check in ``{name: flag}`` passed."""
    return all(bool(c["passed"]) for c in checks.values())


def format_failures(checks: Mapping[str, Mapping[str, Any]]) -> str:
    """A prominent multi-line banner listing failed checks ('' if none failed)."""
    failed = [(name, c) for name, c in checks.items() if not c["passed"]]
    if not failed:
        return ""
    bar = "!" * 78
    lines = [bar, f"!!! neuroreg SANITY CHECK FAILED ({len(failed)} of {len(checks)}): robustness numbers are suspect"]
    lines += [f"!!!   {name}: {c['detail']}" for name, c in failed]
    lines.append(bar)
    return "\n".join(lines)


def finite_or_none(value: float) -> float | None:
    """JSON-safe number: ``None`` for NaN / inf."""
    return float(value) if math.isfinite(value) else None
