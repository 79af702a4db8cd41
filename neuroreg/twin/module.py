"""TwinModule: a digital twin (core + per-dataset readouts + likelihood) as a LightningModule."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from pytorch_lightning.core.mixins.hparams_mixin import _given_hyperparameters
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from ..data.datamodules import DEFAULT_DATASET
from . import metrics
from .losses import PoissonLoss
from .readouts import GaussianReadout, MultiReadout
from .transforms import StimulusTransform

#: builds a readout from ``(in_shape (C, H, W), n_neurons)``; YAML: ``class_path`` + ``init_args``
ReadoutFactory = Callable[[tuple[int, int, int], int], nn.Module]

class TwinModule(pl.LightningModule):
    """Predicts the responses of recorded neurons to any image.

    ``ŷ = loss.nonlinearity(readout_d(core(transform(x))))`` for images ``x``
    ``[batch, C, h, w]`` in [0, 1] and dataset ``d``; trained on

    ``L = loss(ŷ, y) + core.regularizer() + readout_d.regularizer()``

    (the loss is the mean over recorded entries; NaN responses are not recorded).

    Args:
        core: image → feature map module with ``in_channels`` and ``regularizer()``
            (e.g. :class:`~neuroreg.twin.cores.Stacked2dCore`).
        readout: readout factory ``(in_shape, n_neurons) -> module``; one readout is
            built per dataset (e.g. :class:`~neuroreg.twin.readouts.GaussianReadout`).
        loss: :class:`~neuroreg.twin.losses.PoissonLoss` (spikes, deconvolved) or
            :class:`~neuroreg.twin.losses.GaussianLoss` (dF/F).
        transform: maps input images to the twin's input (grayscale, size,
            normalisation); default: ``StimulusTransform()`` (gray 32×32, statistics
            from the recording).
        num_neurons: neurons per dataset, an int (one recording) or ``{name: int}``
            (linked from the data by the CLI).
        optimizer: optimizer factory (``class_path`` + ``init_args`` in YAML).
        scheduler: optional LR-scheduler factory.

    Logged: ``{stage}/loss/loss``, ``train/core/regularizer``,
    ``train/readout/regularizer``, ``train/total``; at the end of validation and
    test epochs the neuron-averaged metrics of :func:`neuroreg.twin.metrics.summary`
    as ``{stage}/{metric}`` (averaged over datasets) and ``{stage}/{dataset}/{metric}``
    when there are several datasets, and ``{stage}/oracle_images``, the number of
    evaluated images with >= 2 recorded repeats. When it is 0 for a dataset the oracle
    metrics (oracle correlation, FEV, fraction of oracle) are not computed for it: a
    :class:`~neuroreg.twin.metrics.NoRepeatsWarning` says so and the reason is kept in
    :attr:`metric_notes` (``{"{stage}/{dataset}": message}``).

    ``neuroreg predict`` writes ``[images, total_neurons]`` predictions (every dataset's
    neurons, in readout order) for the data module's predicted images: an image set, or
    a tier of the recordings themselves (``NeuralDataModule(predict_tier="test")``).
    """

    def __init__(
        self,
        core: nn.Module,
        readout: ReadoutFactory = GaussianReadout,
        loss: nn.Module | None = None,
        transform: StimulusTransform | None = None,
        num_neurons: int | dict[str, int] = 0,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
    ):
        super().__init__()
        # From the CLI the hyper-parameters are the config, so load_from_checkpoint
        # rebuilds the parts; built in Python, the parts (modules, callables) are not
        # stored: pass them again to load_from_checkpoint.
        from_config = _given_hyperparameters.get() is not None
        self.save_hyperparameters(ignore=None if from_config else ["core", "readout", "loss", "transform", "optimizer", "scheduler"])
        counts = {DEFAULT_DATASET: num_neurons} if isinstance(num_neurons, int) else dict(num_neurons)
        if not counts or any(int(k) < 1 for k in counts.values()):
            raise ValueError(
                f"TwinModule: 'num_neurons': expected a positive int or {{dataset: positive int}} "
                f"(linked from data.num_neurons), found {num_neurons}"
            )
        if not hasattr(core, "regularizer") or not hasattr(core, "in_channels"):
            raise ValueError(f"TwinModule: 'core': expected a core with 'in_channels' and 'regularizer()', found {type(core).__name__}")
        self.core = core
        self.loss = PoissonLoss() if loss is None else loss
        self.transform = StimulusTransform() if transform is None else transform
        if self.transform.channels != core.in_channels:
            raise ValueError(
                f"TwinModule: 'transform.channels' ({self.transform.channels}) must equal 'core.in_channels' ({core.in_channels})"
            )
        with torch.no_grad():
            was = core.training
            core.eval()
            in_shape = tuple(core(torch.zeros(1, *self.transform.out_shape)).shape[1:])
            core.train(was)
        self.readout = MultiReadout({name: readout(in_shape, int(k)) for name, k in counts.items()})
        self.num_neurons = {name: int(k) for name, k in counts.items()}
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self._eval_outputs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        self._eval_losses: list[tuple[float, int]] = []  # (batch loss, batch size) of this evaluation epoch
        self.metric_notes: dict[str, str] = {}

    @property
    def datasets(self) -> list[str]:
        return list(self.readout.keys())

    @property
    def total_neurons(self) -> int:
        return sum(self.num_neurons.values())

    def forward(self, images: torch.Tensor, dataset: str | None = None) -> torch.Tensor:
        """``[batch, C, h, w]`` images in [0, 1] → ``[batch, K_dataset]`` predicted responses.

        With ``dataset=None`` every dataset's neurons, concatenated in readout order
        (``[batch, total_neurons]``).
        """
        features = self.core(self.transform(images))
        names = self.datasets if dataset is None else [dataset]
        return torch.cat([self.loss.nonlinearity(self.readout(features, d)) for d in names], dim=1)

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None or not hasattr(dm, "recordings"):
            return
        recs = dm.recordings
        if set(recs) != set(self.datasets):
            raise ValueError(f"TwinModule: data has datasets {sorted(recs)}, the twin has readouts for {sorted(self.datasets)}")
        for name, rec in recs.items():
            if rec.n_neurons != self.num_neurons[name]:
                raise ValueError(
                    f"{rec.name}: field 'responses': the twin's readout '{name}' expects {self.num_neurons[name]} neurons, "
                    f"found {rec.n_neurons}"
                )
            size = tuple(rec.images.shape[2:])
            if size != self.transform.size:
                raise ValueError(
                    f"{rec.name}: field 'images': expected resolution {self.transform.size[0]}x{self.transform.size[1]} "
                    f"(model.init_args.transform.init_args.size), found {size[0]}x{size[1]}"
                )
            if stage == "fit":
                self.loss.check(rec.response_summary(), rec.name)  # no further pass over the responses
        if stage == "fit":
            train_images = np.concatenate([dm.tier_images(n, "train") for n in self.datasets])
            self.transform.fit_statistics(train_images)
            with torch.no_grad():
                for name in self.datasets:
                    mean = torch.as_tensor(dm.mean_response(name, "train"), dtype=torch.float32)
                    mean = torch.nan_to_num(mean, nan=float(np.nanmean(mean.numpy())))
                    ro = self.readout[name]
                    if hasattr(ro, "bias"):
                        ro.bias.copy_(self.loss.inverse(mean))

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("state_dict", {})
        path = getattr(self._trainer, "ckpt_path", None) if self._trainer is not None else None
        for name in self.datasets:
            key = f"readout.{name}.bias"
            if key in state and state[key].shape[0] != self.num_neurons[name]:
                raise ValueError(
                    f"{path or 'checkpoint'}: field 'state_dict.{key}': the recording has {self.num_neurons[name]} neurons "
                    f"in dataset '{name}', the checkpoint's twin predicts {state[key].shape[0]}"
                )
        missing = [n for n in self.datasets if f"readout.{n}.bias" not in state and any(k.startswith("readout.") for k in state)]
        if missing:
            found = sorted({k.split(".")[1] for k in state if k.startswith("readout.")})
            raise ValueError(f"{path or 'checkpoint'}: field 'state_dict': expected readouts {self.datasets}, found {found}")

    # --------------------------------------------------------------- training
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        dataset = batch["dataset"][0]
        pred = self(batch["image"], dataset)
        terms = self.loss(pred, batch["response"])
        core_reg = self.core.regularizer()
        readout_reg = self.readout.regularizer(dataset)
        total = terms["loss"] + core_reg + readout_reg
        bs = pred.shape[0]
        for term, value in terms.items():
            self.log(f"train/loss/{term}", value, batch_size=bs)
        self.log("train/core/regularizer", core_reg, batch_size=bs)
        self.log("train/readout/regularizer", readout_reg, batch_size=bs)
        self.log("train/total", total, prog_bar=True, batch_size=bs)
        return total

    def _eval_step(self, batch: dict, stage: str) -> None:
        dataset = batch["dataset"][0]
        pred = self(batch["image"], dataset)
        repeats = batch["repeats"]  # [B, R, K]
        terms = self.loss(pred.unsqueeze(1).expand_as(repeats), repeats)
        if bool((~torch.isnan(repeats)).any()):
            self._eval_losses.append((float(terms["loss"].detach()), int(pred.shape[0])))
        self._eval_outputs.setdefault(dataset, []).append((pred.detach().float().cpu().numpy(), repeats.cpu().numpy()))

    def _gathered_outputs(self) -> tuple[dict[str, list[tuple[np.ndarray, np.ndarray]]], list[tuple[float, int]]]:
        """This epoch's evaluation outputs and batch losses of every DDP rank (each rank predicted its share of the images)."""
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self._eval_outputs, self._eval_losses
        shares: list = [None] * dist.get_world_size()
        dist.all_gather_object(shares, (self._eval_outputs, self._eval_losses))
        merged: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        losses: list[tuple[float, int]] = []
        for outputs_of_rank, losses_of_rank in shares:
            for dataset, outputs in outputs_of_rank.items():
                merged.setdefault(dataset, []).extend(outputs)
            losses.extend(losses_of_rank)
        return merged, losses

    def _eval_epoch_end(self, stage: str) -> dict[str, float]:
        # metrics over all images at once: correlations, oracle and FEV of rank-local
        # shares averaged afterwards would not equal those of the whole set
        per_dataset = {}
        repeated = 0
        gathered, losses = self._gathered_outputs()
        if losses:  # the batch-size-weighted mean of the batch losses, over the batches of all ranks
            n = sum(b for _, b in losses)
            self.log(f"{stage}/loss/loss", float(sum(v * b for v, b in losses) / n))
        for dataset, outputs in gathered.items():
            pred = np.concatenate([p for p, _ in outputs])
            r = max(x.shape[1] for _, x in outputs)
            reps = np.concatenate([np.pad(x, ((0, 0), (0, r - x.shape[1]), (0, 0)), constant_values=np.nan) for _, x in outputs])
            where = f"{stage} metrics of dataset '{dataset}'"
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", metrics.NoRepeatsWarning)
                per_dataset[dataset] = metrics.summary(pred, reps, where)
            for w in caught:
                if issubclass(w.category, metrics.NoRepeatsWarning) and f"{stage}/{dataset}" not in self.metric_notes:
                    self.metric_notes[f"{stage}/{dataset}"] = str(w.message)
                    rank_zero_warn(str(w.message), category=metrics.NoRepeatsWarning)  # once per stage and dataset
                elif not issubclass(w.category, metrics.NoRepeatsWarning):
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            repeated += metrics.repeated_images(reps)
        self._eval_outputs = {}
        self._eval_losses = []
        if not per_dataset:
            return {}
        self.log(f"{stage}/oracle_images", float(repeated))
        names = sorted({m for s in per_dataset.values() for m in s})
        averaged = {m: float(np.nanmean([s.get(m, np.nan) for s in per_dataset.values()])) for m in names}
        for m, value in averaged.items():
            self.log(f"{stage}/{m}", value, prog_bar=m == "correlation")
        if len(per_dataset) > 1:
            for dataset, values in per_dataset.items():
                for m, value in values.items():
                    self.log(f"{stage}/{dataset}/{m}", value)
        return averaged

    def on_validation_epoch_start(self) -> None:
        self._eval_outputs = {}
        self._eval_losses = []

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_start(self) -> None:
        self._eval_outputs = {}
        self._eval_losses = []

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """``[batch, total_neurons]`` predicted responses to ``batch["image"]``."""
        return self(batch["image"])

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}
