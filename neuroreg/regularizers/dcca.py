"""Deep CCA regularizer (Pirlot et al. 2022)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from . import functional as F
from .base import Regularizer, Schedule, StepContext, check_layers, impute_mean


def _head(in_features: int, hidden: int, out: int) -> nn.Module:
    if hidden <= 0:
        return nn.Linear(in_features, out)
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, out))


class DCCARegularizer(Regularizer):
    """Maximise the canonical correlations between a projected layer and projected responses.

    Learned heads ``f`` (on the layer, average-pooled to ``pool × pool`` and flattened)
    and ``g`` (on the neural responses) map both views to ``dim`` dimensions;

    .. math:: L = -\\sum_{i=1}^{k} ρ_i\\big(f(X), g(R)\\big)

    with ridge-regularised canonical correlations ρ (:func:`~neuroreg.regularizers.functional.cca`,
    Andrew et al. 2013). With ``objective="ey"`` the loss is the Eckhart–Young
    objective of :func:`~neuroreg.regularizers.functional.ey_cca_objective` on two
    halves of the batch (unbiased minibatch gradients, Chapman et al. 2023); ``rho``
    is still reported.

    Pirlot, Gerum, Efird, Zylberberg, Fyshe (2022). Improving the accuracy and
    robustness of CNNs using a deep CCA neural data regularizer. arXiv:2209.02582.

    The heads are created by :meth:`build` (the classifier calls it with the layer's
    shape from a dry forward pass) and trained with the rest of the model.

    Args:
        layers: exactly one backbone layer.
        weight: loss weight (≥ 0).
        dim: output dimension of both heads.
        k: number of canonical correlations in the loss (``1 <= k <= dim``; default ``dim``).
        eps: ridge ε of the covariances.
        hidden: hidden width of the heads (0: linear heads).
        pool: spatial size the layer's maps are average-pooled to before its head.
        objective: ``"cca"`` (−Σρ) or ``"ey"``.
        source, schedule, gather: see :class:`~neuroreg.regularizers.base.Regularizer`.

    Returns (forward): ``loss``, ``rho_mean`` (mean of the top-k ρ) and ``rho_1``.

    Raises:
        ValueError: not one layer, ``k`` out of range, ``eps <= 0``.

    Example:
        >>> reg = DCCARegularizer(["layer2"], dim=4)
        >>> reg.build({"layer2": (8, 4, 4)}, num_neurons=50)
        >>> reg({"layer2": torch.randn(32, 8, 4, 4)}, torch.rand(32, 50))["loss"].shape
        torch.Size([])
    """

    def __init__(
        self,
        layers: list[str],
        weight: float = 1.0,
        dim: int = 10,
        k: int | None = None,
        eps: float = 1e-3,
        hidden: int = 0,
        pool: int = 4,
        objective: Literal["cca", "ey"] = "cca",
        source: str | None = None,
        schedule: Schedule | None = None,
        gather: bool = True,
    ):
        super().__init__(layers, weight, source, schedule, gather)
        if len(self.layers) != 1:
            raise ValueError(f"layers: the dcca regularizer reads exactly one layer, found {self.layers}")
        k = dim if k is None else k
        if dim < 1 or not 1 <= k <= dim:
            raise ValueError(f"k: expected 1 <= k <= dim ({dim}), found {k}")
        if not eps > 0:
            raise ValueError(f"eps: expected a ridge > 0, found {eps}")
        if objective not in ("cca", "ey"):
            raise ValueError(f"objective: expected 'cca' or 'ey', found {objective!r}")
        if pool < 1:
            raise ValueError(f"pool: expected >= 1, found {pool}")
        self.dim, self.k, self.eps, self.hidden, self.pool, self.objective = dim, k, eps, hidden, pool, objective
        self.layer_head: nn.Module | None = None
        self.neural_head: nn.Module | None = None

    def build(self, feature_shapes, num_neurons: int) -> None:
        shape = tuple(feature_shapes[self.layers[0]])
        flat = shape[0] * min(self.pool, shape[1]) * min(self.pool, shape[2]) if len(shape) == 3 else int(torch.tensor(shape).prod())
        self.layer_head = _head(flat, self.hidden, self.dim)
        self.neural_head = _head(num_neurons, self.hidden, self.dim)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            x = nn.functional.adaptive_avg_pool2d(x, (min(self.pool, x.shape[2]), min(self.pool, x.shape[3])))
        return self.layer_head(x.flatten(1))

    def forward(self, features, targets, mask=None, context: StepContext | None = None):
        check_layers(self, features)
        if self.layer_head is None:
            raise RuntimeError("DCCARegularizer: heads not built; call build(feature_shapes, num_neurons) first")
        if targets.shape[0] < 4:
            raise ValueError(f"batch size: the dcca regularizer needs >= 4 images, found {targets.shape[0]}")
        # project locally, then gather the low-dimensional projections across ranks
        zx = self._project(features[self.layers[0]])
        zy = self.neural_head(impute_mean(targets, mask))
        feats, zy, _ = self.gathered({"z": zx}, zy, None)
        zx = feats["z"]
        rho = F.cca(zx, zy, self.k, self.eps)
        if self.objective == "cca":
            loss = -rho.sum()
        else:
            h = zx.shape[0] // 2
            loss = F.ey_cca_objective(zx[:h], zy[:h], zx[h : 2 * h], zy[h : 2 * h])
        return {"loss": loss, "rho_mean": rho.detach().mean(), "rho_1": rho.detach()[0]}
