"""Co-training with a neural readout and learned task weights (Safarani et al. 2021)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .base import Regularizer, Schedule, StepContext, check_layers


class CotrainingRegularizer(Regularizer):
    """A readout on a layer predicts the neural responses; multi-task with learned weights.

    ``ŷ = φ(readout(X_layer))`` with the likelihood's output nonlinearity φ, the
    neural loss ``L_n = likelihood(ŷ, R)`` (Poisson or Gaussian/MSE, NaN-masked) plus
    the readout's own penalty, and homoscedastic uncertainty weights (Kendall, Gal,
    Cipolla 2018) with learned log-variances ``s_t, s_n``:

    .. math:: L_{total} = e^{-s_t} L_{task} + s_t + e^{-s_n} L_n + s_n

    Since the classifier always adds ``L_task``, this regularizer's ``loss`` is
    ``(e^{-s_t} - 1) L_{task} + s_t + e^{-s_n} L_n + s_n`` (it needs the task loss
    from the :class:`~neuroreg.regularizers.base.StepContext`); with
    ``uncertainty_weights=False`` it is just ``L_n``.

    Safarani, Nix, Willeke, Cadena, Restivo, Denfield, Tolias, Sinz (2021). Towards
    robust vision by multi-task learning on monkey visual cortex. NeurIPS 34.

    Args:
        layers: exactly one backbone layer with ``[batch, C, H, W]`` output.
        weight: loss weight (≥ 0).
        readout: factory ``(in_shape (C, H, W), n_neurons) -> nn.Module`` (default
            :class:`neuroreg.twin.readouts.GaussianReadout`); built by :meth:`build`
            from the layer's shape.
        likelihood: a neuroreg.twin loss (``PoissonLoss()`` when ``None``, or
            ``GaussianLoss()`` for MSE).
        uncertainty_weights: learn ``s_t, s_n`` (otherwise plain ``L_n``).
        source, schedule: see :class:`~neuroreg.regularizers.base.Regularizer`.

    Returns (forward): ``loss``, ``neural_loss``, ``task_weight`` (``e^{-s_t}``) and
    ``neural_weight`` (``e^{-s_n}``).

    Example:
        >>> reg = CotrainingRegularizer(["layer2"], uncertainty_weights=False)
        >>> reg.build({"layer2": (8, 8, 8)}, num_neurons=30)
        >>> reg({"layer2": torch.randn(4, 8, 8, 8)}, torch.rand(4, 30))["loss"].shape
        torch.Size([])
    """

    uses_batch_statistics = False

    def __init__(
        self,
        layers: list[str],
        weight: float = 1.0,
        readout: Callable[[tuple[int, int, int], int], nn.Module] | None = None,
        likelihood: nn.Module | None = None,
        uncertainty_weights: bool = True,
        source: str | None = None,
        schedule: Schedule | None = None,
    ):
        super().__init__(layers, weight, source, schedule, gather=False)
        if len(self.layers) != 1:
            raise ValueError(f"layers: the cotraining regularizer reads exactly one layer, found {self.layers}")
        from neuroreg.twin.losses import PoissonLoss
        from neuroreg.twin.readouts import GaussianReadout

        self.readout_factory = readout or GaussianReadout
        self.likelihood = likelihood if likelihood is not None else PoissonLoss()
        self.uncertainty_weights = uncertainty_weights
        self.log_var = nn.Parameter(torch.zeros(2), requires_grad=uncertainty_weights)  # [s_task, s_neural]
        self.readout: nn.Module | None = None

    def build(self, feature_shapes, num_neurons: int) -> None:
        shape = tuple(int(s) for s in feature_shapes[self.layers[0]])
        if len(shape) != 3:
            raise ValueError(f"layers: the cotraining readout needs a [C, H, W] feature map, layer {self.layers[0]!r} gives {shape}")
        self.readout = self.readout_factory(shape, num_neurons)

    def forward(self, features, targets, mask=None, context: StepContext | None = None):
        check_layers(self, features)
        if self.readout is None:
            raise RuntimeError("CotrainingRegularizer: readout not built; call build(feature_shapes, num_neurons) first")
        if mask is not None:
            targets = torch.where(mask, targets, torch.full_like(targets, float("nan")))
        pred = self.likelihood.nonlinearity(self.readout(features[self.layers[0]]))
        neural = self.likelihood(pred, targets)["loss"]
        penalty = self.readout.regularizer() if hasattr(self.readout, "regularizer") else 0.0
        s_t, s_n = self.log_var[0], self.log_var[1]
        if not self.uncertainty_weights:
            loss = neural + penalty
        else:
            if context is None or context.task_loss is None:
                raise ValueError("uncertainty_weights: needs the task loss, but no StepContext with task_loss was passed")
            loss = (torch.exp(-s_t) - 1.0) * context.task_loss + s_t + torch.exp(-s_n) * (neural + penalty) + s_n
        return {
            "loss": loss,
            "neural_loss": neural.detach(),
            "task_weight": torch.exp(-s_t).detach(),
            "neural_weight": torch.exp(-s_n).detach(),
        }
