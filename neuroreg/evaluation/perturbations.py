"""Random (non-adversarial) image perturbations for robustness evaluation.

Every function maps images in [0, 1] to perturbed images in [0, 1] of the same shape
and dtype, and takes an optional ``torch.Generator`` so that an evaluation is
reproducible from a seed.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def gaussian_noise(x: Tensor, sigma: float, generator: torch.Generator | None = None) -> Tensor:
    """Add i.i.d. Gaussian pixel noise and clamp back to the image range.

    .. math::

        \\tilde x = \\operatorname{clip}_{[0, 1]}(x + \\sigma \\varepsilon),
        \\qquad \\varepsilon \\sim \\mathcal N(0, I)

    Args:
        x: images ``[batch, channels, height, width]`` (any shape works) in [0, 1],
            floating point.
        sigma: standard deviation of the noise in image units (0 returns a copy of ``x``).
        generator: source of randomness. Noise is drawn on the generator's device (a CPU
            generator seeds CPU and GPU runs alike) and moved to ``x.device``. ``None``
            draws on ``x.device`` from torch's global generator.

    Returns:
        Perturbed images, same shape / dtype / device as ``x``, in [0, 1].

    Raises:
        ValueError: if ``sigma`` is negative or not finite, or ``x`` is not floating point.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> noisy = gaussian_noise(torch.full((2, 3, 8, 8), 0.5), 0.1, generator=g)
        >>> bool(((noisy >= 0) & (noisy <= 1)).all())
        True
    """
    sigma = float(sigma)
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"gaussian_noise: sigma must be a finite number >= 0, found {sigma}")
    if not torch.is_floating_point(x):
        raise ValueError(f"gaussian_noise: x must be a floating-point tensor in [0, 1], found dtype {x.dtype}")
    if sigma == 0:
        return x.clone()
    device = generator.device if generator is not None else x.device
    noise = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
    return (x + sigma * noise).clamp_(0.0, 1.0)
