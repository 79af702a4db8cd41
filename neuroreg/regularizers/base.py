"""The Regularizer interface, the per-step context and the schedule of a regularizer."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import functional as F


@dataclass(frozen=True)
class StepContext:
    """What the classifier knows about the current training step.

    Passed to every regularizer as ``forward(..., context=...)``; regularizers that do
    not need it ignore it.

    Attributes:
        task_loss: the (undetached) scalar task loss of this step.
        step: global optimisation step (0-based).
        epoch: current epoch (0-based).
    """

    task_loss: torch.Tensor | None = None
    step: int = 0
    epoch: int = 0


class Schedule:
    """When a regularizer is applied: every ``every_n_steps``-th step, in an epoch window.

    A regularizer is active on step ``s`` of epoch ``e`` when
    ``s % every_n_steps == 0`` and ``start_epoch <= e < end_epoch`` (``end_epoch=None``:
    no end). Inactive regularizers are not computed at all.

    Args:
        every_n_steps: apply on every n-th step (>= 1).
        start_epoch: first epoch (inclusive, >= 0).
        end_epoch: last epoch (exclusive), or ``None``.

    Example:
        >>> s = Schedule(every_n_steps=2, start_epoch=1)
        >>> s.active(StepContext(step=4, epoch=1)), s.active(StepContext(step=4, epoch=0))
        (True, False)
    """

    def __init__(self, every_n_steps: int = 1, start_epoch: int = 0, end_epoch: int | None = None):
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(f"every_n_steps: expected an integer >= 1, found {every_n_steps!r}")
        if start_epoch < 0:
            raise ValueError(f"start_epoch: expected >= 0, found {start_epoch}")
        if end_epoch is not None and end_epoch <= start_epoch:
            raise ValueError(f"end_epoch: expected > start_epoch ({start_epoch}) or None, found {end_epoch}")
        self.every_n_steps = every_n_steps
        self.start_epoch = start_epoch
        self.end_epoch = end_epoch

    def active(self, context: StepContext) -> bool:
        in_window = context.epoch >= self.start_epoch and (self.end_epoch is None or context.epoch < self.end_epoch)
        return in_window and context.step % self.every_n_steps == 0


def world_size() -> int:
    """Number of processes of the default process group (1 when not distributed)."""
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the incoming gradient contiguous.

    ``all_gather``'s backward hands gradients to gloo's all-to-all, which reads raw
    storage: a non-contiguous gradient (e.g. from a transpose downstream) would be
    exchanged in the wrong layout.
    """

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous()


def gather_batch(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` ``[batch, ...]`` over all ranks along dim 0, keeping gradients.

    Uses ``torch.distributed.nn.functional.all_gather``, whose backward sums the
    gradients of every rank into the local slice; with DDP's gradient averaging the
    parameter gradient is then exactly that of the loss on the concatenated batch.
    Identity when not distributed. Every rank must hold the same batch size.

    Raises:
        ValueError: batch sizes differ across ranks.
    """
    if world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(world_size())]
    torch.distributed.all_gather(sizes, torch.tensor([x.shape[0]], device=x.device))
    if len({int(s) for s in sizes}) != 1:
        raise ValueError(
            f"batch size: gathering across ranks needs equal batch sizes, found {[int(s) for s in sizes]} "
            "(use drop_last=True for training loaders)"
        )
    return torch.cat([_ContiguousGrad.apply(t) for t in all_gather(x.contiguous())], dim=0)


class Regularizer(nn.Module):
    """A loss that pulls features of named backbone layers toward neural targets.

    Subclasses implement ``forward(features, targets, mask=None, context=None) -> dict[str, Tensor]``:

    - ``features``: ``{layer: [batch, ...]}`` for every name in ``self.layers``;
    - ``targets``: ``[batch, neurons]`` neural targets of the same images (from the
      target source named ``self.source``);
    - ``mask``: ``[batch, neurons]`` bool, True where a target exists;
    - ``context``: optional :class:`StepContext` (task loss, step, epoch);
    - returns a dict with a scalar ``"loss"`` and any named diagnostics.

    The classifier adds ``loss_weight(loss, context) * loss`` to the task loss (by
    default ``weight``) and logs every term as ``{stage}/{name}/{term}``. A regularizer
    knows nothing about training.

    Args:
        layers: backbone module paths this regularizer reads.
        weight: its weight in the total loss (≥ 0).
        source: name of the target source in the data module (``None``: the only one).
        schedule: when to apply it (default: every step).
        gather: concatenate features and targets over DDP ranks before computing the
            loss (only matters for losses that use batch statistics).
    """

    #: losses computed from statistics over the batch gather across ranks
    uses_batch_statistics: bool = True
    #: whether the regularizer reads neural targets at all
    needs_targets: bool = True

    def __init__(
        self,
        layers: list[str],
        weight: float = 1.0,
        source: str | None = None,
        schedule: Schedule | None = None,
        gather: bool = True,
    ):
        super().__init__()
        if isinstance(layers, str):
            layers = [layers]
        if not layers:
            raise ValueError("layers: expected at least one backbone layer name, found none")
        if not weight >= 0:
            raise ValueError(f"weight: expected a number >= 0, found {weight}")
        self.layers = list(layers)
        self.weight = float(weight)
        self.source = source
        self.schedule = schedule or Schedule()
        self.gather = gather

    def build(self, feature_shapes: dict[str, tuple[int, ...]], num_neurons: int) -> None:
        """Create shape-dependent parts (projection heads, readouts) before training.

        Called once by the classifier with ``{layer: (C, H, W) or (D,)}`` per-image
        feature shapes from a dry forward pass, and the number of target neurons.
        """

    def loss_weight(self, loss: torch.Tensor, context: StepContext | None) -> torch.Tensor | float:
        """The factor the classifier multiplies ``loss`` by (default: ``weight``)."""
        return self.weight

    def gathered(self, features: dict[str, torch.Tensor], targets: torch.Tensor, mask: torch.Tensor | None):
        """Features, targets and mask concatenated across DDP ranks (when ``gather``)."""
        if not (self.gather and self.uses_batch_statistics) or world_size() == 1:
            return features, targets, mask
        features = {k: gather_batch(v) for k, v in features.items()}
        targets = gather_batch(targets) if targets is not None else None
        mask = gather_batch(mask.to(torch.uint8)).bool() if mask is not None else None
        return features, targets, mask

    def __call__(self, *args, **kwargs):
        """Run :meth:`forward`, in float32 when called under autocast (mixed precision).

        Covariances, Gram matrices, ``eigh`` and the spectral fits lose most of their
        digits in bfloat16 (8-bit mantissa), so under autocast the floating inputs are
        cast to float32 and autocast is off inside; gradients flow back to the
        low-precision features through the casts.
        """
        if not F.autocasting():
            return super().__call__(*args, **kwargs)
        with F.autocast_off():
            return super().__call__(*F.float32(args), **F.float32(kwargs))

    def forward(self, features, targets, mask=None, context: StepContext | None = None):
        raise NotImplementedError


def check_layers(reg: Regularizer, features: dict[str, torch.Tensor]) -> None:
    missing = [layer for layer in reg.layers if layer not in features]
    if missing:
        raise KeyError(f"features: expected layers {reg.layers}, missing {missing}")


def check_pairs(name: str, batch: int) -> None:
    if batch < 2:
        raise ValueError(f"batch size: the {name} regularizer compares image pairs; expected >= 2 images, found {batch}")


def nan_mask(targets: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(targets with NaN set to 0, mask)``; the mask defaults to the non-NaN entries."""
    if mask is None:
        mask = ~torch.isnan(targets)
    return torch.nan_to_num(targets), mask & ~torch.isnan(targets)


def impute_mean(targets: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Replace missing targets by their neuron's mean over the batch's valid entries.

    After centring, an imputed entry contributes nothing, so a neuron is used only
    where it was recorded; a neuron with no valid entry becomes constant 0.
    """
    values, mask = nan_mask(targets, mask)
    m = mask.to(values.dtype)
    mean = (values * m).sum(0, keepdim=True) / m.sum(0, keepdim=True).clamp_min(1.0)
    return torch.where(mask, values, mean.expand_as(values))
