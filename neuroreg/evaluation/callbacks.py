"""Lightning callbacks that evaluate a trained classifier."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from neuroreg.evaluation.attacks import pgd
from neuroreg.evaluation.perturbations import gaussian_noise
from neuroreg.evaluation.report import PLOT_NAME, plot_robustness, write_report


def _fmt(value: float) -> str:
    """Short, stable number format for metric names: 0.1 -> '0.1', 8/255 -> '0.0314'."""
    return f"{value:.3g}"


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
    names = [_fmt(v) for v in out]
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
    """At the end of ``fit``, measure accuracy on the test set: clean, under Gaussian
    noise, and under a PGD-L∞ attack; write ``report.json`` + ``robustness.png``.

    For the test images ``(x_i, y_i)``, ``i = 1..n`` (``n <= max_images``), with the model
    ``f`` in eval mode:

    - ``clean_accuracy = mean_i [argmax f(x_i) = y_i]``
    - noise accuracy at σ: ``mean_i [argmax f(clip(x_i + σ ε_i)) = y_i]``,
      ``ε_i ~ N(0, I)`` (the same draws for every σ: common random numbers)
    - PGD-L∞ accuracy at ε: the fraction of examples that are classified correctly at
      the clean image and at every adversarial image found for every ε' <= ε in the
      list (an attack found inside a smaller ball also lies inside the larger one, so
      the reported curve is an upper bound on robust accuracy, monotone in ε).
      :func:`neuroreg.evaluation.attacks.pgd` with ``pgd_steps`` steps of size
      ``2.5 ε / steps``, random start, ``pgd_restarts`` restarts.

    The datamodule's ``setup("test")`` is called, then ``test_dataloader()``; its batches
    are dicts ``{"image": [B, C, H, W] in [0, 1], "label": [B], ...}``. The module is
    evaluated on the strategy's root device (Lightning has moved it to the CPU before
    ``on_fit_end``), then returned to its device and per-submodule train/eval modes.

    Every rank evaluates the full test set (identical, seeded results; no collective
    calls inside); only global rank 0 writes files and prints. Under ``fast_dev_run``
    only ``fast_dev_run`` batches are evaluated and nothing is written or logged.

    Outputs (rank 0) in the run directory ``trainer.log_dir`` (else
    ``trainer.default_root_dir``): ``report.json`` (see :mod:`neuroreg.evaluation.report`),
    ``robustness.png``; scalars ``eval/clean_accuracy``, ``eval/noise_accuracy_sigma=<σ>``,
    ``eval/pgd_linf_accuracy_eps=<ε>`` to every logger at ``trainer.global_step``. The
    report dict is also kept as ``self.report``.

    Args:
        noise_sigmas: Gaussian noise standard deviations, each in [0, 1].
        pgd_epsilons: L∞ radii, each in [0, 1] (image units; 8/255 ≈ 0.0314).
        pgd_steps: PGD iterations (>= 1).
        pgd_restarts: random restarts per example (>= 1).
        max_images: evaluate at most this many test images (``None``: all).
        seed: seeds the noise and the PGD start points.

    Raises:
        ValueError: at construction, naming the bad argument.

    Example:
        >>> cb = RobustnessEvaluation(noise_sigmas=[0.0, 0.1], pgd_epsilons=[0.0, 2 / 255])
        >>> # pl.Trainer(callbacks=[cb]).fit(model, datamodule=dm); cb.report["clean_accuracy"]
    """

    def __init__(
        self,
        noise_sigmas: Sequence[float] = (0.0, 0.05, 0.1, 0.2, 0.3),
        pgd_epsilons: Sequence[float] = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255),
        pgd_steps: int = 10,
        pgd_restarts: int = 1,
        max_images: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.noise_sigmas = _check_values("noise_sigmas", noise_sigmas, 0.0, 1.0)
        self.pgd_epsilons = _check_values("pgd_epsilons", pgd_epsilons, 0.0, 1.0)
        self.pgd_steps = _check_int("pgd_steps", pgd_steps, 1)
        self.pgd_restarts = _check_int("pgd_restarts", pgd_restarts, 1)
        self.max_images = None if max_images is None else _check_int("max_images", max_images, 1)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"RobustnessEvaluation: seed must be an integer, found {seed!r}")
        self.seed = seed
        self.report: dict[str, Any] | None = None

    # ------------------------------------------------------------------ evaluation

    def metrics(self, report: Mapping[str, Any]) -> dict[str, float]:
        """Flat scalar metrics ``{"eval/…": value}`` of a report made by :meth:`evaluate`."""
        out = {"eval/clean_accuracy": float(report["clean_accuracy"])}
        noise = report["gaussian_noise"]
        for sigma, acc in zip(noise["sigma"], noise["accuracy"]):
            out[f"eval/noise_accuracy_sigma={_fmt(sigma)}"] = float(acc)
        attack = report["pgd_linf"]
        for eps, acc in zip(attack["epsilon"], attack["accuracy"]):
            out[f"eval/pgd_linf_accuracy_eps={_fmt(eps)}"] = float(acc)
        return out

    def evaluate(
        self,
        model: nn.Module,
        loader: Iterable[Mapping[str, Any]],
        device: torch.device | str | None = None,
        max_batches: int | None = None,
        progress: bool = True,
    ) -> dict[str, Any]:
        """Evaluate ``model`` on ``loader`` and return the report dict (without ``checkpoint``).

        Args:
            model: ``images [B, C, H, W] in [0, 1] -> logits [B, classes]``. Put in eval mode
                and on ``device`` for the evaluation; its modes and device are restored after.
            loader: iterable of dict batches with ``"image"`` and ``"label"``.
            device: where to evaluate; ``None``: the model's current device.
            max_batches: stop after this many batches (``None``: no limit).
            progress: show a tqdm progress bar.

        Returns:
            ``{"clean_accuracy", "gaussian_noise": {"sigma", "accuracy"}, "pgd_linf":
            {"epsilon", "accuracy", "steps", "restarts"}, "n_images", "seed"}``.

        Raises:
            ValueError: if a batch is not a dict with ``image`` and ``label``, or the loader
                yields no images.
        """
        from tqdm import tqdm

        params = [p for p in model.parameters() if torch.is_floating_point(p)]
        home = params[0].device if params else torch.device("cpu")
        dtype = params[0].dtype if params else torch.float32
        device = torch.device(device) if device is not None else home
        modes = {m: m.training for m in model.modules()}

        noise_gens = [torch.Generator().manual_seed(self.seed) for _ in self.noise_sigmas]
        eps_order = sorted(range(len(self.pgd_epsilons)), key=self.pgd_epsilons.__getitem__)
        pgd_gens = [torch.Generator().manual_seed(self.seed) for _ in self.pgd_epsilons]
        n = clean_correct = 0
        noise_correct = [0] * len(self.noise_sigmas)
        pgd_correct = [0] * len(self.pgd_epsilons)

        total = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
        if max_batches is not None and total is not None:
            total = min(total, max_batches)
        bar = tqdm(total=total, desc="neuroreg robustness evaluation", disable=not progress, leave=False)
        model.to(device)
        model.eval()
        try:
            for batch_idx, batch in enumerate(loader):
                if max_batches is not None and batch_idx >= max_batches:
                    break
                if self.max_images is not None and n >= self.max_images:
                    break
                x, y = self._unpack(batch, batch_idx)
                if self.max_images is not None:
                    x, y = x[: self.max_images - n], y[: self.max_images - n]
                x, y = x.to(device=device, dtype=dtype), y.to(device=device)
                n += y.shape[0]

                with torch.no_grad():
                    clean_ok = self._correct(model, x, y)
                    clean_correct += int(clean_ok.sum())
                    for i, sigma in enumerate(self.noise_sigmas):
                        noisy = gaussian_noise(x, sigma, generator=noise_gens[i])
                        noise_correct[i] += int(self._correct(model, noisy, y).sum())

                robust = clean_ok.clone()  # the clean image lies in every ball
                for i in eps_order:
                    x_adv = pgd(
                        model, x, y, self.pgd_epsilons[i], steps=self.pgd_steps,
                        restarts=self.pgd_restarts, generator=pgd_gens[i],
                    )
                    with torch.no_grad():
                        robust &= self._correct(model, x_adv, y)
                    pgd_correct[i] += int(robust.sum())
                bar.update(1)
        finally:
            bar.close()
            model.to(home)
            for module, training in modes.items():
                module.training = training

        if n == 0:
            raise ValueError("RobustnessEvaluation: the test loader yielded no images")
        return {
            "clean_accuracy": clean_correct / n,
            "gaussian_noise": {"sigma": list(self.noise_sigmas), "accuracy": [c / n for c in noise_correct]},
            "pgd_linf": {
                "epsilon": list(self.pgd_epsilons),
                "accuracy": [c / n for c in pgd_correct],
                "steps": self.pgd_steps,
                "restarts": self.pgd_restarts,
            },
            "n_images": n,
            "seed": self.seed,
        }

    @staticmethod
    def _correct(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """Boolean ``[B]``: ``argmax model(x) == y``."""
        return model(x).argmax(dim=1) == y

    @staticmethod
    def _unpack(batch: Any, batch_idx: int) -> tuple[Tensor, Tensor]:
        if not isinstance(batch, Mapping) or "image" not in batch or "label" not in batch:
            found = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
            raise ValueError(
                f"RobustnessEvaluation: test batch {batch_idx} must be a dict with keys 'image' "
                f"[B, C, H, W] in [0, 1] and 'label' [B], found {found}"
            )
        return batch["image"], batch["label"]

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
        """Evaluate, store ``self.report``, log scalars, write report.json + robustness.png (rank 0)."""
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
        self.report = report
        if not trainer.is_global_zero:
            return
        if fast_dev_run:
            print("neuroreg: fast_dev_run, robustness report not written")
            return

        for logger in trainer.loggers:
            logger.log_metrics(self.metrics(report), step=trainer.global_step)
        report_path = write_report(report, run_dir)
        plot_robustness(report, Path(run_dir) / PLOT_NAME)
        print(f"neuroreg: robustness report written to {report_path}")
        print(self._table(report))

    @staticmethod
    def _table(report: Mapping[str, Any]) -> str:
        rows = [("clean", "", report["clean_accuracy"])]
        noise, attack = report["gaussian_noise"], report["pgd_linf"]
        rows += [("gaussian noise", f"σ={_fmt(s)}", a) for s, a in zip(noise["sigma"], noise["accuracy"])]
        rows += [
            ("pgd linf", f"ε={_fmt(e)} ({e * 255:.3g}/255)", a)
            for e, a in zip(attack["epsilon"], attack["accuracy"])
        ]
        lines = [f"  {'condition':<16}{'strength':<22}accuracy  (n={report['n_images']})"]
        lines += [f"  {c:<16}{s:<22}{a:.4f}" for c, s, a in rows]
        return "\n".join(lines)
