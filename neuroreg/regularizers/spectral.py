"""Eigenspectrum regularizers: pull a layer's covariance spectrum toward a power law.

Two forms: :class:`SpectralRegularizer` (Nassar et al. 2020: per-eigenvalue
asymmetric penalty toward ``γ_n ∝ n^{-α}``) and :class:`SpectralSlopeRegularizer`
(Gerum et al. 2022 style: the fitted log–log slope toward ``-α``).
"""

from __future__ import annotations

import torch

from . import functional as F
from .base import Regularizer, Schedule, StepContext, check_layers


class _SpectrumBase(Regularizer):
    needs_targets = False

    def __init__(self, layers, weight, alpha, n_max, source, schedule, gather):
        super().__init__(layers, weight, source, schedule, gather)
        if not alpha > 0:
            raise ValueError(f"alpha: expected a power-law exponent > 0, found {alpha}")
        if n_max is not None and n_max < 2:
            raise ValueError(f"n_max: expected >= 2 or None, found {n_max}")
        self.alpha = float(alpha)
        self.n_max = n_max

    def _spectra(self, features):
        check_layers(self, features)
        batch = features[self.layers[0]].shape[0]
        if batch < 3:
            raise ValueError(f"batch size: a spectral regularizer needs >= 3 images, found {batch}")
        features, _, _ = self.gathered(features, None, None)
        for layer in self.layers:
            lam = F.eigenspectrum(features[layer])
            usable = min(lam.shape[0], features[layer].shape[0] - 1)  # centring removes one dimension
            n_max = usable if self.n_max is None else self.n_max
            if n_max > usable:
                raise ValueError(
                    f"n_max: expected <= {usable} (non-zero eigenvalues of layer {layer!r} with batch {features[layer].shape[0]}), found {n_max}"
                )
            yield layer, lam, n_max


class SpectralRegularizer(_SpectrumBase):
    """Push the eigenspectrum of a layer's covariance toward ``n^{-α}`` (Nassar et al. 2020).

    With ``λ_n`` the covariance eigenvalues of the (flattened) layer over the batch,
    the target ``γ_n = λ_τ (n/τ)^{-α}`` is anchored at index τ (``λ_τ`` detached) and

    .. math:: L = \\frac{1}{n_{max} - τ + 1} \\sum_{n=τ}^{n_{max}}
              \\Big[\\big(\\tfrac{λ_n}{γ_n} - 1\\big)^2 + \\max\\big(0, \\tfrac{λ_n}{γ_n} - 1\\big)\\Big]

    — eigenvalues above the power law are penalised more than those below.

    Nassar, Sokol, Chung, Harris, Park (2020). On 1/n neural representation and
    robustness. NeurIPS 33.

    Args:
        layers: backbone layers (losses averaged).
        weight: loss weight (≥ 0).
        alpha: exponent α > 0 (1 + 2/d for d-dimensional inputs in the paper).
        tau: first regularised index (1-based, ≥ 1).
        n_max: last index (``None``: batch − 1).
        source, schedule, gather: see :class:`~neuroreg.regularizers.base.Regularizer`
            (no targets are read).

    Returns (forward): ``loss`` and ``alpha_fit`` (fitted exponent over τ…n_max).

    Raises:
        ValueError: α ≤ 0, τ < 1, τ ≥ n_max, n_max beyond the batch's spectrum.

    Example:
        >>> reg = SpectralRegularizer(["layer1"], alpha=1.0, tau=5)
        >>> reg({"layer1": torch.randn(64, 100)}, None)["loss"].shape
        torch.Size([])
    """

    def __init__(
        self,
        layers: list[str],
        weight: float = 1.0,
        alpha: float = 1.0,
        tau: int = 5,
        n_max: int | None = None,
        source: str | None = None,
        schedule: Schedule | None = None,
        gather: bool = True,
    ):
        super().__init__(layers, weight, alpha, n_max, source, schedule, gather)
        if tau < 1:
            raise ValueError(f"tau: expected an index >= 1, found {tau}")
        if n_max is not None and tau >= n_max:
            raise ValueError(f"tau: expected < n_max ({n_max}), found {tau}")
        self.tau = tau

    def forward(self, features, targets=None, mask=None, context: StepContext | None = None):
        loss, fit = 0.0, 0.0
        for _, lam, n_max in self._spectra(features):
            if self.tau >= n_max:
                raise ValueError(f"tau: expected < n_max ({n_max}), found {self.tau}")
            n = torch.arange(self.tau, n_max + 1, dtype=lam.dtype, device=lam.device)
            gamma = lam[self.tau - 1].detach().clamp_min(1e-12) * (n / self.tau) ** (-self.alpha)
            ratio = lam[self.tau - 1 : n_max] / gamma - 1.0
            loss = loss + (ratio.pow(2) + ratio.clamp_min(0)).mean()
            fit = fit + F.power_law_fit(lam.detach(), self.tau, n_max)
        k = len(self.layers)
        return {"loss": loss / k, "alpha_fit": fit / k}


class SpectralSlopeRegularizer(_SpectrumBase):
    """Push the fitted log–log slope of a layer's eigenspectrum to ``-α`` (Gerum et al. 2022).

    .. math:: L = \\big(\\hat α(λ_{n_{min}}, …, λ_{n_{max}}) - α\\big)^2

    with ``α̂`` the least-squares power-law exponent of
    :func:`~neuroreg.regularizers.functional.power_law_fit`.

    Gerum, Erdem, Fyshe, Zylberberg (2022). Regularizing neural networks toward a
    biological power-law spectrum (as in mouse V1, Stringer et al. 2019).

    Args:
        layers: backbone layers (losses averaged).
        weight: loss weight (≥ 0).
        alpha: target exponent α > 0.
        n_min, n_max: fitted index range (1-based; ``n_max=None``: the last eigenvalue that is not
            numerically zero, i.e. above ``1e-6`` of the largest, at most batch − 1: the log of a
            zero eigenvalue is rounding noise, and a slope fitted through it is not reproducible).
        source, schedule, gather: see :class:`~neuroreg.regularizers.base.Regularizer`.

    Returns (forward): ``loss`` and ``alpha_fit``.

    Example:
        >>> reg = SpectralSlopeRegularizer(["layer1"], alpha=1.0, n_min=2)
        >>> white = torch.randn(256, 100)  # white noise: a flatter spectrum than 1/n
        >>> float(reg({"layer1": white}, None)["alpha_fit"]) < 1.0
        True
    """

    def __init__(
        self,
        layers: list[str],
        weight: float = 1.0,
        alpha: float = 1.0,
        n_min: int = 1,
        n_max: int | None = None,
        source: str | None = None,
        schedule: Schedule | None = None,
        gather: bool = True,
    ):
        super().__init__(layers, weight, alpha, n_max, source, schedule, gather)
        if n_min < 1 or (n_max is not None and n_min >= n_max):
            raise ValueError(f"n_min: expected 1 <= n_min < n_max ({n_max}), found {n_min}")
        self.n_min = n_min

    def forward(self, features, targets=None, mask=None, context: StepContext | None = None):
        loss, fit = 0.0, 0.0
        for _, lam, n_max in self._spectra(features):
            if self.n_max is None:  # stop at the numerical rank (a rank-deficient layer has zero eigenvalues)
                rank = int((lam.detach() > lam.detach()[0] * 1e-6).sum())
                n_max = max(min(n_max, rank), self.n_min + 1)
            a = F.power_law_fit(lam, self.n_min, n_max)
            loss = loss + (a - self.alpha) ** 2
            fit = fit + a.detach()
        k = len(self.layers)
        return {"loss": loss / k, "alpha_fit": fit / k}
