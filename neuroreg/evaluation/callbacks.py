"""Lightning callbacks that evaluate a trained classifier."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from neuroreg.evaluation import sanity
from neuroreg.evaluation.measurements import Measurement, Sanity, flatten, fmt
from neuroreg.evaluation.report import write_outputs
from neuroreg.evaluation.suite import (
    SUITES,
    Budget,
    budget_for,
    default_measurements,
    evaluate,
    metrics,
)


def _check_values(name: str, values: Sequence[float], low: float, high: float) -> list[float]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValueError(f"RobustnessEvaluation: {name} must be a list of numbers, found {values!r}")
    values = list(values)
    if not values:
        raise ValueError(f"RobustnessEvaluation: {name} must hold at least one value, found []")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not low <= v <= high:
            raise ValueError(
                f"RobustnessEvaluation: every entry of {name} must be a number in [{low}, {high}], "
                f"found {v!r} in {values}"
            )
        out.append(float(v))
    names = [fmt(v) for v in out]
    if len(set(names)) != len(names):
        raise ValueError(
            f"RobustnessEvaluation: entries of {name} must be distinct at 3 significant digits "
            f"(they name the logged metrics), found {values} -> {names}"
        )
    return out


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"RobustnessEvaluation: {name} must be an integer >= {minimum}, found {value!r}")
    return value


class RobustnessEvaluation(pl.Callback):
    """At the end of ``fit``, run an evaluation suite on the test set and write the report.

    The suite (:mod:`neuroreg.evaluation.suite`) measures clean accuracy, Gaussian noise,
    common corruptions, PGD / FGSM curves, AutoAttack, minimal perturbations, a
    decision-based attack, sanity flags and brain similarity, as far as its
    :class:`~neuroreg.evaluation.suite.Budget` says.
    ``suite=None`` is the small default budget: Gaussian noise, PGD-L∞ and FGSM-L∞ plus
    the sanity checks that need no extra attack. Explicit arguments override the suite's
    budget.

    For the test images ``(x_i, y_i)``, ``i = 1..n`` (``n <= max_images``), with the model
    ``f`` in eval mode:

    - ``clean_accuracy = mean_i [argmax f(x_i) = y_i]``
    - noise accuracy at σ: ``mean_i [argmax f(clip(x_i + σ ε_i)) = y_i]``,
      ``ε_i ~ N(0, I)`` (the same draws for every σ: common random numbers)
    - robust L∞ accuracy at ε (the headline): the fraction of the first
      ``robust_images`` examples that are classified correctly at the clean image and
      that every member of the attack ensemble fails on at every ε' <= ε in the list
      (:class:`~neuroreg.evaluation.measurements.Ensemble`: the budget's PGD, APGD-CE and
      APGD-T at AutoAttack's strength; APGD-CE and APGD-DLR with EOT when the model is
      stochastic), with each member's accuracy and per-image outcomes beside it.
    - PGD-L∞ accuracy at ε (a diagnostic): the same cumulative count under
      :func:`neuroreg.evaluation.attacks.gradient.pgd` alone, with ``pgd_steps`` steps of
      size ``2.5 ε / steps``, random start, ``pgd_restarts`` restarts; with expectation
      over transformation when the model is stochastic.

    The datamodule's ``setup("test")`` is called, then ``test_dataloader()``; its batches
    are dicts ``{"image": [B, C, H, W] in [0, 1], "label": [B], ...}``. The module is
    evaluated on the strategy's root device, then returned to its device and
    per-submodule train/eval modes.

    Every rank evaluates the full test set (identical, seeded results; no collective
    calls inside); only global rank 0 writes files and prints. Under ``fast_dev_run``
    only ``fast_dev_run`` batches are evaluated and nothing is written or logged.

    Outputs (rank 0) in the run directory ``trainer.log_dir`` (else
    ``trainer.default_root_dir``): ``report.json`` (written last, with ``"complete":
    true``), ``robustness.png`` and the other plots of
    :func:`~neuroreg.evaluation.report.write_outputs`; scalars ``eval/clean_accuracy``,
    ``eval/noise_accuracy_sigma=<σ>``, ``eval/robust_linf_accuracy_eps=<ε>``, … to every
    logger at ``trainer.global_step``. A failed sanity check is printed as a banner. The
    report dict is also kept as ``self.report``.

    Args:
        suite: ``"quick"``, ``"standard"``, ``"full"`` or ``None`` (the small default).
        noise_sigmas: Gaussian noise standard deviations, each in [0, 1].
        pgd_epsilons: L∞ radii, each in [0, 1] (image units; 8/255 ≈ 0.0314).
        pgd_steps: PGD iterations (>= 1).
        pgd_restarts: random restarts per example (>= 1).
        robust_images: images attacked by the ensemble (>= 1; ``None``: the suite's,
            for the small default every evaluated image).
        max_images: evaluate at most this many test images (``None``: the suite's number).
        seed: seeds the noise, corruptions and attack start points.
        recording: path of a held-out NeuralRecording for brain similarity (with
            ``brain_layers``).
        brain_layers: backbone module paths, in depth order.

    Raises:
        ValueError: at construction, naming the bad argument.

    Example:
        >>> cb = RobustnessEvaluation(noise_sigmas=[0.0, 0.1], pgd_epsilons=[0.0, 2 / 255])
        >>> # pl.Trainer(callbacks=[cb]).fit(model, datamodule=dm); cb.report["clean_accuracy"]
    """

    def __init__(
        self,
        suite: str | None = None,
        noise_sigmas: Sequence[float] | None = None,
        pgd_epsilons: Sequence[float] | None = None,
        pgd_steps: int | None = None,
        pgd_restarts: int | None = None,
        robust_images: int | None = None,
        max_images: int | None = None,
        seed: int = 0,
        recording: str | None = None,
        brain_layers: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if suite is not None and suite not in SUITES:
            raise ValueError(f"RobustnessEvaluation: suite must be one of {sorted(SUITES)} or None, found {suite!r}")
        overrides: dict[str, Any] = {}
        if noise_sigmas is not None:
            overrides["noise_sigmas"] = tuple(_check_values("noise_sigmas", noise_sigmas, 0.0, 1.0))
        if pgd_epsilons is not None:
            overrides["linf_epsilons"] = tuple(_check_values("pgd_epsilons", pgd_epsilons, 0.0, 1.0))
        if pgd_steps is not None:
            overrides["pgd_steps"] = _check_int("pgd_steps", pgd_steps, 1)
        if pgd_restarts is not None:
            overrides["pgd_restarts"] = _check_int("pgd_restarts", pgd_restarts, 1)
        if robust_images is not None:
            overrides["robust_images"] = _check_int("robust_images", robust_images, 1)
        if max_images is not None:
            overrides["max_images"] = _check_int("max_images", max_images, 1)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"RobustnessEvaluation: seed must be an integer, found {seed!r}")
        self.suite = suite
        self.budget: Budget = budget_for(suite, **overrides) if suite else Budget(**overrides)
        self.seed = seed
        self.recording = recording
        self.brain_layers = list(brain_layers)
        if bool(recording) != bool(self.brain_layers):
            raise ValueError(
                "RobustnessEvaluation: recording and brain_layers go together (brain similarity needs both), "
                f"found recording={recording!r}, brain_layers={self.brain_layers}"
            )
        self.report: dict[str, Any] | None = None

    # ------------------------------------------------------------------ evaluation

    @staticmethod
    def metrics(report: Mapping[str, Any]) -> dict[str, float]:
        """Flat scalar metrics ``{"eval/…": value}`` of a report made by :meth:`evaluate`."""
        return metrics(report)

    def evaluate(
        self,
        model: nn.Module,
        loader: Iterable[Mapping[str, Any]],
        device: torch.device | str | None = None,
        max_batches: int | None = None,
        progress: bool = True,
    ) -> dict[str, Any]:
        """Evaluate ``model`` on ``loader`` and return the report dict (without ``checkpoint``).

        See :func:`neuroreg.evaluation.suite.evaluate`; ``model``'s modes and device are
        restored after.
        """
        return evaluate(
            model, loader, self.budget, seed=self.seed, device=device, max_batches=max_batches, progress=progress,
            recording=self.recording, brain_layers=self.brain_layers,
        )

    # ------------------------------------------------------------------ Lightning hook

    @staticmethod
    def _test_loader(trainer: pl.Trainer) -> Iterable[Mapping[str, Any]]:
        from pytorch_lightning.utilities.model_helpers import is_overridden

        dm = trainer.datamodule
        if dm is None:
            raise RuntimeError(
                "RobustnessEvaluation: trainer.datamodule is None; fit with "
                "trainer.fit(model, datamodule=...) using a LightningDataModule that defines test_dataloader()"
            )
        if not is_overridden("test_dataloader", dm, pl.LightningDataModule):
            raise RuntimeError(
                f"RobustnessEvaluation: the datamodule {type(dm).__name__} defines no test_dataloader(); "
                "the robustness evaluation runs on the test split"
            )
        dm.setup("test")
        loader = dm.test_dataloader()
        if isinstance(loader, (list, tuple)):
            if len(loader) != 1:
                raise RuntimeError(
                    f"RobustnessEvaluation: {type(dm).__name__}.test_dataloader() must return one "
                    f"loader, found {len(loader)}"
                )
            loader = loader[0]
        return loader

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Evaluate, store ``self.report``, log scalars, write plots then report.json (rank 0)."""
        loader = self._test_loader(trainer)
        run_dir = trainer.log_dir or trainer.default_root_dir  # collective call: every rank
        fast_dev_run = int(trainer.fast_dev_run) if trainer.fast_dev_run else None
        report = self.evaluate(
            pl_module, loader, device=trainer.strategy.root_device,
            max_batches=fast_dev_run, progress=trainer.is_global_zero,
        )
        checkpoint = trainer.checkpoint_callback
        path = getattr(checkpoint, "best_model_path", "") or getattr(checkpoint, "last_model_path", "")
        report["checkpoint"] = path or None
        report["complete"] = True
        self.report = report
        if not trainer.is_global_zero:
            return
        if fast_dev_run:
            print("neuroreg: fast_dev_run, robustness report not written")
            return

        for logger in trainer.loggers:
            logger.log_metrics(self.metrics(report), step=trainer.global_step)
        report_path = write_outputs(report, run_dir)
        print(f"neuroreg: robustness report written to {report_path}")
        print(table(report))
        banner = sanity.format_failures(report.get(Sanity.name, {}))
        if banner:
            print(banner)


def table(report: Mapping[str, Any], measurements: Sequence[Measurement] | None = None) -> str:
    """A plain-text summary table of a report: the rows and lines of each measured section
    (:meth:`~neuroreg.evaluation.measurements.Measurement.rows`), measurements in list order."""
    present = [m for m in flatten(default_measurements() if measurements is None else measurements) if m.name in report]
    rows = [row for m in present for row in m.rows(report[m.name])]
    lines = [f"  {'condition':<20}{'strength':<22}accuracy  (n={report['n_images']})"]
    lines += [f"  {c:<20}{s:<22}{a:.4f}" for c, s, a in rows]
    lines += [line for m in present for line in m.lines(report[m.name])]
    return "\n".join(lines)
