"""Representational dissimilarity regularizer (Federer et al. 2020)."""

from __future__ import annotations

from typing import Literal

import torch

from . import functional as F
from .base import Regularizer, Schedule, StepContext, check_layers, check_pairs, nan_mask


class RSARegularizer(Regularizer):
    """Match the model's representational dissimilarity matrix to the neural one.

    .. math:: L = \\frac{2}{B(B-1)} \\sum_{i<j} \\big|D^{model}_{ij} - D^{neural}_{ij}\\big|^p,\\quad p \\in \\{1, 2\\}

    with ``D = 1 − corr`` (or ``1 − cos``) between the images' population vectors
    (:func:`~neuroreg.regularizers.functional.rdm`), averaged over the listed layers.

    Federer, Xu, Fyshe, Zylberberg (2020). Improved object recognition using neural
    networks trained to mimic the brain's statistical properties. Neural Networks 131.
    Their "RSA ratio": the weight is re-set every step so that the neural term is a
    fixed fraction of the task loss, ``w_t = weight · task_fraction · L_task / L_rsa``
    (both detached); enable it with ``task_fraction``.

    Args:
        layers: backbone layers (losses are averaged over them).
        weight: loss weight (≥ 0).
        metric: ``"correlation"`` (1 − Pearson) or ``"cosine"``.
        penalty: ``"abs"`` (|Δ|) or ``"squared"`` (Δ²).
        task_fraction: if set (> 0), rescale the weight each step as above.
        source, schedule, gather: see :class:`~neuroreg.regularizers.base.Regularizer`
            (``schedule`` applies it every k-th step / in an epoch window).

    Neural targets come in one of two explicit forms:

    - ``targets`` ``[batch, neurons]``: responses, whose RDM is computed here (NaN entries
      masked);
    - ``dissimilarities`` ``[batch, batch]``: the neural RDM itself over the batch's images,
      for data that is only an RDM (:class:`~neuroreg.targets.rdm.RDMSource` neural
      batches carry the sub-RDM over their images; the classifier passes it under this
      name because the regularizer declares ``accepts_dissimilarities``). Its metric must
      be this regularizer's ``metric`` (checked by the classifier when the data is set
      up). Pairs are formed within a rank's batch: the sub-RDM of images on different DDP
      ranks is not gathered.

    Returns (forward): ``loss`` and ``neural_model_corr`` (Pearson r of the RDMs'
    upper triangles, a diagnostic).

    Raises:
        ValueError: bad metric / penalty / fraction; a batch of one image; both or neither
            of ``targets`` and ``dissimilarities``; a dissimilarity matrix that is not
            ``[batch, batch]``.

    Example:
        >>> reg = RSARegularizer(["layer2"], penalty="squared")
        >>> out = reg({"layer2": torch.randn(16, 8, 4, 4)}, torch.rand(16, 50))
        >>> out["loss"].shape
        torch.Size([])
        >>> reg({"layer2": torch.randn(16, 8, 4, 4)}, None, dissimilarities=torch.rand(16, 16))["loss"].shape
        torch.Size([])
    """

    #: takes a neural RDM (``dissimilarities``) in place of responses
    accepts_dissimilarities = True

    def __init__(
        self,
        layers: list[str],
        weight: float = 1.0,
        metric: Literal["correlation", "cosine"] = "correlation",
        penalty: Literal["abs", "squared"] = "abs",
        task_fraction: float | None = None,
        source: str | None = None,
        schedule: Schedule | None = None,
        gather: bool = True,
    ):
        super().__init__(layers, weight, source, schedule, gather)
        if metric not in ("correlation", "cosine"):
            raise ValueError(f"metric: expected 'correlation' or 'cosine', found {metric!r}")
        if penalty not in ("abs", "squared"):
            raise ValueError(f"penalty: expected 'abs' or 'squared', found {penalty!r}")
        if task_fraction is not None and not task_fraction > 0:
            raise ValueError(f"task_fraction: expected a number > 0 or None, found {task_fraction}")
        self.metric = metric
        self.power = 1 if penalty == "abs" else 2
        self.task_fraction = task_fraction

    def loss_weight(self, loss: torch.Tensor, context: StepContext | None):
        if self.task_fraction is None:
            return self.weight
        if context is None or context.task_loss is None:
            raise ValueError("task_fraction: rescaling needs the task loss, but no StepContext with task_loss was passed")
        return self.weight * self.task_fraction * context.task_loss.detach().abs() / loss.detach().abs().clamp_min(1e-12)

    def forward(self, features, targets=None, mask=None, context: StepContext | None = None,
                dissimilarities: torch.Tensor | None = None):
        check_layers(self, features)
        if (targets is None) == (dissimilarities is None):
            raise ValueError("rsa: expected neural targets either as responses ('targets' [batch, neurons]) or as an RDM "
                             f"('dissimilarities' [batch, batch]), found {'both' if targets is not None else 'neither'}")
        if dissimilarities is None:
            check_pairs("rsa", targets.shape[0])
            features, targets, mask = self.gathered(features, targets, mask)
            targets, mask = nan_mask(targets, mask)
            d_neural = F.offdiagonal(F.rdm(targets, self.metric, mask))
        else:
            batch = next(iter(features.values())).shape[0]
            check_pairs("rsa", batch)
            if dissimilarities.shape != (batch, batch):
                raise ValueError(f"dissimilarities: expected the [{batch}, {batch}] neural RDM over the batch's images, "
                                 f"found shape {tuple(dissimilarities.shape)}")
            d_neural = F.offdiagonal(dissimilarities)
        loss, corr = 0.0, 0.0
        for layer in self.layers:
            d_model = F.offdiagonal(F.rdm(features[layer], self.metric))
            loss = loss + F.rsa_loss(d_model, d_neural.to(d_model.dtype), self.power)
            with torch.no_grad():
                a, b = d_model - d_model.mean(), d_neural - d_neural.mean()
                corr = corr + (a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-12)
        n = len(self.layers)
        return {"loss": loss / n, "neural_model_corr": corr / n}
