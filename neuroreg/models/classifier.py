"""RegularizedClassifier: a backbone + linear head trained with neural regularizers."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from ..regularizers.base import Regularizer
from .taps import FeatureTaps


class RegularizedClassifier(pl.LightningModule):
    """Cross-entropy classifier whose layers are pulled toward neural targets.

    ``loss = CE(head(backbone(normalise(x))), y) + Σ_name weight_name · regularizer_name``

    Inputs are images in [0, 1]; per-channel normalisation happens inside the
    model, so attacks and perturbations operate in pixel space.

    Args:
        backbone: module mapping ``[batch, C, H, W]`` to ``[batch, out_features]``
            (must expose ``out_features`` and ``in_channels``).
        num_classes: size of the linear head (linked from the data by the CLI).
        regularizers: ``{name: Regularizer}``; each reads its own layers.
        num_neurons: number of target neurons the data provides (linked from the
            data; checked against every training batch's targets).
        mean, std: per-channel normalisation constants.
        optimizer: optimizer factory (``class_path`` + ``init_args`` in YAML).
        scheduler: optional LR-scheduler factory.

    Logged: ``{stage}/task/cross_entropy``, ``{stage}/accuracy``, ``train/loss``
    and ``train/{name}/{term}`` for every regularizer term.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int = 10,
        regularizers: dict[str, Regularizer] | None = None,
        num_neurons: int = 0,
        mean: list[float] = (0.5,),
        std: list[float] = (0.5,),
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["backbone", "regularizers"])
        if num_classes < 2:
            raise ValueError(f"num_classes: expected >= 2, found {num_classes}")
        if not hasattr(backbone, "out_features"):
            raise ValueError(f"backbone: expected a module with an 'out_features' attribute, found {type(backbone).__name__}")
        mean_t, std_t = torch.tensor(list(mean), dtype=torch.float32), torch.tensor(list(std), dtype=torch.float32)
        channels = getattr(backbone, "in_channels", len(mean_t))
        if mean_t.numel() != channels or std_t.numel() != channels:
            raise ValueError(f"mean, std: expected {channels} values (backbone in_channels), found {len(mean_t)} and {len(std_t)}")
        if (std_t <= 0).any():
            raise ValueError(f"std: expected positive values, found {std_t.tolist()}")
        self.backbone = backbone
        self.head = nn.Linear(backbone.out_features, num_classes)
        self.regularizers = nn.ModuleDict(regularizers or {})
        for name, reg in self.regularizers.items():
            if not isinstance(reg, Regularizer):
                raise TypeError(f"regularizers.{name}: expected a neuroreg Regularizer, found {type(reg).__name__}")
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1))
        self.register_buffer("std", std_t.view(1, -1, 1, 1))
        self.num_neurons = num_neurons
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        layers = [l for reg in self.regularizers.values() for l in reg.layers]
        self.taps = FeatureTaps(self.backbone, layers)

    @property
    def in_channels(self) -> int:
        return int(self.mean.shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[batch, C, H, W]`` images in [0, 1] → ``[batch, classes]`` logits."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"images: expected [batch, {self.in_channels}, H, W], found shape {tuple(x.shape)}")
        return self.head(self.backbone((x - self.mean) / self.std))

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        channels = getattr(dm, "channels", None)
        if channels is not None and channels != self.in_channels:
            raise ValueError(
                f"data: images have {channels} channels but the model expects {self.in_channels} "
                "(set backbone in_channels and mean/std to match the image set)"
            )
        if self.regularizers and dm is not None and getattr(dm, "num_neurons", 1) == 0:
            raise ValueError(
                f"data.targets: regularizers {list(self.regularizers)} need neural targets, but the data module has none"
            )

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        with self.taps.capture() as features:
            logits = self(batch["image"])
        ce = nn.functional.cross_entropy(logits, batch["label"])
        total = ce
        bs = batch["label"].shape[0]
        if self.regularizers:
            targets = batch.get("target")
            if targets is None:
                raise KeyError("batch: regularizers need a 'target' entry in training batches, found none")
            if targets.ndim != 2 or (self.num_neurons and targets.shape[1] != self.num_neurons):
                raise ValueError(
                    f"batch['target']: expected [batch, {self.num_neurons}] neural targets, found {tuple(targets.shape)}"
                )
            mask = ~torch.isnan(targets)
            for name, reg in self.regularizers.items():
                terms = reg({l: features[l] for l in reg.layers}, targets, mask)
                total = total + reg.weight * terms["loss"]
                for term, value in terms.items():
                    self.log(f"train/{name}/{term}", value, batch_size=bs)
        self.log("train/task/cross_entropy", ce, batch_size=bs)
        self.log("train/loss", total, prog_bar=True, batch_size=bs)
        self.log("train/accuracy", (logits.argmax(1) == batch["label"]).float().mean(), batch_size=bs)
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
