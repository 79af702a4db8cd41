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
- the robust accuracy over the L∞ and L2 ε grids: the per-image worst case over an
  attack ensemble (the budget's PGD, AutoAttack's APGD-CE and APGD-T; for a stochastic
  model APGD-CE and APGD-DLR with expectation over transformation), cumulative in ε (an
  example counts as robust at ε only if no member at any ε' <= ε broke it), with each
  member's accuracy and per-image outcomes beside it;
- PGD L∞ and L2 and FGSM L∞ over the same grids as diagnostics (few-step PGD alone
  overstates robust accuracy), with expectation over transformation when the model is
  stochastic;
- AutoAttack (``standard``, or ``rand`` for stochastic models) at one ε on a subset;
- the Square black-box attack at the same ε (sanity check);
- per-image minimal L2 (and L∞) perturbation by binary search over PGD: median + histogram;
- per-image L2 distance reached by a decision-based attack (labels only: HopSkipJump or the
  Boundary Attack, run by ART) within a query budget: median + histogram;
- sanity flags (:mod:`~neuroreg.evaluation.sanity`);
- brain similarity per layer when a recording and layers are given;
- RSA per layer against a neural RDM over its images (Spearman ρ, bootstrap interval over
  images) when the budget names one (``rsa_rdm``, ``rsa_layers``).

Each of these is one :class:`~neuroreg.evaluation.measurements.Measurement` in the list
:func:`default_measurements`; :func:`evaluate` runs those the budget turns on, in order,
and :func:`metrics` flattens their sections. Suites differ only in their :class:`Budget`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
import dataclasses
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from neuroreg.evaluation.attacks.autoattack import APGD_STANDARD
from neuroreg.evaluation.attacks.decision import DECISION_ATTACKS
from neuroreg.evaluation.measurements import (
    FGSM,
    PGD,
    AutoAttack,
    Brain,
    Clean,
    Context,
    Corruptions,
    Decision,
    Ensemble,
    GaussianNoise,
    Measurement,
    MinimalPerturbation,
    RDMBrain,
    Sanity,
    Square,
    metrics_of,
)
from neuroreg.evaluation.perturbations import CORRUPTIONS


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
        decision_images, decision_queries, decision_attack: the decision-based L2 attack:
            images, label queries per image, and which attack (a key of
            :data:`~neuroreg.evaluation.attacks.decision.DECISION_ATTACKS`: ``"hopskipjump"``
            or ``"boundary"``, the Boundary Attack Li et al. 2019 used).
        large_epsilon: the "near-zero accuracy" check (L∞), on ``check_images`` images.
        robust_images: images of the robust accuracy (the per-image worst case over the
            attack ensemble, :class:`~neuroreg.evaluation.measurements.Ensemble`) on the
            L∞ and L2 grids: the first ones of the evaluated images (``None``: all; >= 1).
        apgd_steps, apgd_restarts, apgd_targets, apgd_eot_samples: strength of the
            ensemble's APGD members (iterations, restarts, APGD-T target classes, EOT
            samples for stochastic models); never below AutoAttack's own
            (:data:`~neuroreg.evaluation.attacks.autoattack.APGD_STANDARD`).
        rsa_rdm, rsa_layers, rsa_bootstrap: RSA against a neural RDM over its images
            (:class:`~neuroreg.evaluation.measurements.RDMBrain`): an RDMTargets ``.h5``
            path or a data manifest name (``kriegeskorte2008-it92``, converted on demand),
            the backbone layers, and the bootstrap resamples of its interval (0: none).

    Raises:
        ValueError: a field out of range (ε outside [0, 1] for L∞, a negative L2 ε, an
            unknown corruption or severity), or an ensemble weaker than AutoAttack's;
            the message names the field, what was expected and what was found.
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
    decision_attack: str = "hopskipjump"
    large_epsilon: float | None = None
    check_images: int = 100
    robust_images: int | None = 16
    apgd_steps: int = APGD_STANDARD["steps"]
    apgd_restarts: int = APGD_STANDARD["restarts"]
    apgd_targets: int = APGD_STANDARD["targets"]
    apgd_eot_samples: int = APGD_STANDARD["eot_samples"]
    rsa_rdm: str | None = None
    rsa_layers: tuple[str, ...] = ()
    rsa_bootstrap: int = 1000

    def __post_init__(self) -> None:
        validate_budget(self)


#: the Budget fields that set the attack ensemble's strength (floored at AutoAttack's own)
ENSEMBLE_STRENGTH = tuple(f"apgd_{key}" for key in APGD_STANDARD)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _grid(budget: Budget, name: str, low: float, high: float) -> None:
    values = getattr(budget, name)
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"Budget: field '{name}' must be a list of numbers, found {values!r}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not low <= v <= high:
            raise ValueError(f"Budget: every entry of field '{name}' must be a number in [{low}, {high}], "
                             f"found {v!r} in {list(values)}")


def validate_budget(budget: Budget) -> None:
    """Check a :class:`Budget` when it is made (before any model is attacked).

    Grids: ``linf_epsilons`` and ``large_epsilon`` in [0, 1], ``l2_epsilons`` >= 0,
    ``noise_sigmas`` >= 0; ``corruptions`` from
    :data:`~neuroreg.evaluation.perturbations.CORRUPTIONS`, ``severities`` in 1..5. The
    attack ensemble: ``robust_images`` ``None`` or >= 1, ``pgd_steps`` >= 0, ``pgd_restarts``
    >= 1, and the APGD fields at least AutoAttack's
    (:data:`~neuroreg.evaluation.attacks.autoattack.APGD_STANDARD`): a budget may cut
    images and ε values, never the strength of the attack behind the robust accuracy.

    Raises:
        ValueError: naming the field, what was expected and what was found.

    >>> validate_budget(Budget(apgd_steps=10))
    Traceback (most recent call last):
    ...
    ValueError: Budget: field 'apgd_steps' sets the attack ensemble's strength and must be an integer >= 100 (AutoAttack's), found 10
    """
    _grid(budget, "linf_epsilons", 0.0, 1.0)
    _grid(budget, "l2_epsilons", 0.0, math.inf)
    _grid(budget, "noise_sigmas", 0.0, math.inf)
    unknown = [c for c in budget.corruptions if c not in CORRUPTIONS]
    if isinstance(budget.corruptions, str) or unknown:
        raise ValueError(f"Budget: field 'corruptions' must list names from {list(CORRUPTIONS)}, "
                         f"found unknown {unknown or budget.corruptions!r}")
    bad = [s for s in budget.severities if not _is_int(s) or not 1 <= s <= 5]
    if bad:
        raise ValueError(f"Budget: field 'severities' must hold integers in 1..5, found {bad}")
    le = budget.large_epsilon
    if le is not None and (isinstance(le, bool) or not isinstance(le, (int, float)) or not 0 < le <= 1):
        raise ValueError(f"Budget: field 'large_epsilon' must be None or a number in (0, 1], found {le!r}")
    ri = budget.robust_images
    if ri is not None and (not _is_int(ri) or ri < 1):
        raise ValueError(f"Budget: field 'robust_images' must be None (every image) or an integer >= 1 "
                         f"(the attack ensemble cannot be turned off), found {ri!r}")
    for name, low in (("pgd_steps", 0), ("pgd_restarts", 1)):
        v = getattr(budget, name)
        if not _is_int(v) or v < low:
            raise ValueError(f"Budget: field '{name}' must be an integer >= {low}, found {v!r}")
    if budget.decision_attack not in DECISION_ATTACKS:
        raise ValueError(f"Budget.decision_attack: expected one of {sorted(DECISION_ATTACKS)}, "
                         f"found {budget.decision_attack!r}")
    if bool(budget.rsa_rdm) != bool(budget.rsa_layers) or isinstance(budget.rsa_layers, str):
        raise ValueError(f"Budget: fields 'rsa_rdm' and 'rsa_layers' go together (an RDM and a list of backbone layers), "
                         f"found rsa_rdm={budget.rsa_rdm!r}, rsa_layers={budget.rsa_layers!r}")
    if not _is_int(budget.rsa_bootstrap) or budget.rsa_bootstrap < 0:
        raise ValueError(f"Budget: field 'rsa_bootstrap' must be an integer >= 0, found {budget.rsa_bootstrap!r}")
    for key, floor in APGD_STANDARD.items():
        name = f"apgd_{key}"
        v = getattr(budget, name)
        if not _is_int(v) or v < floor:
            raise ValueError(f"Budget: field '{name}' sets the attack ensemble's strength and must be an integer "
                             f">= {floor} (AutoAttack's), found {v!r}")


_LINF = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255)
_L2 = (0.0, 0.25, 0.5, 1.0, 2.0)

#: the three suites; they differ only in budgets. Each runs the attack ensemble at AutoAttack's
#: strength; ``quick`` on 16 images (APGD-T costs up to 900 gradient steps per image and ε, so
#: on 2 CPU cores the quick suite can afford only a few), ``standard`` on 200, ``full`` on all
SUITES: dict[str, Budget] = {
    "quick": Budget(
        max_images=128, noise_sigmas=(0.0, 0.1, 0.2, 0.3), corruptions=CORRUPTIONS, severities=(1, 3, 5),
        linf_epsilons=(0.0, 2 / 255, 4 / 255, 8 / 255, 16 / 255), l2_epsilons=(0.0, 0.5, 1.0, 2.0), pgd_steps=10,
        pgd_restarts=1, eot_samples=4, autoattack_images=0, square_images=32, square_queries=100, minimal_images=32,
        minimal_search_steps=5, decision_images=16, decision_queries=300, large_epsilon=0.5, check_images=64,
        robust_images=16,
    ),
    "standard": Budget(
        max_images=1000, noise_sigmas=(0.0, 0.05, 0.1, 0.2, 0.3, 0.4), corruptions=CORRUPTIONS,
        linf_epsilons=_LINF, l2_epsilons=_L2, pgd_steps=20, pgd_restarts=2, eot_samples=10,
        autoattack_images=200, square_images=200, square_queries=1000, minimal_images=200, minimal_search_steps=8,
        decision_images=100, decision_queries=1000, large_epsilon=0.5, check_images=200, robust_images=200,
    ),
    "full": Budget(
        max_images=None, noise_sigmas=(0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5), corruptions=CORRUPTIONS,
        linf_epsilons=(0.0, 0.5 / 255, *_LINF[1:], 32 / 255), l2_epsilons=(*_L2, 4.0), pgd_steps=50,
        pgd_restarts=5, schedule="cosine", eot_samples=20, autoattack_images=1000, square_images=1000,
        square_queries=5000, minimal_images=1000, minimal_search_steps=10, decision_images=500,
        decision_queries=5000, large_epsilon=0.5, check_images=500, robust_images=None,
    ),
}


def budget_for(suite: str, **overrides: Any) -> Budget:
    """The budget of ``suite`` with ``overrides`` (``None`` values ignored), validated
    (:func:`validate_budget`).

    Raises:
        ValueError: unknown suite (lists the known ones), an unknown field, or a field out
            of range.
    """
    if suite not in SUITES:
        raise ValueError(f"suite: expected one of {sorted(SUITES)}, found {suite!r}")
    fields = {f.name for f in dataclasses.fields(Budget)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"Budget: expected fields from {sorted(fields)}, found unknown {unknown}")
    return replace(SUITES[suite], **{k: v for k, v in overrides.items() if v is not None})


def default_measurements() -> list[Measurement]:
    """The measurements a suite runs, in order (a fresh list; pass a custom one to :func:`evaluate`).

    Clean accuracy, Gaussian noise, corruptions, PGD L∞ (diagnostic), FGSM L∞, PGD L2
    (diagnostic), the robust accuracy on the L∞ and L2 grids (the per-image worst case
    over the attack ensemble: PGD, APGD-CE, APGD-T), AutoAttack, minimal perturbation, the decision-based attack, the sanity checks (running the
    Square black-box attack inside), RSA against an RDM and brain similarity. Each runs when the budget turns
    it on (:meth:`~neuroreg.evaluation.measurements.Measurement.enabled`).

    >>> [m.name for m in default_measurements()][:4]
    ['clean_accuracy', 'gaussian_noise', 'corruptions', 'pgd_linf']
    """
    return [
        Clean(), GaussianNoise(), Corruptions(), PGD("linf"), FGSM(), PGD("l2"), Ensemble("linf"), Ensemble("l2"),
        AutoAttack(), MinimalPerturbation(), Decision(), Sanity(black_box=Square()), RDMBrain(), Brain(),
    ]


def metrics(report: Mapping[str, Any], measurements: Sequence[Measurement] | None = None) -> dict[str, float]:
    """Flat scalars ``{"eval/…": value}`` of a report, for Lightning loggers: the union of the
    scalars of the measurements (default: :func:`default_measurements`) whose section it holds.

    >>> metrics({"clean_accuracy": 0.5, "gaussian_noise": {"sigma": [0.1], "accuracy": [0.25]}})
    {'eval/clean_accuracy': 0.5, 'eval/noise_accuracy_sigma=0.1': 0.25}
    """
    return metrics_of(report, default_measurements() if measurements is None else measurements)


def check_brain_layers(model: nn.Module, layers: Sequence[str]) -> None:
    """Refuse brain-similarity layers that are not module paths of ``model``'s backbone
    (``model.backbone`` when present, else ``model``), before anything is measured.

    Raises:
        ValueError: naming the unknown layers and some of the known module paths.
    """
    module = getattr(model, "backbone", model)
    known = [name for name, _ in module.named_modules() if name]
    unknown = [layer for layer in layers if layer not in known]
    if unknown:
        shown = ", ".join(known[:12]) + (", …" if len(known) > 12 else "")
        raise ValueError(f"brain_layers: expected module paths of the {type(module).__name__} ({shown}), "
                         f"found unknown {unknown}")


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
    measurements: Sequence[Measurement] | None = None,
) -> dict[str, Any]:
    """Run the measurements ``budget`` turns on and return the report dict (without ``complete``).

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
        recording, brain_layers, brain_tier: brain similarity (both needed to run it); the
            layers are checked against the model (:func:`check_brain_layers`) before any
            measurement runs.
        eot_samples: force the EOT samples (default: ``budget.eot_samples`` if the model is
            stochastic, else 1); forcing 1 on a stochastic model trips a sanity flag.
        measurements: what to run, in order (default: :func:`default_measurements`); the first
            must set the clean accuracy and EOT samples the attacks read
            (:class:`~neuroreg.evaluation.measurements.Clean`).

    Returns:
        The report: ``n_images``, ``seed``, ``budget``, then per measurement its section
        under its name (with ``clean_accuracy``, ``stochastic``, ``eot_samples``,
        ``sanity_passed`` at the top level) and ``timing_s`` (seconds per measurement).

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).eval()
        >>> batch = {"image": torch.rand(8, 1, 4, 4), "label": torch.randint(0, 2, (8,))}
        >>> r = evaluate(net, [batch], Budget(noise_sigmas=(0.0, 0.1), linf_epsilons=(0.0, 0.1), pgd_steps=2),
        ...              progress=False)
        >>> sorted(k for k in r if k not in ("budget", "timing_s"))[:4]
        ['clean_accuracy', 'eot_samples', 'fgsm_linf', 'gaussian_noise']
    """
    from tqdm import tqdm

    todo = default_measurements() if measurements is None else list(measurements)
    if recording is not None and brain_layers:
        check_brain_layers(model, brain_layers)
    if budget.rsa_rdm and budget.rsa_layers:
        check_brain_layers(model, budget.rsa_layers)
    params = [p for p in model.parameters() if torch.is_floating_point(p)]
    home = params[0].device if params else torch.device("cpu")
    dtype = params[0].dtype if params else torch.float32
    device = torch.device(device) if device is not None else home
    modes = {m: m.training for m in model.modules()}
    x_all, y_all = _collect(loader, budget.max_images, max_batches)
    x_all, y_all = x_all.to(device=device, dtype=dtype), y_all.to(device)
    if x_all.min() < 0 or x_all.max() > 1:
        raise ValueError(
            f"evaluation: test images must lie in [0, 1], found [{x_all.min().item():.4g}, {x_all.max().item():.4g}]"
        )
    report: dict[str, Any] = {"n_images": len(y_all), "seed": seed, "budget": json.loads(json.dumps(asdict(budget)))}
    ctx = Context(
        model=model, x=x_all, y=y_all, budget=budget, seed=seed, batch_size=batch_size, measurements=todo,
        report=report, baseline=baseline, recording=recording, brain_layers=brain_layers, brain_tier=brain_tier,
        force_eot=eot_samples,
    )
    n_chunks = len(ctx.chunks)
    bar = tqdm(total=sum(m.work(budget, n_chunks) for m in todo), desc="neuroreg evaluation", disable=not progress,
               leave=False)
    ctx.step = bar.update
    timing: dict[str, float] = {}
    model.to(device)
    model.eval()
    try:
        for m in todo:
            if not m.enabled(ctx):
                continue
            start = time.perf_counter()
            ctx.record(m)
            timing[m.name] = round(time.perf_counter() - start, 3)
        report["timing_s"] = timing
    finally:
        bar.close()
        model.to(home)
        for module, training in modes.items():
            module.training = training
    return report
