"""Representational similarity regularizer (Li et al. 2019)."""

from __future__ import annotations

import torch
from torch import nn

from . import functional as F
from .base import Regularizer, Schedule, StepContext, check_layers, check_pairs, nan_mask


class SimilarityRegularizer(Regularizer):
    """Match the model's image-pair similarities to the neural ones.

    For each tapped layer l the model similarity ``S_l`` is the cosine similarity
    of centred, flattened activations (:func:`~neuroreg.regularizers.functional.cosine_similarity_matrix`);
    layers are combined with learned, softmax-normalised weights,
    ``S_model = Σ_l softmax(γ)_l S_l``, and the loss is

    .. math:: L = \\operatorname{mean}_{i<j} (\\operatorname{atanh} S^{model}_{ij} - \\operatorname{atanh} S^{neural}_{ij})^2

    Li, Z. et al. (2019). Learning from brains how to regularize machines. NeurIPS.

    Args:
        layers: backbone layers to combine.
        weight: loss weight (≥ 0).
        clamp: similarity clamp before atanh, for numerical safety.
        learn_layer_weights: learn γ (otherwise equal weights).
        source, schedule, gather: see :class:`~neuroreg.regularizers.base.Regularizer`.

    Returns (forward): ``loss``, ``neural_model_corr`` (Pearson r of the pair
    similarities, a diagnostic) and ``layer_weight/<layer>`` for each layer.

    Example:
        >>> reg = SimilarityRegularizer(["layer1"])
        >>> out = reg({"layer1": torch.randn(16, 8, 4, 4)}, torch.rand(16, 50))
        >>> out["loss"].shape
        torch.Size([])
    """

    def __init__(
        self,
        layers: list[str],
        weight: float = 1.0,
        clamp: float = 1e-4,
        learn_layer_weights: bool = True,
        source: str | None = None,
        schedule: Schedule | None = None,
        gather: bool = True,
    ):
        super().__init__(layers, weight, source, schedule, gather)
        if not 0 < clamp < 1:
            raise ValueError(f"clamp: expected a number in (0, 1), found {clamp}")
        self.clamp = clamp
        self.layer_logits = nn.Parameter(torch.zeros(len(self.layers)), requires_grad=learn_layer_weights)

    def forward(
        self,
        features: dict[str, torch.Tensor],
        targets: torch.Tensor,
        mask: torch.Tensor | None = None,
        context: StepContext | None = None,
    ):
        check_layers(self, features)
        check_pairs("similarity", targets.shape[0])
        features, targets, mask = self.gathered(features, targets, mask)
        targets, mask = nan_mask(targets, mask)
        s_neural = F.cosine_similarity_matrix(targets, mask)
        w = torch.softmax(self.layer_logits, dim=0)
        s_model = sum(w[i] * F.cosine_similarity_matrix(features[layer]) for i, layer in enumerate(self.layers))
        loss = F.similarity_loss(s_model, s_neural, self.clamp)
        with torch.no_grad():
            a, b = F.offdiagonal(s_model), F.offdiagonal(s_neural)
            a, b = a - a.mean(), b - b.mean()
            corr = (a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-12)
        out = {"loss": loss, "neural_model_corr": corr}
        for i, layer in enumerate(self.layers):
            out[f"layer_weight/{layer}"] = w[i].detach()
        return out
