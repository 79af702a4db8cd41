"""Centred kernel alignment regularizer (Dapello et al. 2023)."""

from __future__ import annotations

import torch

from . import functional as F
from .base import Regularizer, Schedule, StepContext, check_layers, impute_mean


class CKARegularizer(Regularizer):
    """Raise the linear CKA between a layer and neural responses.

    .. math:: L = \\log\\big(1 - \\mathrm{CKA}(X_{layer}, R) + δ\\big)

    averaged over the listed layers, with linear CKA of
    :func:`~neuroreg.regularizers.functional.linear_cka` (biased or unbiased) and a
    small ``δ`` so a perfect alignment stays finite.

    Dapello, Kar, Schrimpf, Geary, Ferguson, Cox, DiCarlo (2023). Aligning model and
    macaque inferior temporal cortex representations improves model-to-human
    behavioral alignment and adversarial robustness. ICLR.

    Args:
        layers: backbone layers.
        weight: loss weight (≥ 0).
        unbiased: use the unbiased minibatch HSIC (needs batches of ≥ 4 images).
        delta: ``δ > 0`` inside the log.
        source, schedule, gather: see :class:`~neuroreg.regularizers.base.Regularizer`.

    Returns (forward): ``loss`` and ``cka`` (mean over layers, detached).

    Raises:
        ValueError: ``delta <= 0``; too small a batch.

    Example:
        >>> reg = CKARegularizer(["layer4"])
        >>> out = reg({"layer4": torch.randn(32, 64)}, torch.rand(32, 100))
        >>> 0.0 <= float(out["cka"]) <= 1.0
        True
    """

    def __init__(
        self,
        layers: list[str],
        weight: float = 1.0,
        unbiased: bool = False,
        delta: float = 1e-4,
        source: str | None = None,
        schedule: Schedule | None = None,
        gather: bool = True,
    ):
        super().__init__(layers, weight, source, schedule, gather)
        if not delta > 0:
            raise ValueError(f"delta: expected a number > 0, found {delta}")
        self.unbiased = unbiased
        self.delta = delta

    def forward(self, features, targets, mask=None, context: StepContext | None = None):
        check_layers(self, features)
        need = 4 if self.unbiased else 2
        if targets.shape[0] < need:
            raise ValueError(f"batch size: the cka regularizer needs >= {need} images, found {targets.shape[0]}")
        features, targets, mask = self.gathered(features, targets, mask)
        r = impute_mean(targets, mask)
        loss, total = 0.0, 0.0
        for layer in self.layers:
            cka = F.linear_cka(features[layer], r, unbiased=self.unbiased)
            loss = loss + torch.log((1.0 - cka).clamp_min(0.0) + self.delta)
            total = total + cka.detach()
        n = len(self.layers)
        return {"loss": loss / n, "cka": total / n}
