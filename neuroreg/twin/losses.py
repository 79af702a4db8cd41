"""Twin losses: likelihoods of recorded responses given predicted ones, NaN-masked.

Each loss has ``nonlinearity(x)`` (pre-activation → predicted response),
``inverse(mean)`` (a response level → pre-activation, used to initialise readout
biases), ``check(responses, where)`` (refuses responses outside its support; given a
:class:`~neuroreg.data.recording.ResponseSummary` or the ``[T, K]`` array) and
``forward(pred, target) -> {"loss": ...}``: the mean over recorded entries (NaN
targets are not recorded and are ignored), so it does not depend on batch size.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..data.recording import ResponseSummary


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, values, torch.zeros_like(values)).sum() / mask.sum().clamp_min(1)


class PoissonLoss(nn.Module):
    """Poisson negative log-likelihood for non-negative responses (spikes, deconvolved).

    ``L = mean_{(b,n) recorded} (λ_bn − y_bn · log(λ_bn + eps))`` (the ``log y!`` term
    is constant and dropped), with ``λ = ELU(x) + 1 > 0`` the predicted rate.

    Args:
        eps: added inside the log for stability.

    Raises (``check``):
        ValueError: responses with negative values; the message says to use
            :class:`GaussianLoss`.

    Example:
        >>> loss = PoissonLoss()
        >>> loss(torch.ones(2, 3), torch.tensor([[0.0, 1.0, float("nan")], [2.0, 1.0, 0.0]]))["loss"].shape
        torch.Size([])
    """

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = eps

    @staticmethod
    def nonlinearity(x: torch.Tensor) -> torch.Tensor:
        """``ELU(x) + 1``: maps pre-activations to positive rates."""
        return F.elu(x) + 1.0

    @staticmethod
    def inverse(mean: torch.Tensor) -> torch.Tensor:
        """Pre-activation whose ``ELU + 1`` is ``mean`` (``mean − 1`` above 1, ``log(mean)`` below)."""
        mean = mean.clamp_min(1e-3)
        return torch.where(mean >= 1.0, mean - 1.0, torch.log(mean))

    def check(self, responses: np.ndarray | ResponseSummary, where: str) -> None:
        summary = responses if isinstance(responses, ResponseSummary) else ResponseSummary.of(np.asarray(responses))
        if summary.negative:
            raise ValueError(
                f"{where}: 'responses': PoissonLoss expects non-negative responses (spikes, deconvolved), found "
                f"{summary.negative} negative values (min {summary.min_negative:.3g}); use "
                "neuroreg.twin.losses.GaussianLoss for responses that can be negative (e.g. dF/F)"
            )

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """``pred`` ``[batch, neurons]`` rates (> 0), ``target`` ``[batch, neurons]`` (NaN: not recorded)."""
        mask = ~torch.isnan(target)
        t = torch.nan_to_num(target)
        return {"loss": _masked_mean(pred - t * torch.log(pred + self.eps), mask)}


class GaussianLoss(nn.Module):
    """Gaussian negative log-likelihood with fixed variance, i.e. mean squared error.

    ``L = mean_{(b,n) recorded} (ŷ_bn − y_bn)²``, for responses that can be negative
    (dF/F). The output nonlinearity is the identity.

    Example:
        >>> GaussianLoss()(torch.zeros(1, 2), torch.tensor([[1.0, float("nan")]]))["loss"]
        tensor(1.)
    """

    @staticmethod
    def nonlinearity(x: torch.Tensor) -> torch.Tensor:
        return x

    @staticmethod
    def inverse(mean: torch.Tensor) -> torch.Tensor:
        return mean

    def check(self, responses: np.ndarray | ResponseSummary, where: str) -> None:
        return None

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        mask = ~torch.isnan(target)
        return {"loss": _masked_mean((pred - torch.nan_to_num(target)) ** 2, mask)}
