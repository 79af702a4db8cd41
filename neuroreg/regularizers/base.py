"""The Regularizer interface."""

from __future__ import annotations

import torch
from torch import nn


class Regularizer(nn.Module):
    """A loss that pulls features of named backbone layers toward neural targets.

    Subclasses implement ``forward(features, targets, mask=None) -> dict[str, Tensor]``:

    - ``features``: ``{layer: [batch, ...]}`` for every name in ``self.layers``;
    - ``targets``: ``[batch, neurons]`` neural targets of the same images;
    - ``mask``: ``[batch, neurons]`` bool, True where a target exists;
    - returns a dict with a scalar ``"loss"`` and any named diagnostics.

    The classifier adds ``weight * loss`` to the task loss and logs every term as
    ``{stage}/{name}/{term}``. A regularizer knows nothing about training.

    Args:
        layers: backbone module paths this regularizer reads.
        weight: its weight in the total loss (≥ 0).
    """

    def __init__(self, layers: list[str], weight: float = 1.0):
        super().__init__()
        if isinstance(layers, str):
            layers = [layers]
        if not layers:
            raise ValueError("layers: expected at least one backbone layer name, found none")
        if not weight >= 0:
            raise ValueError(f"weight: expected a number >= 0, found {weight}")
        self.layers = list(layers)
        self.weight = float(weight)

    def forward(self, features: dict[str, torch.Tensor], targets: torch.Tensor, mask: torch.Tensor | None = None):
        raise NotImplementedError
