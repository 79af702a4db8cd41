"""Measurements: each kind of evaluation is one object, and the suite runs a list of them.

A :class:`Measurement` knows

- its ``name``: the key of its section in the report (``"pgd_linf"``) and of its timing;
- the :class:`~neuroreg.evaluation.suite.Budget` fields it ``reads`` and whether the
  budget turns it on (:meth:`Measurement.enabled`);
- how to :meth:`~Measurement.run` on a :class:`Context` (the test images, the model, the
  seeded generators and the sections measured before it) and return its section;
- the flat ``eval/…`` scalars of its section (:meth:`~Measurement.scalars`), the sanity
  checks it contributes (:meth:`~Measurement.checks`), the cells it adds to comparison
  tables (:attr:`~Measurement.columns`) and to the printed summary;
- its ``label``, and for a curve (accuracy against a perturbation size) the section field
  on the x axis (``axis``) and that axis' label.

:func:`neuroreg.evaluation.suite.evaluate` runs the measurements of
:func:`~neuroreg.evaluation.suite.default_measurements` in order (clean first, brain last: the
order fixes which model calls draw from the global random state when the model is
stochastic). Reports, callbacks, comparisons and the reproduction tables read sections,
labels and curves from the same list. Adding an attack is adding one object to it.

Example:
    >>> m = PGD("linf")
    >>> m.name, m.label, m.axis
    ('pgd_linf', 'PGD L∞ (diagnostic)', 'epsilon')
    >>> m.scalars({"epsilon": [0.0, 8 / 255], "accuracy": [0.9, 0.1]})
    {'eval/pgd_linf_accuracy_eps=0': 0.9, 'eval/pgd_linf_accuracy_eps=0.0314': 0.1}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from neuroreg.evaluation import sanity
from neuroreg.evaluation.attacks.autoattack import APGD_MIN_CLASSES, apgd, autoattack
from neuroreg.evaluation.attacks.decision import decision_attack
from neuroreg.evaluation.attacks.gradient import fgsm, pgd
from neuroreg.evaluation.attacks.minimal import minimal_epsilon
from neuroreg.evaluation.attacks.square import square_attack
from neuroreg.evaluation.perturbations import corrupt, gaussian_noise

if TYPE_CHECKING:
    from neuroreg.evaluation.suite import Budget

Section = Any  # a JSON-serialisable value: a dict for most measurements, a float for clean accuracy
Check = dict[str, Any]  # a sanity flag {"passed": bool, "detail": str, ...}


def fmt(value: float) -> str:
    """Short, stable number format for metric names: 0.1 -> '0.1', 8/255 -> '0.0314'.

    >>> fmt(8 / 255), fmt(0.0), fmt(1.0)
    ('0.0314', '0', '1')
    """
    return f"{value:.3g}"


@dataclass
class Context:
    """What a measurement runs on: the test images, the model and what was measured before.

    Attributes:
        model: ``images [B, C, H, W] in [0, 1] -> logits``, in eval mode on the images' device.
        x: test images ``[n, C, H, W]`` in [0, 1]; y: labels ``[n]``.
        budget: the suite's :class:`~neuroreg.evaluation.suite.Budget`.
        seed: the evaluation seed (:meth:`gen`, AutoAttack and Square).
        batch_size: images per forward / attack batch.
        measurements: the list being run (a measurement may look at its neighbours).
        report: the report so far (sections of the measurements run before).
        baseline: a baseline run's report (corruption errors), or ``None``.
        recording, brain_layers, brain_tier: brain similarity inputs.
        force_eot: the caller's EOT sample count, or ``None`` (decided from the model).
        clean_ok: ``[n]`` bool, which images the model classifies correctly (set by :class:`Clean`).
        stochastic, eot_samples: whether the model is stochastic and the gradient
            samples per attack step (set by :class:`Clean`).
        step: advances the progress bar by its argument.
    """

    model: nn.Module
    x: Tensor
    y: Tensor
    budget: Budget
    seed: int = 0
    batch_size: int = 256
    measurements: Sequence[Measurement] = ()
    report: dict[str, Any] = field(default_factory=dict)
    baseline: Mapping[str, Any] | None = None
    recording: Any = None
    brain_layers: Sequence[str] = ()
    brain_tier: str | None = "test"
    force_eot: int | None = None
    clean_ok: Tensor | None = None
    stochastic: bool = False
    eot_samples: int = 1
    step: Callable[[int], Any] = lambda k: None

    @property
    def n(self) -> int:
        """Number of test images."""
        return len(self.y)

    @property
    def chunks(self) -> list[slice]:
        """Slices of ``batch_size`` images covering the test set."""
        return [slice(s, min(s + self.batch_size, self.n)) for s in range(0, self.n, self.batch_size)]

    def gen(self, k: int = 0) -> torch.Generator:
        """A fresh CPU generator for stream ``k`` of this seed (``seed · 1000003 + k``)."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + k)

    def correct(self, x: Tensor, y: Tensor) -> Tensor:
        """``[B]`` bool: whether the model's argmax on ``x`` equals ``y`` (no gradients)."""
        with torch.no_grad():
            return self.model(x).argmax(dim=1) == y

    def accuracy(self, transform: Callable[[Tensor, Tensor], Tensor]) -> float:
        """Test-set accuracy of the model on ``transform(x, y)``, batch by batch (one step per batch)."""
        ok = 0
        for c in self.chunks:
            ok += int(self.correct(transform(self.x[c], self.y[c]), self.y[c]).sum())
            self.step(1)
        return ok / self.n

    def record(self, measurement: Measurement) -> Section:
        """Run ``measurement``, store its section (and top-level fields) in the report, return it."""
        section = measurement.run(self)
        self.report[measurement.name] = section
        self.report.update(measurement.fields(section, self))
        return section


class Measurement:
    """One kind of evaluation. Subclasses set the class attributes and override :meth:`run`.

    Attributes:
        name: report section key (and timing key).
        label: human-readable name, for tables and plot titles.
        reads: the :class:`~neuroreg.evaluation.suite.Budget` fields it reads.
        axis: for a curve, the section field holding the x values (``"sigma"``,
            ``"epsilon"``); ``None`` otherwise.
        axis_label: label of that axis (``"PGD L∞ ε"``).
        axis_scale: x multiplier in the per-run robustness figure (255 for L∞ radii).
        panel: 0: not in the per-run robustness figure / comparison plot; 1: a panel
            when measured; 2: a panel the robustness figure requires.
        overlay: draw the curve into the panel of this measurement instead of its own.
        headline: scalar names, or prefixes ending in ``=`` (every strength but 0), shown
            in the reproduction's headline table.
        metric_labels: ``(scalar name fragment, readable)`` replacements for tables.
        columns: comparison-table columns it fills (:meth:`cells`).
        images: the Budget field counting the images it runs on (``None``: the test set).
        figure: file name of its own plot in the evaluation folder, or ``None``.
        nan_to_null: NaN / inf in its section are written as ``null`` (else rejected).
        parts: measurements it runs itself (inside its own :meth:`run`).
    """

    name: str = ""
    label: str = ""
    reads: tuple[str, ...] = ()
    axis: str | None = None
    axis_label: str = ""
    axis_scale: float = 1.0
    panel: int = 0
    overlay: str | None = None
    headline: tuple[str, ...] = ()
    metric_labels: tuple[tuple[str, str], ...] = ()
    columns: tuple[str, ...] = ()
    images: str | None = None
    figure: str | None = None
    nan_to_null: bool = False
    parts: tuple[Measurement, ...] = ()

    def enabled(self, ctx: Context) -> bool:
        """Whether the budget (and the context) turn this measurement on."""
        return True

    def work(self, budget: Budget, n_chunks: int) -> int:
        """Progress-bar steps :meth:`run` makes."""
        return 1

    def run(self, ctx: Context) -> Section:
        """Measure and return the section (JSON-serialisable)."""
        raise NotImplementedError

    def fields(self, section: Section, ctx: Context) -> dict[str, Any]:
        """Top-level report fields written after the section (e.g. ``stochastic``)."""
        return {}

    def scalars(self, section: Section) -> dict[str, float]:
        """Flat ``{"eval/…": value}`` scalars of the section, for loggers."""
        return {}

    def checks(self, section: Section, ctx: Context) -> dict[str, Check]:
        """Sanity checks that follow from the section alone (gathered by :class:`Sanity`)."""
        return {}

    def curve(self, section: Section) -> tuple[list[float], list[float]] | None:
        """``(x, accuracy)`` of a curve measurement, ``None`` without one."""
        if self.axis is None or not isinstance(section, Mapping) or self.axis not in section:
            return None
        return [float(v) for v in section[self.axis]], [float(a) for a in section["accuracy"]]

    def title(self, section: Section) -> str:
        """Panel title in the robustness figure."""
        return self.label

    def cells(self, section: Section) -> dict[str, float | bool | None]:
        """One value per comparison-table column (``columns``); numbers are averaged over
        seeds, booleans all-ed."""
        return {}

    def rows(self, section: Section) -> list[tuple[str, str, float]]:
        """``(condition, strength, accuracy)`` rows of the printed summary table."""
        return []

    def lines(self, section: Section) -> list[str]:
        """Free lines printed below the summary table."""
        return []

    def plot(self, report: Mapping[str, Any], path: Path) -> Path:
        """Write :attr:`figure` for ``report``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def flatten(measurements: Sequence[Measurement]) -> Iterator[Measurement]:
    """Every measurement of the list and the parts they run themselves, in order.

    >>> [m.name for m in flatten([Sanity(Square())])]
    ['sanity', 'square']
    """
    for m in measurements:
        yield m
        yield from flatten(m.parts)


def metrics_of(report: Mapping[str, Any], measurements: Sequence[Measurement]) -> dict[str, float]:
    """The union of the scalars of every measurement whose section ``report`` holds."""
    out: dict[str, float] = {}
    for m in flatten(measurements):
        if m.name in report:
            out.update(m.scalars(report[m.name]))
    return out


# ---------------------------------------------------------------------- clean


class Clean(Measurement):
    """Clean accuracy ``mean_i [argmax f(x_i) = y_i]``; also decides stochasticity and EOT.

    Its section is the accuracy itself (``report["clean_accuracy"]``); it sets
    ``ctx.clean_ok``, ``ctx.stochastic`` and ``ctx.eot_samples`` (``budget.eot_samples``
    for a stochastic model, else 1, unless forced) for the attacks after it.
    """

    name = "clean_accuracy"
    label = "clean"
    reads = ("eot_samples",)
    headline = ("eval/clean_accuracy",)
    columns = ("clean",)

    def work(self, budget: Budget, n_chunks: int) -> int:
        return n_chunks

    def run(self, ctx: Context) -> float:
        ctx.clean_ok = torch.cat([ctx.correct(ctx.x[c], ctx.y[c]) for c in ctx.chunks])
        ctx.step(len(ctx.chunks))
        accuracy = int(ctx.clean_ok.sum()) / ctx.n
        ctx.stochastic = sanity.is_stochastic(ctx.model, ctx.x[: min(ctx.n, 32)])
        forced = ctx.force_eot
        ctx.eot_samples = forced if forced is not None else (ctx.budget.eot_samples if ctx.stochastic else 1)
        return accuracy

    def fields(self, section: float, ctx: Context) -> dict[str, Any]:
        return {"stochastic": ctx.stochastic, "eot_samples": ctx.eot_samples}

    def scalars(self, section: float) -> dict[str, float]:
        return {"eval/clean_accuracy": float(section)}

    def cells(self, section: float) -> dict[str, float | bool | None]:
        return {"clean": section}

    def rows(self, section: float) -> list[tuple[str, str, float]]:
        return [("clean", "", section)]


# ---------------------------------------------------------------------- perturbations


class GaussianNoise(Measurement):
    """Accuracy under ``clip(x + σ ε)``, ``ε ~ N(0, I)``, the same draws for every σ (generator stream 1)."""

    name = "gaussian_noise"
    label = "Gaussian noise"
    reads = ("noise_sigmas",)
    axis = "sigma"
    axis_label = "Gaussian noise σ"
    panel = 2
    headline = ("eval/noise_accuracy_sigma=",)
    metric_labels = (("noise_accuracy_sigma=", "noise σ="),)

    def enabled(self, ctx: Context) -> bool:
        return bool(ctx.budget.noise_sigmas)

    def work(self, budget: Budget, n_chunks: int) -> int:
        return n_chunks * len(budget.noise_sigmas)

    def run(self, ctx: Context) -> dict[str, Any]:
        accs = []
        for sigma in ctx.budget.noise_sigmas:
            g = ctx.gen(1)  # common random numbers across σ
            accs.append(ctx.accuracy(lambda x, y, sigma=sigma, g=g: gaussian_noise(x, sigma, generator=g)))
        return {"sigma": list(ctx.budget.noise_sigmas), "accuracy": accs}

    def scalars(self, section: Mapping[str, Any]) -> dict[str, float]:
        return {f"eval/noise_accuracy_sigma={fmt(s)}": float(a) for s, a in zip(section["sigma"], section["accuracy"])}

    def rows(self, section: Mapping[str, Any]) -> list[tuple[str, str, float]]:
        return [("gaussian noise", f"σ={fmt(s)}", a) for s, a in zip(section["sigma"], section["accuracy"])]


def relative_errors(section: Mapping[str, Any], clean: float, baseline: Mapping[str, Any]) -> dict[str, Any]:
    """CE / relative CE per corruption against ``baseline`` (a report with the same corruptions).

    ``CE_c = Σ_s E_{c,s} / Σ_s E^{base}_{c,s}``, ``rCE_c = Σ_s (E_{c,s} − E_clean) /
    Σ_s (E^{base}_{c,s} − E^{base}_clean)`` (Hendrycks & Dietterich 2019), averaged into
    mCE and relative mCE; a corruption on which the baseline makes no error is ``None``.

    Raises:
        ValueError: the baseline lacks a corruption or measured other severities.
    """
    base_c = baseline.get("corruptions", {}).get("per_corruption", {})
    base_clean = float(baseline["clean_accuracy"])
    ce, rce = {}, {}
    for name, part in section["per_corruption"].items():
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


class Corruptions(Measurement):
    """Accuracy per common corruption and severity (generator stream ``100 + j`` for the j-th
    corruption), their mean, and CE / relative CE against a baseline report."""

    name = "corruptions"
    label = "common corruptions"
    reads = ("corruptions", "severities")
    axis = "severity"
    axis_label = "corruption severity (mean over corruptions)"
    headline = ("eval/mean_corruption_accuracy", "eval/relative_mce")
    columns = ("mean corruption acc.",)
    figure = "corruptions.png"
    #: prefix of the per-corruption scalars (accuracy averaged over severities)
    per_corruption = "eval/corruption/"

    def enabled(self, ctx: Context) -> bool:
        return bool(ctx.budget.corruptions)

    def work(self, budget: Budget, n_chunks: int) -> int:
        return n_chunks * len(budget.corruptions) * len(budget.severities)

    def run(self, ctx: Context) -> dict[str, Any]:
        per = {}
        for j, name in enumerate(ctx.budget.corruptions):
            accs = []
            for s in ctx.budget.severities:
                g = ctx.gen(100 + j)
                accs.append(ctx.accuracy(lambda x, y, name=name, s=s, g=g: corrupt(x, name, s, generator=g)))
            per[name] = {"severity": list(ctx.budget.severities), "accuracy": accs}
        section = {"per_corruption": per, "mean_accuracy": float(np.mean([np.mean(p["accuracy"]) for p in per.values()]))}
        if ctx.baseline is not None:
            section.update(relative_errors(section, ctx.report["clean_accuracy"], ctx.baseline))
        return section

    def scalars(self, section: Mapping[str, Any]) -> dict[str, float]:
        out = {"eval/mean_corruption_accuracy": float(section["mean_accuracy"])}
        for name, part in section["per_corruption"].items():
            out[f"{self.per_corruption}{name}"] = float(np.mean(part["accuracy"]))
        for key in ("mce", "relative_mce"):
            if section.get(key) is not None:
                out[f"eval/{key}"] = float(section[key])
        return out

    def curve(self, section: Mapping[str, Any]) -> tuple[list[float], list[float]] | None:
        per = list(section.get("per_corruption", {}).values())
        if not per:
            return None
        xs = list(per[0]["severity"])
        return xs, [float(np.mean([p["accuracy"][i] for p in per])) for i in range(len(xs))]

    def cells(self, section: Mapping[str, Any]) -> dict[str, float | bool | None]:
        return {"mean corruption acc.": section.get("mean_accuracy")}

    def rows(self, section: Mapping[str, Any]) -> list[tuple[str, str, float]]:
        return [("corruptions", "mean", section["mean_accuracy"])]

    def plot(self, report: Mapping[str, Any], path: Path) -> Path:
        from neuroreg.evaluation.report import plot_corruptions

        return plot_corruptions(report, path)


# ---------------------------------------------------------------------- white-box attacks


class PGD(Measurement):
    """Cumulative PGD accuracy over an ε grid: an image counts as robust at ε only if it is
    classified correctly clean and under every attack at every ε' <= ε (generator stream
    1000 for L∞, 1001 for L2; EOT for stochastic models).

    A diagnostic (few-step PGD overstates robust accuracy), drawn into the panel of the
    :class:`Ensemble` of its norm; the headline robust accuracy is the ensemble's."""

    axis = "epsilon"

    def __init__(self, norm: str) -> None:
        if norm not in ("linf", "l2"):
            raise ValueError(f"PGD: norm must be 'linf' or 'l2', found {norm!r}")
        self.norm = norm
        self.name = f"pgd_{norm}"
        self.stream = 1000 if norm == "linf" else 1001
        self.reads = (f"{norm}_epsilons", "pgd_steps", "pgd_restarts", "schedule", "eot_samples")
        sign = "L∞" if norm == "linf" else "L2"
        self.label = f"PGD {sign} (diagnostic)"
        self.axis_label = f"PGD {sign} ε"
        self.axis_scale = 255.0 if norm == "linf" else 1.0
        self.overlay = f"robust_{norm}"
        self.metric_labels = ((f"pgd_{norm}_accuracy_eps=", f"PGD {sign} ε="),)
        self.columns = ("PGD L∞ @ max ε",) if norm == "linf" else ()

    def epsilons(self, budget: Budget) -> tuple[float, ...]:
        return budget.linf_epsilons if self.norm == "linf" else budget.l2_epsilons

    def enabled(self, ctx: Context) -> bool:
        return bool(self.epsilons(ctx.budget))

    def work(self, budget: Budget, n_chunks: int) -> int:
        return n_chunks * len(self.epsilons(budget))

    def run(self, ctx: Context) -> dict[str, Any]:
        b, epsilons = ctx.budget, self.epsilons(ctx.budget)
        robust = ctx.clean_ok.clone()
        accs = [0.0] * len(epsilons)
        for i in sorted(range(len(epsilons)), key=epsilons.__getitem__):
            g = ctx.gen(self.stream)
            for c in ctx.chunks:
                adv = pgd(ctx.model, ctx.x[c], ctx.y[c], epsilons[i], steps=b.pgd_steps, norm=self.norm,
                          restarts=b.pgd_restarts, generator=g, eot_samples=ctx.eot_samples, schedule=b.schedule)
                robust[c] &= ctx.correct(adv, ctx.y[c])
                ctx.step(1)
            accs[i] = int(robust.sum()) / ctx.n
        return {"epsilon": list(epsilons), "accuracy": accs, "steps": b.pgd_steps, "restarts": b.pgd_restarts,
                "schedule": b.schedule, "eot_samples": ctx.eot_samples}

    def scalars(self, section: Mapping[str, Any]) -> dict[str, float]:
        return {f"eval/{self.name}_accuracy_eps={fmt(e)}": float(a) for e, a in zip(section["epsilon"], section["accuracy"])}

    def checks(self, section: Mapping[str, Any], ctx: Context) -> dict[str, Check]:
        return {f"monotone_{self.norm}": sanity.monotone_in_epsilon(section["epsilon"], section["accuracy"])}

    def title(self, section: Mapping[str, Any]) -> str:
        if "steps" in section and "restarts" in section:
            return f"{self.label} ({section['steps']} steps, {section['restarts']} restart(s))"
        return self.label

    def cells(self, section: Mapping[str, Any]) -> dict[str, float | bool | None]:
        if not self.columns:
            return {}
        return {self.columns[0]: section["accuracy"][int(np.argmax(section["epsilon"]))]}

    def rows(self, section: Mapping[str, Any]) -> list[tuple[str, str, float]]:
        label = f"pgd {self.norm}"
        if self.norm == "linf":
            return [(label, f"ε={fmt(e)} ({e * 255:.3g}/255)", a) for e, a in zip(section["epsilon"], section["accuracy"])]
        return [(label, f"ε={fmt(e)}", a) for e, a in zip(section["epsilon"], section["accuracy"])]


#: ensemble members: (name, APGD loss or None for the budget's PGD, label); for a
#: deterministic model AutoAttack's ``standard`` white-box pair, for a stochastic one its
#: ``rand`` pair (with EOT)
STANDARD_MEMBERS = (("pgd", None, "PGD"), ("apgd_ce", "ce", "APGD-CE"), ("apgd_t", "dlr-targeted", "APGD-T"))
RAND_MEMBERS = (("pgd", None, "PGD"), ("apgd_ce", "ce", "APGD-CE"), ("apgd_dlr", "dlr", "APGD-DLR"))


def ensemble_per_image(per_image: Mapping[str, Sequence[Sequence[int]]]) -> list[list[int]]:
    """The ensemble's per-image outcome ``[ε][image]`` (1: robust) from its members':
    robust only where every member failed.

    >>> ensemble_per_image({"pgd": [[1, 1, 0]], "apgd_ce": [[1, 0, 1]]})
    [[1, 0, 0]]
    """
    members = list(per_image.values())
    return [[int(all(m[i][j] for m in members)) for j in range(len(members[0][i]))] for i in range(len(members[0]))]


class Ensemble(Measurement):
    r"""Robust accuracy: per image the worst case over an attack ensemble, cumulative in ε.

    On the first ``robust_images`` images and for each ε of the norm's grid, image ``j``
    counts as robust at ε only if it is classified correctly clean and every member of
    the ensemble fails on it at every ε' <= ε:

    .. math::

        r_j(\epsilon) = [f(x_j) = y_j] \prod_{a} \prod_{\epsilon' \le \epsilon}
            [f(A_a(x_j, \epsilon')) = y_j], \qquad \mathrm{acc}(\epsilon) = \tfrac1m \sum_j r_j(\epsilon)

    The members: the budget's PGD (``pgd_steps``, ``pgd_restarts``, ``schedule``, EOT;
    generator stream 1010 for L∞, 1011 for L2) and AutoAttack's APGD-CE and APGD-T
    (``apgd_steps`` iterations, ``apgd_restarts``, ``apgd_targets`` target classes;
    :func:`~neuroreg.evaluation.attacks.autoattack.apgd`). For a stochastic model the
    ``rand`` flavour: APGD-CE and APGD-DLR with ``apgd_eot_samples`` EOT samples. A member
    whose loss the number of classes does not allow (APGD-T below 4 classes, APGD-DLR
    below 3) is left out and named under ``skipped``.

    The section: ``epsilon``, ``accuracy`` (the ensemble), ``members`` (``{member:
    [accuracy per ε]}``, each member alone, cumulative, on the same images),
    ``per_image`` (``{member: [[0/1 robust per image] per ε]}``; the ensemble is their
    product, :func:`ensemble_per_image`), ``n_images``, ``flavour`` and the strength.
    """

    axis = "epsilon"

    def __init__(self, norm: str) -> None:
        if norm not in ("linf", "l2"):
            raise ValueError(f"Ensemble: norm must be 'linf' or 'l2', found {norm!r}")
        self.norm = norm
        self.name = f"robust_{norm}"
        self.stream = 1010 if norm == "linf" else 1011
        self.reads = (f"{norm}_epsilons", "robust_images", "pgd_steps", "pgd_restarts", "schedule", "eot_samples",
                      "apgd_steps", "apgd_restarts", "apgd_targets", "apgd_eot_samples")
        sign = "L∞" if norm == "linf" else "L2"
        self.sign = sign
        self.label = f"robust {sign} (worst case over PGD, APGD-CE, APGD-T)"
        self.axis_label = f"{sign} ε (attack ensemble)"
        self.axis_scale = 255.0 if norm == "linf" else 1.0
        self.panel = 2 if norm == "linf" else 1
        self.headline = (f"eval/robust_{norm}_accuracy_eps=",)
        self.metric_labels = ((f"robust_{norm}_accuracy_eps=", f"robust {sign} ε="),
                              *((f"robust_{norm}/{m}_accuracy_eps=", f"{label} {sign} ε=")
                                for m, _, label in (*STANDARD_MEMBERS, RAND_MEMBERS[-1])))
        self.columns = (f"robust {sign} @ max ε",) if norm == "linf" else ()
        self.images = "robust_images"

    def epsilons(self, budget: Budget) -> tuple[float, ...]:
        return budget.linf_epsilons if self.norm == "linf" else budget.l2_epsilons

    def enabled(self, ctx: Context) -> bool:
        return bool(self.epsilons(ctx.budget))

    def work(self, budget: Budget, n_chunks: int) -> int:
        return 3 * len(self.epsilons(budget))

    def members(self, ctx: Context) -> tuple[tuple[str, str | None, str], ...]:
        """The members this model is attacked with (rand flavour for a stochastic model)."""
        return RAND_MEMBERS if ctx.stochastic else STANDARD_MEMBERS

    def attack(self, ctx: Context, loss: str | None, x: Tensor, y: Tensor, eps: float, gen: torch.Generator) -> Tensor:
        """Adversarial images of one member (``loss=None``: the budget's PGD) at ``eps``."""
        b = ctx.budget
        if loss is None:
            return pgd(ctx.model, x, y, eps, steps=b.pgd_steps, norm=self.norm, restarts=b.pgd_restarts,
                       generator=gen, eot_samples=ctx.eot_samples, schedule=b.schedule)
        eot = 1
        if ctx.stochastic:
            eot = b.apgd_eot_samples if ctx.force_eot is None else ctx.eot_samples
        return apgd(ctx.model, x, y, eps, norm=self.norm, loss=loss, steps=b.apgd_steps, restarts=b.apgd_restarts,
                    targets=b.apgd_targets, eot_samples=eot, seed=ctx.seed)

    def run(self, ctx: Context) -> dict[str, Any]:
        b, epsilons = ctx.budget, self.epsilons(ctx.budget)
        m = ctx.n if b.robust_images is None else min(ctx.n, b.robust_images)
        x, y = ctx.x[:m], ctx.y[:m]
        with torch.no_grad():
            n_classes = int(ctx.model(x[:1]).shape[1])
        members, skipped = [], {}
        for name, loss, label in self.members(ctx):
            if loss is not None and n_classes < APGD_MIN_CLASSES[loss]:
                skipped[name] = f"{label} needs >= {APGD_MIN_CLASSES[loss]} classes, the model has {n_classes}"
            else:
                members.append((name, loss))
        order = sorted(range(len(epsilons)), key=epsilons.__getitem__)
        per_image: dict[str, list[list[int]]] = {}
        for name, loss in members:
            robust = ctx.clean_ok[:m].clone()
            rows: list[list[int]] = [[] for _ in epsilons]
            gen = ctx.gen(self.stream)
            for i in order:
                todo = robust.nonzero().flatten()
                for s in range(0, len(todo), ctx.batch_size):
                    idx = todo[s: s + ctx.batch_size]
                    adv = self.attack(ctx, loss, x[idx], y[idx], epsilons[i], gen)
                    robust[idx] &= ctx.correct(adv, y[idx])
                rows[i] = [int(v) for v in robust.tolist()]
                ctx.step(1)
            per_image[name] = rows
        ensemble = ensemble_per_image(per_image)
        return {
            "epsilon": list(epsilons), "accuracy": [sum(r) / m for r in ensemble],
            "members": {name: [sum(r) / m for r in rows] for name, rows in per_image.items()},
            "per_image": per_image, "n_images": m, "flavour": "rand" if ctx.stochastic else "standard",
            "skipped": skipped, "pgd_steps": b.pgd_steps, "pgd_restarts": b.pgd_restarts,
            "apgd_steps": b.apgd_steps, "apgd_restarts": b.apgd_restarts, "apgd_targets": b.apgd_targets,
            "eot_samples": ctx.eot_samples,
        }

    def scalars(self, section: Mapping[str, Any]) -> dict[str, float]:
        out = {f"eval/{self.name}_accuracy_eps={fmt(e)}": float(a) for e, a in zip(section["epsilon"], section["accuracy"])}
        for member, accs in section["members"].items():
            out.update({f"eval/{self.name}/{member}_accuracy_eps={fmt(e)}": float(a)
                        for e, a in zip(section["epsilon"], accs)})
        return out

    def checks(self, section: Mapping[str, Any], ctx: Context) -> dict[str, Check]:
        return {
            f"monotone_{self.name}": sanity.monotone_in_epsilon(section["epsilon"], section["accuracy"]),
            f"{self.name}_stronger_members": sanity.stronger_attack_not_weaker(
                section["epsilon"], section["members"], weaker="pgd"),
            f"{self.name}_headline": sanity.headline_is_worst_case(
                section["epsilon"], section["accuracy"], section["members"]),
        }

    def title(self, section: Mapping[str, Any]) -> str:
        names = ", ".join(section.get("members", {})) or "no member"
        return f"robust {self.sign}: worst case over {names} (n={section.get('n_images', '?')})"

    def cells(self, section: Mapping[str, Any]) -> dict[str, float | bool | None]:
        if not self.columns:
            return {}
        return {self.columns[0]: section["accuracy"][int(np.argmax(section["epsilon"]))]}

    def rows(self, section: Mapping[str, Any]) -> list[tuple[str, str, float]]:
        def strength(e: float) -> str:
            return f"ε={fmt(e)} ({e * 255:.3g}/255)" if self.norm == "linf" else f"ε={fmt(e)}"

        out = [(f"robust {self.norm}", strength(e), a) for e, a in zip(section["epsilon"], section["accuracy"])]
        for member, accs in section["members"].items():
            out += [(f"  {member} {self.norm}", strength(e), a) for e, a in zip(section["epsilon"], accs)]
        return out


class FGSM(Measurement):
    """FGSM L∞ accuracy on the L∞ grid (one signed gradient step; no randomness)."""

    name = "fgsm_linf"
    label = "FGSM"
    reads = ("linf_epsilons", "fgsm")
    axis = "epsilon"
    axis_label = "FGSM L∞ ε"
    axis_scale = 255.0
    overlay = "robust_linf"
    metric_labels = (("fgsm_linf_accuracy_eps=", "FGSM L∞ ε="),)

    def enabled(self, ctx: Context) -> bool:
        return bool(ctx.budget.linf_epsilons) and ctx.budget.fgsm

    def work(self, budget: Budget, n_chunks: int) -> int:
        return n_chunks * len(budget.linf_epsilons)

    def run(self, ctx: Context) -> dict[str, Any]:
        epsilons = ctx.budget.linf_epsilons
        accs = [ctx.accuracy(lambda x, y, eps=eps: fgsm(ctx.model, x, y, eps)) for eps in epsilons]
        return {"epsilon": list(epsilons), "accuracy": accs}

    def scalars(self, section: Mapping[str, Any]) -> dict[str, float]:
        return {f"eval/fgsm_linf_accuracy_eps={fmt(e)}": float(a) for e, a in zip(section["epsilon"], section["accuracy"])}

    def checks(self, section: Mapping[str, Any], ctx: Context) -> dict[str, Check]:
        pgd_linf = ctx.report.get("pgd_linf")
        if pgd_linf is None:
            return {}
        return {"pgd_vs_fgsm": sanity.pgd_stronger_than_fgsm(pgd_linf["epsilon"], pgd_linf["accuracy"], section["accuracy"])}

    def rows(self, section: Mapping[str, Any]) -> list[tuple[str, str, float]]:
        return [("fgsm linf", f"ε={fmt(e)} ({e * 255:.3g}/255)", a) for e, a in zip(section["epsilon"], section["accuracy"])]


class AutoAttack(Measurement):
    """AutoAttack (``standard``; ``rand`` with EOT for a stochastic model) at one L∞ ε on
    the first ``autoattack_images`` images, seeded by the evaluation seed."""

    name = "autoattack"
    label = "AutoAttack"
    reads = ("autoattack_images", "autoattack_epsilon")
    headline = ("eval/autoattack_accuracy",)
    columns = ("AutoAttack",)
    images = "autoattack_images"

    def enabled(self, ctx: Context) -> bool:
        return ctx.budget.autoattack_images > 0

    def run(self, ctx: Context) -> dict[str, Any]:
        b = ctx.budget
        m = min(ctx.n, b.autoattack_images)
        version = "rand" if ctx.stochastic else "standard"
        adv = autoattack(ctx.model, ctx.x[:m], ctx.y[:m], b.autoattack_epsilon, norm="linf", version=version,
                         seed=ctx.seed, batch_size=ctx.batch_size,
                         eot_samples=max(ctx.eot_samples, 2) if ctx.stochastic else 1)
        ctx.step(1)
        return {"epsilon": b.autoattack_epsilon, "norm": "linf", "version": version, "n_images": m,
                "accuracy": ctx.correct(adv, ctx.y[:m]).float().mean().item()}

    def scalars(self, section: Mapping[str, Any]) -> dict[str, float]:
        return {"eval/autoattack_accuracy": float(section["accuracy"])}

    def cells(self, section: Mapping[str, Any]) -> dict[str, float | bool | None]:
        return {"AutoAttack": section.get("accuracy")}

    def rows(self, section: Mapping[str, Any]) -> list[tuple[str, str, float]]:
        return [(f"autoattack {section['version']}", f"ε={fmt(section['epsilon'])}", section["accuracy"])]


def _finite_or_none(values: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in values]


class MinimalPerturbation(Measurement):
    """Per image, the smallest L2 and L∞ radius at which PGD flips the prediction (binary
    search, generator stream 2000): median, count not flipped, the values."""

    name = "minimal_perturbation"
    label = "minimal perturbation"
    reads = ("minimal_images", "minimal_search_steps", "minimal_l2_max", "minimal_linf_max", "pgd_steps")
    headline = ("eval/minimal_l2_median",)
    columns = ("median min. L2",)
    images = "minimal_images"
    figure = "minimal_perturbation.png"

    def enabled(self, ctx: Context) -> bool:
        return ctx.budget.minimal_images > 0

    def run(self, ctx: Context) -> dict[str, Any]:
        b = ctx.budget
        m = min(ctx.n, b.minimal_images)
        out = {}
        for norm, eps_max in (("l2", b.minimal_l2_max), ("linf", b.minimal_linf_max)):
            r = minimal_epsilon(ctx.model, ctx.x[:m], ctx.y[:m], eps_max, norm=norm, steps=b.pgd_steps,
                                search_steps=b.minimal_search_steps, generator=ctx.gen(2000), eot_samples=ctx.eot_samples)
            vals = r.cpu().numpy()
            out[norm] = {
                "eps_max": eps_max, "n_images": m,
                "median": float(np.median(vals)) if np.isfinite(np.median(vals)) else None,
                "not_flipped": int(np.isinf(vals).sum()), "values": _finite_or_none(vals),
            }
        ctx.step(1)
        return out

    def scalars(self, section: Mapping[str, Any]) -> dict[str, float]:
        out = {}
        for norm in ("l2", "linf"):
            part = section.get(norm)
            if part and part.get("median") is not None:
                out[f"eval/minimal_{norm}_median"] = float(part["median"])
        return out

    def cells(self, section: Mapping[str, Any]) -> dict[str, float | bool | None]:
        return {"median min. L2": section.get("l2", {}).get("median")}

    def lines(self, section: Mapping[str, Any]) -> list[str]:
        out = []
        for norm, part in section.items():
            med = part["median"]
            out.append(f"  minimal {norm} perturbation: median {med if med is None else f'{med:.4g}'} (n={part['n_images']})")
        return out

    def plot(self, report: Mapping[str, Any], path: Path) -> Path:
        from neuroreg.evaluation.report import plot_minimal_perturbation

        return plot_minimal_perturbation(report, path)


class Decision(Measurement):
    """Per image, the L2 distance a decision-based attack (labels only; ``decision_attack``:
    HopSkipJump or the Boundary Attack, run by ART) reaches within ``decision_queries``
    label queries (generator stream 5000); stochastic models: a query is the majority vote
    of the EOT samples (:func:`~neuroreg.evaluation.attacks.decision.vote_labels`)."""

    name = "decision"
    label = "decision-based L2"
    reads = ("decision_images", "decision_queries", "decision_attack")
    headline = ("eval/decision_l2_median",)
    images = "decision_images"
    figure = "decision.png"

    def enabled(self, ctx: Context) -> bool:
        return ctx.budget.decision_images > 0

    def run(self, ctx: Context) -> dict[str, Any]:
        b = ctx.budget
        m = min(ctx.n, b.decision_images)
        attack = decision_attack(b.decision_attack)
        found = attack(ctx.model, ctx.x[:m], ctx.y[:m], b.decision_queries, generator=ctx.gen(5000),
                       eot_samples=ctx.eot_samples, batch_size=ctx.batch_size)
        vals = found.distance.cpu().numpy()
        med = float(np.median(vals))
        ctx.step(1)
        return {
            "attack": b.decision_attack, "norm": "l2", "n_images": m, "queries": b.decision_queries,
            "median": med if np.isfinite(med) else None, "not_found": int(np.isinf(vals).sum()),
            "queries_used_median": float(found.queries.float().median()), "values": _finite_or_none(vals),
        }

    def scalars(self, section: Mapping[str, Any]) -> dict[str, float]:
        if section.get("median") is None:
            return {}
        return {"eval/decision_l2_median": float(section["median"])}

    def checks(self, section: Mapping[str, Any], ctx: Context) -> dict[str, Check]:
        wb = ctx.report.get("minimal_perturbation", {}).get("l2")
        if wb is None:
            return {}
        return {"decision_vs_white_box": sanity.decision_not_closer(
            wb["values"], section["values"], wb["eps_max"], wb["eps_max"] / 2**ctx.budget.minimal_search_steps)}

    def lines(self, section: Mapping[str, Any]) -> list[str]:
        med = section["median"]
        return [f"  decision-based l2 ({section['attack']}, {section['queries']} queries): median {med if med is None else f'{med:.4g}'} "
                f"(n={section['n_images']}, {section['not_found']} not found)"]

    def plot(self, report: Mapping[str, Any], path: Path) -> Path:
        from neuroreg.evaluation.report import plot_decision

        return plot_decision(report, path)


class Square(Measurement):
    """The Square black-box attack at the largest L∞ ε of the grid on ``square_images``
    images, with PGD on the same images (generator stream 4000): a black-box attack
    stronger than the white-box one means gradient masking."""

    name = "square"
    label = "Square (black box)"
    reads = ("square_images", "square_queries", "linf_epsilons", "pgd_steps", "pgd_restarts", "schedule")
    images = "square_images"

    def enabled(self, ctx: Context) -> bool:
        return ctx.budget.square_images > 0 and bool(ctx.budget.linf_epsilons)

    def run(self, ctx: Context) -> dict[str, Any]:
        b = ctx.budget
        m = min(ctx.n, b.square_images)
        eps = max(b.linf_epsilons)
        x, y = ctx.x[:m], ctx.y[:m]
        adv_sq = square_attack(ctx.model, x, y, eps, n_queries=b.square_queries, seed=ctx.seed)
        adv_wb = pgd(ctx.model, x, y, eps, steps=b.pgd_steps, restarts=b.pgd_restarts, generator=ctx.gen(4000),
                     eot_samples=ctx.eot_samples, schedule=b.schedule)
        bb, wb = ctx.correct(adv_sq, y).float().mean().item(), ctx.correct(adv_wb, y).float().mean().item()
        ctx.step(1)
        return {"epsilon": eps, "n_images": m, "queries": b.square_queries, "accuracy": bb,
                "pgd_accuracy_same_images": wb}

    def checks(self, section: Mapping[str, Any], ctx: Context) -> dict[str, Check]:
        return {"black_box": sanity.black_box_not_stronger(section["epsilon"], section["pgd_accuracy_same_images"],
                                                           section["accuracy"])}


class Sanity(Measurement):
    """Flags against gradient masking and weak attacks (:mod:`~neuroreg.evaluation.sanity`).

    In order: the checks that the measurements before it derive from their sections
    (:meth:`Measurement.checks`: monotone curves, PGD vs FGSM, decision-based vs white
    box), the near-zero accuracy of PGD at ``large_epsilon`` (generator stream 3000) on
    ``check_images`` images, then its ``black_box`` part (:class:`Square`, run here and
    stored as its own section), EOT for stochastic models, and non-vanishing input
    gradients on the same images. Writes ``sanity_passed`` beside the section.
    """

    name = "sanity"
    label = "sanity checks"
    reads = ("large_epsilon", "check_images", "pgd_steps")
    columns = ("sanity",)
    images = "check_images"

    def __init__(self, black_box: Measurement | None = None) -> None:
        self.black_box = black_box
        self.parts = (black_box,) if black_box is not None else ()

    def work(self, budget: Budget, n_chunks: int) -> int:
        return 1 + (self.black_box.work(budget, n_chunks) if self.black_box is not None else 0)

    def run(self, ctx: Context) -> dict[str, Check]:
        b = ctx.budget
        checks: dict[str, Check] = {}
        for other in ctx.measurements:
            if other is not self and other.name in ctx.report:
                checks.update(other.checks(ctx.report[other.name], ctx))
        m = min(ctx.n, b.check_images)
        if b.large_epsilon is not None:
            adv = pgd(ctx.model, ctx.x[:m], ctx.y[:m], b.large_epsilon, steps=b.pgd_steps, generator=ctx.gen(3000),
                      eot_samples=ctx.eot_samples)
            checks["large_epsilon"] = sanity.large_epsilon_breaks(
                ctx.correct(adv, ctx.y[:m]).float().mean().item(), b.large_epsilon)
        ctx.step(1)
        if self.black_box is not None and self.black_box.enabled(ctx):
            checks.update(self.black_box.checks(ctx.record(self.black_box), ctx))
        checks["eot"] = sanity.stochastic_attacked_with_eot(ctx.stochastic, ctx.eot_samples)
        checks["gradients"] = sanity.input_gradients(ctx.model, ctx.x[:m], ctx.y[:m])
        return checks

    def fields(self, section: Mapping[str, Check], ctx: Context) -> dict[str, Any]:
        return {"sanity_passed": sanity.all_passed(section)}

    def scalars(self, section: Mapping[str, Check]) -> dict[str, float]:
        return {"eval/sanity_passed": float(sanity.all_passed(section))}

    def cells(self, section: Mapping[str, Check]) -> dict[str, float | bool | None]:
        return {"sanity": sanity.all_passed(section)}


class Brain(Measurement):
    """Brain similarity per layer (:func:`neuroreg.evaluation.brain.brain_similarity`):
    ridge and PLS predictivity, RSA and CKA; runs when a recording and layers are given."""

    name = "brain"
    label = "brain similarity"
    figure = "brain.png"
    nan_to_null = True

    def enabled(self, ctx: Context) -> bool:
        return ctx.recording is not None and bool(ctx.brain_layers)

    def run(self, ctx: Context) -> dict[str, Any]:
        from neuroreg.evaluation.brain import brain_similarity

        out = brain_similarity(ctx.model, ctx.recording, list(ctx.brain_layers), tier=ctx.brain_tier,
                               image_size=ctx.x.shape[-1], seed=ctx.seed)
        ctx.step(1)
        return out

    def scalars(self, section: Mapping[str, Any]) -> dict[str, float]:
        out = {}
        if not section:
            return out
        for i, layer in enumerate(section["layers"]):
            for key in ("ridge", "pls"):
                v = section[key]["score"][i]
                if v is not None and math.isfinite(v):
                    out[f"eval/brain/{layer}/{key}"] = float(v)
            out[f"eval/brain/{layer}/rsa"] = float(section["rsa"][i])
            out[f"eval/brain/{layer}/cka"] = float(section["cka"][i])
        return out

    def plot(self, report: Mapping[str, Any], path: Path) -> Path:
        from neuroreg.evaluation.report import plot_brain

        return plot_brain(report, path)


class RDMBrain(Measurement):
    """RSA per layer against a neural RDM over its images
    (:func:`neuroreg.evaluation.brain.rdm_similarity`): Spearman ρ with a bootstrap-over-images
    interval; runs when the budget names an RDM (``rsa_rdm``: an RDMTargets ``.h5`` or a
    data manifest) and layers (``rsa_layers``)."""

    name = "rsa_rdm"
    label = "RSA vs neural RDM"
    reads = ("rsa_rdm", "rsa_layers", "rsa_bootstrap")
    headline = ("eval/rsa_rdm=",)
    metric_labels = (("rsa_rdm=", "RSA vs RDM @"),)
    columns = ("RSA vs RDM (last layer)",)
    nan_to_null = True

    def enabled(self, ctx: Context) -> bool:
        return bool(ctx.budget.rsa_rdm) and bool(ctx.budget.rsa_layers)

    def run(self, ctx: Context) -> dict[str, Any]:
        from neuroreg.evaluation.brain import rdm_similarity

        b = ctx.budget
        out = rdm_similarity(ctx.model, b.rsa_rdm, list(b.rsa_layers), image_size=ctx.x.shape[-1],
                             n_bootstrap=b.rsa_bootstrap, seed=ctx.seed)
        ctx.step(1)
        return out

    def title(self, section: Mapping[str, Any]) -> str:
        return str(section.get("label") or self.label)

    def scalars(self, section: Mapping[str, Any]) -> dict[str, float]:
        out = {}
        for layer, score in zip(section["layers"], section["score"]):
            if score is not None and math.isfinite(score):
                out[f"eval/rsa_rdm={layer}"] = float(score)
        return out

    def cells(self, section: Mapping[str, Any]) -> dict[str, float | bool | None]:
        score = section["score"][-1] if section.get("score") else None
        return {self.columns[0]: score if score is not None and math.isfinite(score) else None}

    def lines(self, section: Mapping[str, Any]) -> list[str]:
        def one(layer, s, lo, hi) -> str:
            if s is None or not math.isfinite(s):
                return f"{layer} –"
            return f"{layer} {s:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else "")

        parts = [one(*v) for v in zip(section["layers"], section["score"], section["ci_low"], section["ci_high"])]
        return [f"{section.get('label', self.label)} ({section.get('method')}, {section.get('n_images')} images): "
                + ", ".join(parts) + f"; noise ceiling: {section.get('ceiling_reason') or section.get('ceiling')}"]
