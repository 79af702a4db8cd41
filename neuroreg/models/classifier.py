"""RegularizedClassifier: a backbone + linear head trained with neural regularizers."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from ..regularizers.base import Regularizer, StepContext
from .taps import FeatureTaps


@contextmanager
def batchnorm_mode(model: nn.Module, mode: str):
    """Batch-norm behaviour for an extra (neural) forward pass.

    ``"batch"``: as in training (batch statistics, running stats updated);
    ``"frozen"``: batch statistics, running stats left unchanged;
    ``"eval"``: running statistics (eval mode) for the batch-norm layers only.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.training, m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in bns]
    try:
        for m in bns:
            if mode == "eval":
                m.eval()
            elif mode == "frozen":
                m.momentum = 0.0  # running = 1·running + 0·batch
        yield
    finally:
        for m, (training, momentum, tracked) in zip(bns, saved):
            m.train(training)
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


class RegularizedClassifier(pl.LightningModule):
    """Cross-entropy classifier whose layers are pulled toward neural targets.

    ``loss = CE(head(backbone(normalise(x))), y) + Σ_name w_name · regularizer_name``

    with ``w_name = regularizer.loss_weight(loss, context)`` (its ``weight``, or a
    per-step value such as RSA's task-fraction rescaling). Inputs are images in
    [0, 1]; per-channel normalisation happens inside the model, so attacks and
    perturbations operate in pixel space.

    Target sources. Training batches come from
    :class:`~neuroreg.data.datamodules.RegularizedDataModule` and carry
    ``targets: {source: [B, K]}`` aligned with the classification images; with
    separate neural sources a batch is ``{"task": {...}, "neural": {source:
    {"image": [Bn, C, H, W], "target": [Bn, K]}}}``; a neural source that is only an
    RDM gives ``"dissimilarity": [Bn, Bn]`` instead of ``"target"``, handed to the
    regularizer as ``dissimilarities=`` (only regularizers with
    ``accepts_dissimilarities``, e.g. RSA with the RDM's metric). Each regularizer reads the
    source it names (``regularizer.source``; ``None`` = the only source). For a
    neural source the model runs a second forward pass on that source's stimuli,
    with batch norm handled per ``neural_bn``. Each regularizer gets a
    :class:`~neuroreg.regularizers.base.StepContext` (task loss, step, epoch) and is
    skipped when its schedule is inactive.

    Args:
        backbone: module mapping ``[batch, C, H, W]`` to ``[batch, out_features]``
            (must expose ``out_features`` and ``in_channels``).
        num_classes: size of the linear head (linked from the data by the CLI).
        regularizers: ``{name: Regularizer}``; each reads its own layers and source.
        num_neurons: ``{source: neurons}`` (linked from the data; checked against
            every training batch's targets and used to build heads/readouts).
        image_size: input side length; when given, shape-dependent regularizer
            parts are built now (otherwise at ``setup`` from the data module).
        neural_bn: batch-norm handling of the neural pass, ``"batch"``, ``"frozen"``
            (batch statistics, running stats untouched) or ``"eval"``.
        mean, std: per-channel normalisation constants.
        optimizer: optimizer factory (``class_path`` + ``init_args`` in YAML).
        scheduler: optional LR-scheduler factory.

    Logged: ``{stage}/task/cross_entropy``, ``{stage}/accuracy``, ``train/loss``,
    ``train/{name}/{term}`` for every regularizer term and ``train/{name}/weight``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int = 10,
        regularizers: dict[str, Regularizer] | None = None,
        num_neurons: dict[str, int] | None = None,
        image_size: int | None = None,
        neural_bn: Literal["batch", "frozen", "eval"] = "batch",
        mean: list[float] = (0.5,),
        std: list[float] = (0.5,),
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["backbone", "regularizers", "optimizer", "scheduler"])
        if num_classes < 2:
            raise ValueError(f"num_classes: expected >= 2, found {num_classes}")
        if not hasattr(backbone, "out_features"):
            raise ValueError(f"backbone: expected a module with an 'out_features' attribute, found {type(backbone).__name__}")
        if neural_bn not in ("batch", "frozen", "eval"):
            raise ValueError(f"neural_bn: expected 'batch', 'frozen' or 'eval', found {neural_bn!r}")
        mean_t, std_t = torch.tensor(list(mean), dtype=torch.float32), torch.tensor(list(std), dtype=torch.float32)
        channels = getattr(backbone, "in_channels", len(mean_t))
        if mean_t.numel() != channels or std_t.numel() != channels:
            raise ValueError(f"mean, std: expected {channels} values (backbone in_channels), found {len(mean_t)} and {len(std_t)}")
        if (std_t <= 0).any():
            raise ValueError(f"std: expected positive values, found {std_t.tolist()}")
        if num_neurons is not None and not isinstance(num_neurons, dict):
            raise TypeError(f"num_neurons: expected a dict {{source: neurons}}, found {type(num_neurons).__name__}")
        self.backbone = backbone
        self.head = nn.Linear(backbone.out_features, num_classes)
        self.regularizers = nn.ModuleDict(regularizers or {})
        for name, reg in self.regularizers.items():
            if not isinstance(reg, Regularizer):
                raise TypeError(f"regularizers.{name}: expected a neuroreg Regularizer, found {type(reg).__name__}")
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1))
        self.register_buffer("std", std_t.view(1, -1, 1, 1))
        self.num_neurons = dict(num_neurons or {})
        self.neural_bn = neural_bn
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        layers = [layer for reg in self.regularizers.values() for layer in reg.layers]
        self.taps = FeatureTaps(self.backbone, layers)
        self._built_size: int | None = None
        if image_size is not None:
            self.build(image_size)

    @property
    def in_channels(self) -> int:
        return int(self.mean.shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[batch, C, H, W]`` images in [0, 1] → ``[batch, classes]`` logits."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"images: expected [batch, {self.in_channels}, H, W], found shape {tuple(x.shape)}")
        return self.head(self.backbone((x - self.mean) / self.std))

    # ----------------------------------------------------------------- sources
    def source_of(self, name: str) -> str | None:
        """The target source regularizer ``name`` reads (``None``: it reads none)."""
        reg = self.regularizers[name]
        if reg.source is not None:
            return reg.source
        if not reg.needs_targets:
            return None
        if len(self.num_neurons) != 1:
            raise ValueError(
                f"regularizers.{name}.source: the data has target sources {sorted(self.num_neurons)}; "
                "name one of them (init_args.source)"
            )
        return next(iter(self.num_neurons))

    def build(self, image_size: int) -> None:
        """Create shape-dependent regularizer parts from a dry forward pass (once)."""
        if self._built_size is not None:
            return
        for name in self.regularizers:
            src = self.source_of(name)
            if src is not None and src not in self.num_neurons:
                raise ValueError(
                    f"regularizers.{name}.source: expected one of the data's target sources {sorted(self.num_neurons)}, found {src!r}"
                )
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad(), self.taps.capture() as feats:
                self(torch.zeros(2, self.in_channels, image_size, image_size, device=self.mean.device))
        finally:
            self.train(was_training)
        shapes = {k: tuple(v.shape[1:]) for k, v in feats.items()}
        for name, reg in self.regularizers.items():
            src = self.source_of(name)
            reg.build({layer: shapes[layer] for layer in reg.layers}, self.num_neurons.get(src, 0) if src else 0)
        self._built_size = int(image_size)
        self.hparams["image_size"] = int(image_size)

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        channels = getattr(dm, "channels", None)
        if channels is not None and channels != self.in_channels:
            raise ValueError(
                f"data: images have {channels} channels but the model expects {self.in_channels} "
                "(set backbone in_channels and mean/std to match the image set)"
            )
        if dm is not None and not self.num_neurons and getattr(dm, "num_neurons", None):
            self.num_neurons = dict(dm.num_neurons)
        needing = [n for n, r in self.regularizers.items() if r.needs_targets]
        if needing and dm is not None and not getattr(dm, "num_neurons", {"?": 1}):
            raise ValueError(f"data.targets: regularizers {needing} need neural targets, but the data module has none")
        self._check_dissimilarity_sources(getattr(dm, "dissimilarity_metrics", None) or {})
        if self._built_size is None and getattr(dm, "image_size", None) is not None:
            self.build(int(dm.image_size))

    def _check_dissimilarity_sources(self, metrics: dict[str, str]) -> None:
        """Regularizers reading a source that gives an RDM must accept one, with its metric."""
        if not metrics:
            return
        for name, reg in self.regularizers.items():
            src = self.source_of(name)
            if src not in metrics:
                continue
            if not getattr(reg, "accepts_dissimilarities", False):
                raise TypeError(
                    f"regularizers.{name}: source {src!r} gives dissimilarities (an RDM over its images), not responses; "
                    f"{type(reg).__name__} needs responses (RSARegularizer accepts an RDM)"
                )
            if getattr(reg, "metric", metrics[src]) != metrics[src]:
                raise ValueError(
                    f"regularizers.{name}.metric: source {src!r} holds a {metrics[src]!r} RDM; expected metric "
                    f"{metrics[src]!r}, found {reg.metric!r}"
                )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["neuroreg_image_size"] = self._built_size

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if checkpoint.get("neuroreg_image_size") is not None:
            self.build(int(checkpoint["neuroreg_image_size"]))

    # ---------------------------------------------------------------- training
    def _check_targets(self, source: str, targets: torch.Tensor) -> None:
        expected = self.num_neurons.get(source)
        if targets.ndim != 2 or (expected and targets.shape[1] != expected):
            raise ValueError(f"batch targets[{source!r}]: expected [batch, {expected}] neural targets, found {tuple(targets.shape)}")

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        task = batch["task"] if "task" in batch else batch
        neural = batch.get("neural", {}) if "task" in batch else {}
        with self.taps.capture() as features:
            logits = self(task["image"])
        ce = nn.functional.cross_entropy(logits, task["label"])
        total = ce
        bs = task["label"].shape[0]
        context = StepContext(task_loss=ce, step=int(self.global_step), epoch=int(self.current_epoch))
        aligned = task.get("targets", {})
        neural_features: dict[str, dict[str, torch.Tensor]] = {}
        for name, reg in self.regularizers.items():
            if not reg.schedule.active(context):
                continue
            src = self.source_of(name)
            feats, targets, dissimilarities = features, None, None
            if src in neural:
                if src not in neural_features:
                    with batchnorm_mode(self.backbone, self.neural_bn), self.taps.capture() as nf:
                        self(neural[src]["image"])
                    neural_features[src] = nf
                feats = neural_features[src]
                if "dissimilarity" in neural[src]:
                    self._check_dissimilarity_sources({src: getattr(reg, "metric", "")})
                    dissimilarities = neural[src]["dissimilarity"]
                else:
                    targets = neural[src]["target"]
            elif src is not None:
                if src not in aligned:
                    raise KeyError(
                        f"batch: regularizer {name!r} reads target source {src!r}, found sources "
                        f"{sorted(aligned) + sorted(neural)} in the training batch"
                    )
                targets = aligned[src]
            mask = None
            if targets is not None:
                self._check_targets(src, targets)
                mask = ~torch.isnan(targets)
            layer_feats = {layer: feats[layer] for layer in reg.layers}
            if dissimilarities is not None:
                terms = reg(layer_feats, None, None, context=context, dissimilarities=dissimilarities)
            else:
                terms = reg(layer_feats, targets, mask, context=context)
            w = reg.loss_weight(terms["loss"], context)
            total = total + w * terms["loss"]
            for term, value in terms.items():
                self.log(f"train/{name}/{term}", value, batch_size=bs)
            self.log(f"train/{name}/weight", float(w), batch_size=bs)
        self.log("train/task/cross_entropy", ce, batch_size=bs)
        self.log("train/loss", total, prog_bar=True, batch_size=bs)
        self.log("train/accuracy", (logits.argmax(1) == task["label"]).float().mean(), batch_size=bs)
        return total

    def _eval_step(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        logits = self(batch["image"])
        bs = batch["label"].shape[0]
        self.log(f"{stage}/task/cross_entropy", nn.functional.cross_entropy(logits, batch["label"]), batch_size=bs)
        self.log(f"{stage}/accuracy", (logits.argmax(1) == batch["label"]).float().mean(), prog_bar=True, batch_size=bs)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self(batch["image"]).softmax(dim=1)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}
