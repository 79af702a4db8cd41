"""The evaluation suite: one procedure, three budgets (``quick``, ``standard``, ``full``).

:func:`evaluate` measures, on up to ``max_images`` test images ``(x_i, y_i)`` with the
model in eval mode:

- clean accuracy; accuracy under Gaussian noise (σ grid, common random numbers);
- accuracy per common corruption and severity (:mod:`~neuroreg.evaluation.perturbations`),
  the mean corruption accuracy, and — given a baseline report — the corruption error
  ``CE_c = Σ_s E_{c,s} / Σ_s E^{base}_{c,s}`` and the relative corruption error
  ``rCE_c = Σ_s (E_{c,s} - E_clean) / Σ_s (E^{base}_{c,s} - E^{base}_clean)``
  (Hendrycks & Dietterich 2019), averaged over corruptions (mCE, relative mCE; a
  corruption on which the baseline makes no error is left out, ``null``);
- PGD L∞ and L2 and FGSM L∞ over ε grids (PGD curves are cumulative: an example counts
  as robust at ε only if no attack at any ε' <= ε broke it), with expectation over
  transformation when the model is stochastic;
- AutoAttack (``standard``, or ``rand`` for stochastic models) at one ε on a subset;
- the Square black-box attack at the same ε (sanity check);
- per-image minimal L2 (and L∞) perturbation by binary search over PGD: median + histogram;
- per-image L2 distance reached by a decision-based attack (HopSkipJump, labels only) within
  a query budget: median + histogram;
- sanity flags (:mod:`~neuroreg.evaluation.sanity`);
- brain similarity per layer when a recording and layers are given.

Suites differ only in their :class:`Budget`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from neuroreg.evaluation import sanity
from neuroreg.evaluation.attacks import (
    autoattack,
    fgsm,
    hop_skip_jump,
    minimal_epsilon,
    pgd,
    square_attack,
)
from neuroreg.evaluation.perturbations import CORRUPTIONS, corrupt, gaussian_noise


@dataclass(frozen=True)
class Budget:
    """How much of each measurement a suite runs (0 / empty turns a part off).

    Args:
        max_images: test images evaluated (``None``: all).
        noise_sigmas: Gaussian noise σ grid.
        corruptions: corruption names; severities: which of 1..5.
        linf_epsilons, l2_epsilons: PGD grids (L∞ in [0, 1]; L2 in image units).
        fgsm: also run FGSM L∞ on the L∞ grid.
        pgd_steps, pgd_restarts, schedule: PGD settings.
        eot_samples: gradient samples per step for stochastic models (deterministic: 1).
        autoattack_images: images for AutoAttack at ``autoattack_epsilon`` (L∞); 0: off.
        square_images, square_queries: the black-box check.
        minimal_images, minimal_search_steps, minimal_l2_max, minimal_linf_max: the
            minimal perturbation search.
        decision_images, decision_queries: the decision-based L2 attack
            (:func:`~neuroreg.evaluation.attacks.hop_skip_jump`): images and label queries
            per image.
        large_epsilon: the "near-zero accuracy" check (L∞), on ``check_images`` images.
    """

    max_images: int | None = None
    noise_sigmas: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3)
    corruptions: tuple[str, ...] = ()
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    linf_epsilons: tuple[float, ...] = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255)
    l2_epsilons: tuple[float, ...] = ()
    fgsm: bool = True
    pgd_steps: int = 10
    pgd_restarts: int = 1
    schedule: str = "constant"
    eot_samples: int = 8
    autoattack_images: int = 0
    autoattack_epsilon: float = 8 / 255
    square_images: int = 0
    square_queries: int = 500
    minimal_images: int = 0
    minimal_search_steps: int = 8
    minimal_l2_max: float = 4.0
    minimal_linf_max: float = 0.25
    decision_images: int = 0
    decision_queries: int = 1000
    large_epsilon: float | None = None
    check_images: int = 100


_LINF = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255)
_L2 = (0.0, 0.25, 0.5, 1.0, 2.0)

#: the three suites; they differ only in budgets
SUITES: dict[str, Budget] = {
    "quick": Budget(
        max_images=128, noise_sigmas=(0.0, 0.1, 0.2, 0.3), corruptions=CORRUPTIONS, severities=(1, 3, 5),
        linf_epsilons=(0.0, 2 / 255, 4 / 255, 8 / 255, 16 / 255), l2_epsilons=(0.0, 0.5, 1.0, 2.0), pgd_steps=10,
        pgd_restarts=1, eot_samples=4, autoattack_images=0, square_images=32, square_queries=100, minimal_images=32,
        minimal_search_steps=5, decision_images=16, decision_queries=300, large_epsilon=0.5, check_images=64,
    ),
    "standard": Budget(
        max_images=1000, noise_sigmas=(0.0, 0.05, 0.1, 0.2, 0.3, 0.4), corruptions=CORRUPTIONS,
        linf_epsilons=_LINF, l2_epsilons=_L2, pgd_steps=20, pgd_restarts=2, eot_samples=10,
        autoattack_images=200, square_images=200, square_queries=1000, minimal_images=200, minimal_search_steps=8,
        decision_images=100, decision_queries=1000, large_epsilon=0.5, check_images=200,
    ),
    "full": Budget(
        max_images=None, noise_sigmas=(0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5), corruptions=CORRUPTIONS,
        linf_epsilons=(0.0, 0.5 / 255, *_LINF[1:], 32 / 255), l2_epsilons=(*_L2, 4.0), pgd_steps=50,
        pgd_restarts=5, schedule="cosine", eot_samples=20, autoattack_images=1000, square_images=1000,
        square_queries=5000, minimal_images=1000, minimal_search_steps=10, decision_images=500,
        decision_queries=5000, large_epsilon=0.5, check_images=500,
    ),
}


def budget_for(suite: str, **overrides: Any) -> Budget:
    """The budget of ``suite`` with ``overrides`` (``None`` values ignored).

    Raises:
        ValueError: unknown suite (lists the known ones).
    """
    if suite not in SUITES:
        raise ValueError(f"suite: expected one of {sorted(SUITES)}, found {suite!r}")
    return replace(SUITES[suite], **{k: v for k, v in overrides.items() if v is not None})


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def metrics(report: Mapping[str, Any]) -> dict[str, float]:
    """Flat scalars ``{"eval/…": value}`` of a report, for Lightning loggers."""
    out = {"eval/clean_accuracy": float(report["clean_accuracy"])}
    if "gaussian_noise" in report:
        for s, a in zip(report["gaussian_noise"]["sigma"], report["gaussian_noise"]["accuracy"]):
            out[f"eval/noise_accuracy_sigma={_fmt(s)}"] = float(a)
    for key in ("pgd_linf", "pgd_l2", "fgsm_linf"):
        if key in report:
            for e, a in zip(report[key]["epsilon"], report[key]["accuracy"]):
                out[f"eval/{key}_accuracy_eps={_fmt(e)}"] = float(a)
    if "corruptions" in report:
        c = report["corruptions"]
        out["eval/mean_corruption_accuracy"] = float(c["mean_accuracy"])
        for name, part in c["per_corruption"].items():
            out[f"eval/corruption/{name}"] = float(np.mean(part["accuracy"]))
        for key in ("mce", "relative_mce"):
            if c.get(key) is not None:
                out[f"eval/{key}"] = float(c[key])
    if "autoattack" in report:
        out["eval/autoattack_accuracy"] = float(report["autoattack"]["accuracy"])
    for norm in ("l2", "linf"):
        part = report.get("minimal_perturbation", {}).get(norm)
        if part and part.get("median") is not None:
            out[f"eval/minimal_{norm}_median"] = float(part["median"])
    if report.get("decision", {}).get("median") is not None:
        out["eval/decision_l2_median"] = float(report["decision"]["median"])
    if "sanity" in report:
        out["eval/sanity_passed"] = float(report["sanity_passed"])
    brain = report.get("brain")
    if brain:
        for i, layer in enumerate(brain["layers"]):
            for key in ("ridge", "pls"):
                v = brain[key]["score"][i]
                if v is not None and math.isfinite(v):
                    out[f"eval/brain/{layer}/{key}"] = float(v)
            out[f"eval/brain/{layer}/rsa"] = float(brain["rsa"][i])
            out[f"eval/brain/{layer}/cka"] = float(brain["cka"][i])
    return out


def _collect(loader: Iterable[Any], max_images: int | None, max_batches: int | None) -> tuple[Tensor, Tensor]:
    xs, ys, n = [], [], 0
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        if max_images is not None and n >= max_images:
            break
        if not isinstance(batch, Mapping) or "image" not in batch or "label" not in batch:
            found = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
            raise ValueError(
                f"evaluation: test batch {i} must be a dict with keys 'image' [B, C, H, W] in [0, 1] "
                f"and 'label' [B], found {found}"
            )
        x, y = batch["image"], batch["label"]
        if max_images is not None:
            x, y = x[: max_images - n], y[: max_images - n]
        xs.append(x)
        ys.append(y)
        n += len(y)
    if n == 0:
        raise ValueError("evaluation: the test loader yielded no images")
    return torch.cat(xs), torch.cat(ys).long()


def _batches(n: int, size: int) -> list[slice]:
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def _relative_errors(report_c: dict[str, Any], clean: float, baseline: Mapping[str, Any]) -> dict[str, Any]:
    """CE / relative CE per corruption against ``baseline`` (a report with the same corruptions)."""
    base_c = baseline.get("corruptions", {}).get("per_corruption", {})
    base_clean = float(baseline["clean_accuracy"])
    ce, rce = {}, {}
    for name, part in report_c["per_corruption"].items():
        if name not in base_c or list(base_c[name]["severity"]) != list(part["severity"]):
            raise ValueError(
                f"baseline report: field 'corruptions.per_corruption.{name}' must exist with severities "
                f"{part['severity']}, found {base_c.get(name, {}).get('severity')}"
            )
        err = [1 - a for a in part["accuracy"]]
        base_err = [1 - a for a in base_c[name]["accuracy"]]
        ce[name] = sum(err) / sum(base_err) if sum(base_err) > 0 else None
        denom = sum(e - (1 - base_clean) for e in base_err)
        rce[name] = sum(e - (1 - clean) for e in err) / denom if abs(denom) > 1e-12 else None
    rce_vals = [v for v in rce.values() if v is not None]
    ce_vals = [v for v in ce.values() if v is not None]
    return {
        "ce": ce, "relative_ce": rce, "mce": float(np.mean(ce_vals)) if ce_vals else None,
        "relative_mce": float(np.mean(rce_vals)) if rce_vals else None,
    }


def evaluate(
    model: nn.Module,
    loader: Iterable[Any],
    budget: Budget,
    seed: int = 0,
    device: torch.device | str | None = None,
    max_batches: int | None = None,
    progress: bool = True,
    batch_size: int = 256,
    baseline: Mapping[str, Any] | None = None,
    recording: Any = None,
    brain_layers: Sequence[str] = (),
    brain_tier: str | None = "test",
    eot_samples: int | None = None,
) -> dict[str, Any]:
    """Run the measurements of ``budget`` and return the report dict (without ``complete``).

    Args:
        model: ``images [B, C, H, W] in [0, 1] -> logits``; put in eval mode and on
            ``device`` for the evaluation, its per-module modes and device restored after.
        loader: dict batches ``{"image", "label"}``.
        budget: see :class:`Budget` / :data:`SUITES`.
        seed: seeds noise, corruptions and attack starts.
        device: ``None``: the model's device.
        max_batches: read at most this many batches (``fast_dev_run``).
        progress: tqdm progress bar.
        batch_size: images per forward / attack batch.
        baseline: a report of the baseline run (for CE / relative CE).
        recording, brain_layers, brain_tier: brain similarity (both needed to run it).
        eot_samples: force the EOT samples (default: ``budget.eot_samples`` if the model is
            stochastic, else 1); forcing 1 on a stochastic model trips a sanity flag.

    Returns:
        The report: ``clean_accuracy``, ``n_images``, ``seed``, ``budget``, ``stochastic``,
        ``eot_samples`` and a section per measurement (see the module docstring).
    """
    from tqdm import tqdm

    params = [p for p in model.parameters() if torch.is_floating_point(p)]
    home = params[0].device if params else torch.device("cpu")
    dtype = params[0].dtype if params else torch.float32
    device = torch.device(device) if device is not None else home
    modes = {m: m.training for m in model.modules()}
    b = budget
    x_all, y_all = _collect(loader, b.max_images, max_batches)
    x_all, y_all = x_all.to(device=device, dtype=dtype), y_all.to(device)
    n = len(y_all)
    if x_all.min() < 0 or x_all.max() > 1:
        raise ValueError(
            f"evaluation: test images must lie in [0, 1], found [{x_all.min().item():.4g}, {x_all.max().item():.4g}]"
        )
    chunks = _batches(n, batch_size)
    gen = lambda k=0: torch.Generator().manual_seed(seed * 1_000_003 + k)
    corr_work = len(b.corruptions) * len(b.severities)
    attack_work = len(b.linf_epsilons) * (2 if b.fgsm else 1) + len(b.l2_epsilons)
    total = len(chunks) * (1 + len(b.noise_sigmas) + corr_work + attack_work) + 6
    bar = tqdm(total=total, desc="neuroreg evaluation", disable=not progress, leave=False)
    report: dict[str, Any] = {"n_images": n, "seed": seed, "budget": json.loads(json.dumps(asdict(b)))}

    timing: dict[str, float] = {}
    clock = [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        timing[name] = round(now - clock[0], 3)
        clock[0] = now

    def correct(x: Tensor, y: Tensor) -> Tensor:
        with torch.no_grad():
            return model(x).argmax(dim=1) == y

    model.to(device)
    model.eval()
    try:
        clean_ok = torch.cat([correct(x_all[c], y_all[c]) for c in chunks])
        bar.update(len(chunks))
        report["clean_accuracy"] = int(clean_ok.sum()) / n
        stochastic = sanity.is_stochastic(model, x_all[: min(n, 32)])
        eot = eot_samples if eot_samples is not None else (b.eot_samples if stochastic else 1)
        report["stochastic"], report["eot_samples"] = stochastic, eot
        lap("clean")

        # ---------------------------------------------------------------- noise
        if b.noise_sigmas:
            accs = []
            for i, sigma in enumerate(b.noise_sigmas):
                g = gen(1)  # common random numbers across σ
                ok = sum(int(correct(gaussian_noise(x_all[c], sigma, generator=g), y_all[c]).sum()) for c in chunks)
                accs.append(ok / n)
                bar.update(len(chunks))
            report["gaussian_noise"] = {"sigma": list(b.noise_sigmas), "accuracy": accs}
            lap("gaussian_noise")

        # ---------------------------------------------------------------- corruptions
        if b.corruptions:
            per = {}
            for j, name in enumerate(b.corruptions):
                accs = []
                for s in b.severities:
                    g = gen(100 + j)
                    ok = sum(int(correct(corrupt(x_all[c], name, s, generator=g), y_all[c]).sum()) for c in chunks)
                    accs.append(ok / n)
                    bar.update(len(chunks))
                per[name] = {"severity": list(b.severities), "accuracy": accs}
            section = {"per_corruption": per, "mean_accuracy": float(np.mean([np.mean(p["accuracy"]) for p in per.values()]))}
            if baseline is not None:
                section.update(_relative_errors(section, report["clean_accuracy"], baseline))
            report["corruptions"] = section
            lap("corruptions")

        # ---------------------------------------------------------------- white box
        def curve(norm: str, epsilons: Sequence[float], key: int) -> dict[str, Any]:
            robust = clean_ok.clone()
            accs = [0.0] * len(epsilons)
            for i in sorted(range(len(epsilons)), key=epsilons.__getitem__):
                g = gen(1000 + key)
                for c in chunks:
                    adv = pgd(model, x_all[c], y_all[c], epsilons[i], steps=b.pgd_steps, norm=norm,
                              restarts=b.pgd_restarts, generator=g, eot_samples=eot, schedule=b.schedule)
                    robust[c] &= correct(adv, y_all[c])
                    bar.update(1)
                accs[i] = int(robust.sum()) / n
            return {"epsilon": list(epsilons), "accuracy": accs, "steps": b.pgd_steps, "restarts": b.pgd_restarts,
                    "schedule": b.schedule, "eot_samples": eot}

        if b.linf_epsilons:
            report["pgd_linf"] = curve("linf", b.linf_epsilons, 0)
            lap("pgd_linf")
            if b.fgsm:
                accs = []
                for e in b.linf_epsilons:
                    ok = 0
                    for c in chunks:
                        ok += int(correct(fgsm(model, x_all[c], y_all[c], e), y_all[c]).sum())
                        bar.update(1)
                    accs.append(ok / n)
                report["fgsm_linf"] = {"epsilon": list(b.linf_epsilons), "accuracy": accs}
                lap("fgsm_linf")
        if b.l2_epsilons:
            report["pgd_l2"] = curve("l2", b.l2_epsilons, 1)
            lap("pgd_l2")

        # ---------------------------------------------------------------- AutoAttack
        if b.autoattack_images > 0:
            m = min(n, b.autoattack_images)
            version = "rand" if stochastic else "standard"
            adv = autoattack(model, x_all[:m], y_all[:m], b.autoattack_epsilon, norm="linf", version=version,
                             seed=seed, batch_size=batch_size, eot_samples=max(eot, 2) if stochastic else 1)
            report["autoattack"] = {"epsilon": b.autoattack_epsilon, "norm": "linf", "version": version,
                                    "n_images": m, "accuracy": correct(adv, y_all[:m]).float().mean().item()}
            lap("autoattack")
        bar.update(1)

        # ---------------------------------------------------------------- minimal perturbation
        if b.minimal_images > 0:
            m = min(n, b.minimal_images)
            mp = {}
            for norm, eps_max in (("l2", b.minimal_l2_max), ("linf", b.minimal_linf_max)):
                r = minimal_epsilon(model, x_all[:m], y_all[:m], eps_max, norm=norm, steps=b.pgd_steps,
                                    search_steps=b.minimal_search_steps, generator=gen(2000), eot_samples=eot)
                vals = r.cpu().numpy()
                mp[norm] = {
                    "eps_max": eps_max, "n_images": m, "median": float(np.median(vals)) if np.isfinite(np.median(vals)) else None,
                    "not_flipped": int(np.isinf(vals).sum()),
                    "values": [float(v) if np.isfinite(v) else None for v in vals],
                }
            report["minimal_perturbation"] = mp
            lap("minimal_perturbation")
        bar.update(1)

        # ---------------------------------------------------------------- decision-based attack
        if b.decision_images > 0:
            m = min(n, b.decision_images)
            found = hop_skip_jump(model, x_all[:m], y_all[:m], b.decision_queries, generator=gen(5000),
                                  eot_samples=eot, batch_size=batch_size)
            vals = found.distance.cpu().numpy()
            med = float(np.median(vals))
            report["decision"] = {
                "attack": "hopskipjump", "norm": "l2", "n_images": m, "queries": b.decision_queries,
                "median": med if np.isfinite(med) else None, "not_found": int(np.isinf(vals).sum()),
                "queries_used_median": float(found.queries.float().median()),
                "values": [float(v) if np.isfinite(v) else None for v in vals],
            }
            lap("decision")
        bar.update(1)

        # ---------------------------------------------------------------- sanity checks
        checks: dict[str, dict[str, Any]] = {}
        if "pgd_linf" in report:
            checks["monotone_linf"] = sanity.monotone_in_epsilon(report["pgd_linf"]["epsilon"], report["pgd_linf"]["accuracy"])
        if "pgd_l2" in report:
            checks["monotone_l2"] = sanity.monotone_in_epsilon(report["pgd_l2"]["epsilon"], report["pgd_l2"]["accuracy"])
        if "fgsm_linf" in report:
            checks["pgd_vs_fgsm"] = sanity.pgd_stronger_than_fgsm(
                report["pgd_linf"]["epsilon"], report["pgd_linf"]["accuracy"], report["fgsm_linf"]["accuracy"])
        m = min(n, b.check_images)
        if b.large_epsilon is not None:
            adv = pgd(model, x_all[:m], y_all[:m], b.large_epsilon, steps=b.pgd_steps, generator=gen(3000),
                      eot_samples=eot)
            checks["large_epsilon"] = sanity.large_epsilon_breaks(correct(adv, y_all[:m]).float().mean().item(), b.large_epsilon)
        bar.update(1)
        if b.square_images > 0 and b.linf_epsilons:
            m_sq = min(n, b.square_images)
            eps = max(b.linf_epsilons)
            adv_sq = square_attack(model, x_all[:m_sq], y_all[:m_sq], eps, n_queries=b.square_queries, seed=seed)
            adv_wb = pgd(model, x_all[:m_sq], y_all[:m_sq], eps, steps=b.pgd_steps, restarts=b.pgd_restarts,
                         generator=gen(4000), eot_samples=eot, schedule=b.schedule)
            bb, wb = correct(adv_sq, y_all[:m_sq]).float().mean().item(), correct(adv_wb, y_all[:m_sq]).float().mean().item()
            report["square"] = {"epsilon": eps, "n_images": m_sq, "queries": b.square_queries, "accuracy": bb,
                                "pgd_accuracy_same_images": wb}
            checks["black_box"] = sanity.black_box_not_stronger(eps, wb, bb)
        bar.update(1)
        if "decision" in report and "l2" in report.get("minimal_perturbation", {}):
            wb = report["minimal_perturbation"]["l2"]
            checks["decision_vs_white_box"] = sanity.decision_not_closer(
                wb["values"], report["decision"]["values"], wb["eps_max"], wb["eps_max"] / 2**b.minimal_search_steps)
        checks["eot"] = sanity.stochastic_attacked_with_eot(stochastic, eot)
        checks["gradients"] = sanity.input_gradients(model, x_all[:m], y_all[:m])
        report["sanity"] = checks
        report["sanity_passed"] = sanity.all_passed(checks)
        lap("sanity")

        # ---------------------------------------------------------------- brain
        if recording is not None and brain_layers:
            report["brain"] = _brain(model, recording, brain_layers, brain_tier, x_all.shape[-1], seed)
            lap("brain")
        bar.update(1)
        report["timing_s"] = timing
    finally:
        bar.close()
        model.to(home)
        for module, training in modes.items():
            module.training = training
    return report


def _brain(model: nn.Module, recording: Any, layers: Sequence[str], tier: str | None, size: int, seed: int) -> dict[str, Any]:
    """Brain similarity section (see :func:`neuroreg.evaluation.brain.brain_similarity`)."""
    from neuroreg.evaluation.brain import brain_similarity

    return brain_similarity(model, recording, list(layers), tier=tier, image_size=size, seed=seed)
