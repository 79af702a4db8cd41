"""VOneBlock: a fixed, stochastic model of primate V1 at the front of a CNN (Dapello et al. 2020).

Structure (re-implemented after VOneNet's description, sharing the receptive-field
distributions and kernels of :mod:`neuroreg.gabor` with the simulated population):

1. a fixed Gabor filter bank ``G`` (parameters from :func:`~neuroreg.gabor.sample_gabor_params`,
   each filter reading one input channel chosen at random for RGB input);
2. simple cells ``s = relu(G_even * x)``, complex cells
   ``c = sqrt((G_even * x)² + (G_odd * x)²) / √2`` (energy model);
3. a gain ``k`` to spike-count-like units, then Poisson-like noise
   ``r = k·v + σ·sqrt(relu(k·v) + ε)·ξ``, ``ξ ~ N(0, 1)`` (reparameterised, so gradients
   flow), mapped back by ``1/k``;
4. a learned 1×1 "bottleneck" convolution to the channels the backbone expects.

Dapello, Marques, Schrimpf, Geiger, Cox, DiCarlo (2020). Simulating a primary visual
cortex at the front of CNNs improves robustness to image perturbations. NeurIPS 33.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import nn

from neuroreg.gabor import gabor_kernels, sample_gabor_params


class VOneBlock(nn.Module):
    """Fixed Gabor filter bank + simple/complex cells + Poisson-like noise + 1×1 bottleneck.

    Args:
        in_channels: image channels (1 or 3).
        out_channels: channels after the bottleneck (the backbone's ``in_channels``).
        simple_channels, complex_channels: number of simple and complex cells.
        kernel_size: Gabor kernel side in pixels (odd).
        stride: convolution stride.
        preset: receptive-field distributions (``"macaque_v1"`` or ``"mouse_v1"``).
        pixels_per_degree: pixels per degree of visual angle of the input (the
            simulated population's default for the preset when ``None``).
        gain: ``k``, filter output → spike-count-like units.
        noise: ``"neuronal"`` (Poisson-like, as VOneNet) or ``"off"``.
        noise_scale: σ, the noise standard deviation per √rate (1: Poisson variance).
        noise_in_eval: keep the noise in eval mode (VOneNet does; turn off for a
            deterministic evaluation).
        seed: seed of the filter parameters and channel assignment.

    Shapes: ``[batch, in_channels, H, W]`` → ``[batch, out_channels, ⌈H/stride⌉, ⌈W/stride⌉]``.

    Example:
        >>> vone = VOneBlock(in_channels=1, out_channels=16, simple_channels=8, complex_channels=8)
        >>> vone(torch.rand(2, 1, 32, 32)).shape
        torch.Size([2, 16, 32, 32])
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 64,
        simple_channels: int = 32,
        complex_channels: int = 32,
        kernel_size: int = 11,
        stride: int = 1,
        preset: str = "macaque_v1",
        pixels_per_degree: float | None = None,
        gain: float = 25.0,
        noise: Literal["neuronal", "off"] = "neuronal",
        noise_scale: float = 1.0,
        noise_in_eval: bool = True,
        seed: int = 0,
    ):
        super().__init__()
        from neuroreg.data.simulated import DEFAULT_PIXELS_PER_DEGREE

        if in_channels not in (1, 3):
            raise ValueError(f"in_channels: expected 1 or 3, found {in_channels}")
        if simple_channels < 0 or complex_channels < 0 or simple_channels + complex_channels < 1:
            raise ValueError(f"simple_channels, complex_channels: expected >= 0 with a positive sum, found {simple_channels}, {complex_channels}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size: expected a positive odd number, found {kernel_size}")
        if noise not in ("neuronal", "off"):
            raise ValueError(f"noise: expected 'neuronal' or 'off', found {noise!r}")
        if not gain > 0 or not noise_scale >= 0:
            raise ValueError(f"gain, noise_scale: expected > 0 and >= 0, found {gain}, {noise_scale}")
        ppd = DEFAULT_PIXELS_PER_DEGREE.get(preset, 20.0) if pixels_per_degree is None else pixels_per_degree
        self.in_channels, self.out_channels = in_channels, out_channels
        self.simple_channels, self.complex_channels = simple_channels, complex_channels
        self.stride, self.gain, self.noise, self.noise_scale = stride, gain, noise, noise_scale
        self.noise_in_eval = noise_in_eval
        self.seed = seed

        n = simple_channels + complex_channels
        rng = np.random.default_rng(seed)
        self.params = sample_gabor_params(n, preset, rng)
        even = gabor_kernels(self.params, kernel_size, ppd)
        odd = gabor_kernels(self.params.subset(slice(simple_channels, n)), kernel_size, ppd, phase_offset=np.pi / 2)
        kernels = np.concatenate([even, odd])  # [n + complex, k, k]
        channel = rng.integers(0, in_channels, size=n)
        channel = np.concatenate([channel, channel[simple_channels:]])  # a quadrature pair reads one channel
        weight = np.zeros((len(kernels), in_channels, kernel_size, kernel_size), dtype=np.float32)
        weight[np.arange(len(kernels)), channel] = kernels
        self.register_buffer("weight", torch.from_numpy(weight))
        self.register_buffer("frozen_noise", torch.empty(0), persistent=False)
        self.bottleneck = nn.Conv2d(n, out_channels, kernel_size=1, bias=False)

    @property
    def noise_active(self) -> bool:
        return self.noise == "neuronal" and self.noise_scale > 0 and (self.training or self.noise_in_eval)

    def freeze_noise(self, shape: tuple[int, ...], seed: int = 0) -> None:
        """Use one fixed noise sample ξ of ``shape`` ``[batch, channels, h, w]`` (e.g. for attacks)."""
        g = torch.Generator().manual_seed(seed)
        self.frozen_noise = torch.randn(tuple(shape), generator=g).to(self.weight.device)

    def unfreeze_noise(self) -> None:
        """Draw fresh noise on every forward pass again."""
        self.frozen_noise = torch.empty(0, device=self.weight.device)

    def responses(self, x: torch.Tensor) -> torch.Tensor:
        """``[batch, simple + complex, h, w]`` V1 responses before the bottleneck."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"VOneBlock: input: expected [batch, {self.in_channels}, H, W], found {tuple(x.shape)}")
        q = nn.functional.conv2d(x, self.weight, stride=self.stride, padding=self.weight.shape[-1] // 2)
        ns, nc = self.simple_channels, self.complex_channels
        simple = torch.relu(q[:, :ns])
        complex_ = torch.sqrt(q[:, ns : ns + nc] ** 2 + q[:, ns + nc :] ** 2 + 1e-12) / np.sqrt(2.0)
        v = self.gain * torch.cat([simple, complex_], dim=1)
        if self.noise_active:
            if self.frozen_noise.numel():
                if self.frozen_noise.shape != v.shape:
                    raise ValueError(f"VOneBlock: frozen noise has shape {tuple(self.frozen_noise.shape)}, responses {tuple(v.shape)}")
                xi = self.frozen_noise
            else:
                xi = torch.randn_like(v)
            v = v + self.noise_scale * torch.sqrt(torch.relu(v) + 1e-5) * xi
        return v / self.gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(self.responses(x))


class VOneBackbone(nn.Module):
    """A VOneBlock in front of any backbone: ``backbone(vone(x))``.

    Layers keep their module paths under the two parts: ``vone.bottleneck``,
    ``backbone.layer1``, ...

    Args:
        vone: the front end; its ``out_channels`` must equal the backbone's ``in_channels``.
        backbone: a backbone with ``out_features`` (and ``in_channels``).

    Raises:
        ValueError: channel mismatch between the two.
    """

    def __init__(self, vone: VOneBlock, backbone: nn.Module):
        super().__init__()
        if not hasattr(backbone, "out_features"):
            raise ValueError(f"backbone: expected a module with 'out_features', found {type(backbone).__name__}")
        expected = getattr(backbone, "in_channels", vone.out_channels)
        if expected != vone.out_channels:
            raise ValueError(
                f"vone.out_channels: expected {expected} (the backbone's in_channels), found {vone.out_channels}"
            )
        self.vone = vone
        self.backbone = backbone
        self.in_channels = vone.in_channels
        self.out_features = backbone.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.vone(x))
