"""Readouts: core feature map ``[batch, C, H, W]`` → responses ``[batch, neurons]``.

Every readout takes ``in_shape = (C, H, W)`` and ``n_neurons``, returns the
pre-nonlinearity response, and has ``regularizer() -> Tensor`` (a scalar penalty).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _check_shape(name: str, in_shape, n_neurons: int) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in in_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"{name}: 'in_shape': expected (C, H, W) positive ints, found {in_shape}")
    if int(n_neurons) < 1:
        raise ValueError(f"{name}: 'n_neurons': expected >= 1, found {n_neurons}")
    return shape


def _bias(name: str, n_neurons: int, bias_init) -> nn.Parameter:
    if bias_init is None:
        return nn.Parameter(torch.zeros(n_neurons))
    b = torch.as_tensor(bias_init, dtype=torch.float32).flatten()
    if b.shape != (n_neurons,):
        raise ValueError(f"{name}: 'bias_init': expected {n_neurons} values (one per neuron), found shape {tuple(b.shape)}")
    if not torch.isfinite(b).all():
        raise ValueError(f"{name}: 'bias_init': expected finite values, found {int((~torch.isfinite(b)).sum())} NaN/inf")
    return nn.Parameter(b.clone())


class GaussianReadout(nn.Module):
    """Each neuron reads the feature vector at one learned position (Lurz et al. 2021).

    Neuron ``n`` has a receptive-field position ``μ_n ∈ [-1, 1]²`` (feature-map
    coordinates), a spread ``σ_n``, features ``w_n ∈ R^C`` and a bias ``b_n``:

    ``r_n = Σ_c w_nc · F_c(p_n) + b_n``, ``p_n = μ_n + σ_n ⊙ ε``, ``ε ~ N(0, I)``
    during training (one sample per image) and ``p_n = μ_n`` in eval mode; ``F(p)``
    is bilinear interpolation of the feature map.

    Regulariser: ``gamma_features · mean_n Σ_c |w_nc|`` (L1 on features).

    Args:
        in_shape: ``(C, H, W)`` of the core's output.
        n_neurons: number of neurons.
        bias_init: ``[n_neurons]`` initial bias (e.g. the mean response after the
            inverse output nonlinearity), zeros when ``None``.
        init_mu_range: initial positions uniform in ``[-r, r]²``.
        init_sigma: initial spread (feature-map units, the map spans [-1, 1]).
        gamma_features: L1 weight on the features.

    Shapes: ``[batch, C, H, W]`` → ``[batch, n_neurons]``.

    Example:
        >>> ro = GaussianReadout((8, 16, 16), n_neurons=5)
        >>> ro(torch.randn(2, 8, 16, 16)).shape
        torch.Size([2, 5])
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        n_neurons: int,
        bias_init: torch.Tensor | None = None,
        init_mu_range: float = 0.5,
        init_sigma: float = 0.2,
        gamma_features: float = 0.0,
    ):
        super().__init__()
        self.in_shape = _check_shape("GaussianReadout", in_shape, n_neurons)
        self.n_neurons = int(n_neurons)
        if not 0.0 <= init_mu_range <= 1.0:
            raise ValueError(f"GaussianReadout: 'init_mu_range': expected a value in [0, 1], found {init_mu_range}")
        if init_sigma <= 0:
            raise ValueError(f"GaussianReadout: 'init_sigma': expected > 0, found {init_sigma}")
        c = self.in_shape[0]
        self.gamma_features = gamma_features
        self.mu = nn.Parameter(torch.empty(self.n_neurons, 2).uniform_(-init_mu_range, init_mu_range))
        self.log_sigma = nn.Parameter(torch.full((self.n_neurons, 2), float(torch.log(torch.tensor(init_sigma)))))
        self.features = nn.Parameter(torch.randn(self.n_neurons, c) / c)
        self.bias = _bias("GaussianReadout", self.n_neurons, bias_init)

    def positions(self, batch: int, sample: bool) -> torch.Tensor:
        """Sampling grid ``[batch, 1, n_neurons, 2]`` in ``[-1, 1]`` (x, y)."""
        mu = self.mu.clamp(-1.0, 1.0).unsqueeze(0).expand(batch, -1, -1)
        if sample:
            mu = mu + self.log_sigma.exp() * torch.randn_like(mu)
        return mu.clamp(-1.0, 1.0).unsqueeze(1)

    def forward(self, x: torch.Tensor, sample: bool | None = None) -> torch.Tensor:
        """``[batch, C, H, W]`` → ``[batch, n_neurons]``; ``sample`` defaults to ``self.training``."""
        if x.ndim != 4 or tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(f"GaussianReadout: input: expected [batch, {', '.join(map(str, self.in_shape))}], found {tuple(x.shape)}")
        sample = self.training if sample is None else sample
        grid = self.positions(x.shape[0], sample)
        feats = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)  # [B, C, 1, N]
        return torch.einsum("bcn,nc->bn", feats[:, :, 0], self.features) + self.bias

    def regularizer(self) -> torch.Tensor:
        return self.gamma_features * self.features.abs().sum(dim=1).mean()


class FactorizedReadout(nn.Module):
    """Spatial mask × feature weights per neuron (Klindt et al. 2017).

    ``r_n = Σ_{c,h,w} F_{c,h,w} · s_{n,h,w} · w_{n,c} + b_n``.

    Regulariser: ``gamma_spatial · mean_n Σ_{h,w} |s_nhw| + gamma_smooth · mean_n
    Σ_{h,w} (L * s_n)²_hw + gamma_features · mean_n Σ_c |w_nc|`` with ``L`` the 3×3
    discrete Laplacian (zero padding): sparse, smooth masks.

    Args:
        in_shape: ``(C, H, W)`` of the core's output.
        n_neurons: number of neurons.
        bias_init: ``[n_neurons]`` initial bias (zeros when ``None``).
        gamma_spatial: L1 weight on the spatial masks.
        gamma_smooth: weight of the Laplacian (roughness) penalty on the masks.
        gamma_features: L1 weight on the feature weights.

    Shapes: ``[batch, C, H, W]`` → ``[batch, n_neurons]``.
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        n_neurons: int,
        bias_init: torch.Tensor | None = None,
        gamma_spatial: float = 0.0,
        gamma_smooth: float = 0.0,
        gamma_features: float = 0.0,
    ):
        super().__init__()
        self.in_shape = _check_shape("FactorizedReadout", in_shape, n_neurons)
        self.n_neurons = int(n_neurons)
        c, h, w = self.in_shape
        self.gamma_spatial = gamma_spatial
        self.gamma_smooth = gamma_smooth
        self.gamma_features = gamma_features
        self.spatial = nn.Parameter(torch.randn(self.n_neurons, h, w) / (h * w) ** 0.5)
        self.features = nn.Parameter(torch.randn(self.n_neurons, c) / c)
        self.bias = _bias("FactorizedReadout", self.n_neurons, bias_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(f"FactorizedReadout: input: expected [batch, {', '.join(map(str, self.in_shape))}], found {tuple(x.shape)}")
        pooled = torch.einsum("bchw,nhw->bnc", x, self.spatial)
        return (pooled * self.features).sum(-1) + self.bias

    def regularizer(self) -> torch.Tensor:
        reg = (
            self.gamma_spatial * self.spatial.abs().sum(dim=(1, 2)).mean()
            + self.gamma_features * self.features.abs().sum(dim=1).mean()
        )
        if self.gamma_smooth:
            lap = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]]).to(self.spatial).view(1, 1, 3, 3)
            rough = F.conv2d(self.spatial.unsqueeze(1), lap, padding=1)
            reg = reg + self.gamma_smooth * rough.pow(2).sum(dim=(1, 2, 3)).mean()
        return reg


class MultiReadout(nn.ModuleDict):
    """One readout per dataset (animal, session, species) on a shared core.

    ``forward(x, dataset)`` applies ``self[dataset]``; ``regularizer(dataset)`` is that
    readout's penalty (all of them when ``dataset`` is ``None``).

    Raises:
        KeyError: an unknown dataset name (lists the known ones).
    """

    def _get(self, dataset: str) -> nn.Module:
        if dataset not in self:
            raise KeyError(f"MultiReadout: dataset {dataset!r} has no readout; known datasets are {list(self.keys())}")
        return self[dataset]

    def forward(self, x: torch.Tensor, dataset: str) -> torch.Tensor:
        return self._get(dataset)(x)

    def regularizer(self, dataset: str | None = None) -> torch.Tensor:
        if dataset is not None:
            return self._get(dataset).regularizer()
        return sum(r.regularizer() for r in self.values())
