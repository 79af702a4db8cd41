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


# ---------------------------------------------------------------------------- corruptions
#
# Common corruptions after Hendrycks & Dietterich (2019, ImageNet-C / CIFAR-10-C), re-
# implemented in torch with per-image-size constants. Each corruption has 5 severities;
# the constants of the 32×32 preset are in the range of CIFAR-10-C's, and the 64×64
# preset doubles every constant measured in pixels (blur widths, motion length, pixelation
# block, elastic displacement) so a corruption covers the same fraction of the image.
# Constants that are relative (noise level, contrast factor, JPEG quality) are shared. Calibration check (tests): the mean squared change of an image grows
# with severity for every corruption and both presets.

#: corruption name -> ``{preset size: 5 severity constants}`` (see each function for units)
SEVERITIES: dict[str, dict[int, tuple]] = {
    "gaussian_noise": {32: (0.04, 0.06, 0.08, 0.09, 0.10), 64: (0.04, 0.06, 0.08, 0.09, 0.10)},
    "shot_noise": {32: (500.0, 250.0, 100.0, 75.0, 50.0), 64: (500.0, 250.0, 100.0, 75.0, 50.0)},
    "impulse_noise": {32: (0.01, 0.02, 0.03, 0.05, 0.07), 64: (0.01, 0.02, 0.03, 0.05, 0.07)},
    "gaussian_blur": {32: (0.4, 0.6, 0.8, 1.0, 1.5), 64: (0.8, 1.2, 1.6, 2.0, 3.0)},
    "defocus_blur": {32: (0.5, 0.8, 1.1, 1.5, 2.0), 64: (1.0, 1.6, 2.2, 3.0, 4.0)},
    "motion_blur": {32: (2.0, 3.0, 4.0, 5.0, 7.0), 64: (4.0, 6.0, 8.0, 10.0, 14.0)},
    "contrast": {32: (0.75, 0.5, 0.4, 0.3, 0.15), 64: (0.75, 0.5, 0.4, 0.3, 0.15)},
    "brightness": {32: (0.05, 0.1, 0.15, 0.2, 0.3), 64: (0.05, 0.1, 0.15, 0.2, 0.3)},
    "fog": {32: (0.2, 0.3, 0.4, 0.55, 0.7), 64: (0.2, 0.3, 0.4, 0.55, 0.7)},
    "pixelate": {32: (2, 3, 4, 5, 6), 64: (4, 6, 8, 10, 12)},
    "jpeg": {32: (80, 65, 58, 50, 40), 64: (80, 65, 58, 50, 40)},
    "elastic": {32: (0.5, 1.0, 1.5, 2.0, 2.5), 64: (1.0, 2.0, 3.0, 4.0, 5.0)},
}
#: every corruption name, in report order
CORRUPTIONS: tuple[str, ...] = tuple(SEVERITIES)
PRESET_SIZES = (32, 64)


def _check_images(x: Tensor, name: str) -> None:
    if not torch.is_floating_point(x) or x.dim() != 4:
        raise ValueError(
            f"{name}: x must be floating-point images [batch, channels, height, width] in [0, 1], "
            f"found dtype {x.dtype} with shape {tuple(x.shape)}"
        )


def preset_size(image_size: int) -> int:
    """The calibrated preset (32 or 64) closest to ``image_size`` in log scale (<= 45 → 32)."""
    return 32 if image_size * image_size <= 32 * 64 else 64


def severity_constant(name: str, severity: int, image_size: int) -> float:
    """The constant of corruption ``name`` at ``severity`` (1..5) for images of side ``image_size``.

    Raises:
        ValueError: unknown name (lists the known ones) or severity outside 1..5.
    """
    if name not in SEVERITIES:
        raise ValueError(f"corrupt: unknown corruption name {name!r}; expected one of {list(CORRUPTIONS)}")
    if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= 5:
        raise ValueError(f"corrupt: severity must be an integer in 1..5, found {severity!r}")
    return SEVERITIES[name][preset_size(image_size)][severity - 1]


def _draw(shape: tuple[int, ...], x: Tensor, generator: torch.Generator | None, kind: str = "randn") -> Tensor:
    device = generator.device if generator is not None else x.device
    fn = torch.randn if kind == "randn" else torch.rand
    return fn(shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def _depthwise(x: Tensor, kernel: Tensor) -> Tensor:
    """Convolve every channel of ``x [B, C, H, W]`` with ``kernel [kh, kw]`` (reflect padding,
    replicate when the kernel is wider than the image)."""
    kh, kw = kernel.shape
    c = x.shape[1]
    pad = (kw // 2, kw - 1 - kw // 2, kh // 2, kh - 1 - kh // 2)
    mode = "reflect" if max(pad) < min(x.shape[-2:]) else "replicate"  # reflect needs pad < size
    padded = torch.nn.functional.pad(x, pad, mode=mode)
    weight = kernel.to(x).expand(c, 1, kh, kw)
    return torch.nn.functional.conv2d(padded, weight, groups=c)


def _gaussian_kernel1d(sigma: float) -> Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).float()


def _gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    k = _gaussian_kernel1d(sigma)
    return _depthwise(_depthwise(x, k.view(1, -1)), k.view(-1, 1))


def shot_noise(x: Tensor, photons: float, generator: torch.Generator | None = None) -> Tensor:
    """Poisson (photon) noise: ``clip(Poisson(λ x) / λ)`` with ``λ = photons`` per unit intensity."""
    device = generator.device if generator is not None else x.device
    rate = (x.clamp(0, 1) * photons).to(device)
    return (torch.poisson(rate, generator=generator) / photons).to(x.device, x.dtype).clamp_(0, 1)


def impulse_noise(x: Tensor, amount: float, generator: torch.Generator | None = None) -> Tensor:
    """Salt-and-pepper noise: each pixel value (per channel) replaced by 0 or 1 with probability ``amount``."""
    u = _draw(tuple(x.shape), x, generator, "rand")
    salt = _draw(tuple(x.shape), x, generator, "rand") < 0.5
    hit = u < amount
    return torch.where(hit, salt.to(x.dtype), x)


def defocus_blur(x: Tensor, radius: float) -> Tensor:
    """Convolution with an anti-aliased disk of ``radius`` pixels (then a σ = 0.5 px Gaussian)."""
    r = int(math.ceil(radius))
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    dist = (t.view(-1, 1) ** 2 + t.view(1, -1) ** 2).sqrt()
    disk = (radius + 0.5 - dist).clamp(0, 1)  # 1 inside, linear edge of one pixel
    disk = (disk / disk.sum()).float()
    return _gaussian_blur(_depthwise(x, disk), 0.5).clamp_(0, 1)


def motion_blur(x: Tensor, length: float, generator: torch.Generator | None = None) -> Tensor:
    """Average along a line of ``length`` pixels at a random angle (one angle per image)."""
    angles = _draw((x.shape[0],), x, generator, "rand") * math.pi
    r = int(math.ceil(length / 2))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    out = torch.empty_like(x)
    for i, a in enumerate(angles.tolist()):
        # distance of each kernel cell to the line through 0 at angle a, within half the length
        along = xx * math.cos(a) + yy * math.sin(a)
        across = -xx * math.sin(a) + yy * math.cos(a)
        k = (1 - across.abs()).clamp(min=0) * (length / 2 + 0.5 - along.abs()).clamp(0, 1)
        out[i : i + 1] = _depthwise(x[i : i + 1], k / k.sum())
    return out.clamp_(0, 1)


def fog(x: Tensor, strength: float, generator: torch.Generator | None = None) -> Tensor:
    """Low-frequency additive haze: ``clip((x + s·F) · max(x) / (max(x) + s))``.

    ``F`` in [0, 1] is a sum of octaves of upsampled Gaussian noise on grids of 2, 4, 8, …
    cells (up to a quarter of the image side), amplitude halving per octave (a 1/f-like
    "plasma"), one field per image shared by its channels.
    """
    b, _, h, w = x.shape
    field = torch.zeros(b, 1, h, w, dtype=x.dtype, device=x.device)
    cells, amp = 2, 1.0
    while cells <= max(2, min(h, w) // 4):
        coarse = _draw((b, 1, cells, cells), x, generator)
        field += amp * torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
        cells, amp = cells * 2, amp / 2
    lo = field.flatten(1).min(1).values.view(-1, 1, 1, 1)
    hi = field.flatten(1).max(1).values.view(-1, 1, 1, 1)
    field = (field - lo) / (hi - lo).clamp_min(1e-12)
    peak = x.flatten(1).max(1).values.view(-1, 1, 1, 1)
    return ((x + strength * field) * peak / (peak + strength)).clamp_(0, 1)


def pixelate(x: Tensor, block: int) -> Tensor:
    """Replace each ``block × block`` tile (from the top-left corner) by its mean."""
    block = int(block)
    h, w = x.shape[-2:]
    small = torch.nn.functional.avg_pool2d(x, block, block, ceil_mode=True)
    return small.repeat_interleave(block, -2).repeat_interleave(block, -1)[..., :h, :w].clamp(0, 1)


def jpeg(x: Tensor, quality: int) -> Tensor:
    """JPEG round trip at ``quality`` (1..100) through Pillow's libjpeg encoder, per image
    (grey images as mode ``L``, colour as ``RGB``; 4:2:0 chroma subsampling, Pillow's default)."""
    import io

    import numpy as np
    from PIL import Image

    if x.shape[1] not in (1, 3):
        raise ValueError(f"jpeg: images must have 1 or 3 channels, found {x.shape[1]}")
    q = (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu().permute(0, 2, 3, 1).numpy()
    out = np.empty_like(q)
    for i, img in enumerate(q):
        buf = io.BytesIO()
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        out[i] = np.asarray(Image.open(buf)).reshape(img.shape)
    return (torch.from_numpy(out).permute(0, 3, 1, 2).to(x.device, x.dtype) / 255.0).contiguous()


def elastic(x: Tensor, alpha: float, generator: torch.Generator | None = None) -> Tensor:
    """Elastic deformation (Simard et al. 2003): a smooth random displacement field.

    Displacements ``α · G_σ * N(0, 1)`` renormalised to a root-mean-square of ``alpha``
    pixels, with smoothing ``σ = side / 8`` pixels; bilinear resampling, border padding.
    """
    b, _, h, w = x.shape
    field = _draw((b, 2, h, w), x, generator)
    field = _gaussian_blur(field, max(h, w) / 8.0)
    rms = field.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp_min(1e-12)
    field = field / rms * alpha  # pixels
    ys, xs = torch.meshgrid(
        torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype),
        torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype),
        indexing="ij",
    )
    grid = torch.stack([xs, ys], dim=-1).expand(b, h, w, 2).clone()
    grid[..., 0] += field[:, 0] * 2 / max(w - 1, 1)
    grid[..., 1] += field[:, 1] * 2 / max(h - 1, 1)
    out = torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.clamp_(0, 1)


def corrupt(x: Tensor, name: str, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Apply common corruption ``name`` at ``severity`` (1 = mild … 5 = strong).

    The constant comes from :data:`SEVERITIES` for the preset matching the image side
    (:func:`preset_size`). Corruptions: ``gaussian_noise`` (σ), ``shot_noise`` (photons per
    unit λ), ``impulse_noise`` (fraction), ``gaussian_blur`` (σ px), ``defocus_blur`` (disk
    radius px), ``motion_blur`` (length px), ``contrast`` (factor c: ``(x - m) c + m``, m the
    per-image mean), ``brightness`` (added offset), ``fog`` (haze strength), ``pixelate``
    (block side px), ``jpeg`` (quality), ``elastic`` (rms displacement px).

    Args:
        x: images ``[batch, C, H, W]`` in [0, 1], floating point.
        name: one of :data:`CORRUPTIONS`.
        severity: 1..5.
        generator: randomness of the stochastic corruptions (noise, motion angle, fog,
            elastic field); ``None``: torch's global generator.

    Returns:
        Corrupted images, same shape / dtype / device, in [0, 1].

    Raises:
        ValueError: unknown ``name`` (lists the known ones), severity outside 1..5, or ``x``
            not a 4-d floating-point batch.

    Example:
        >>> x = torch.rand(2, 1, 32, 32)
        >>> corrupt(x, "fog", 3, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([2, 1, 32, 32])
    """
    c = severity_constant(name, severity, x.shape[-1] if x.dim() == 4 else 32)
    _check_images(x, "corrupt")
    with torch.no_grad():
        if name == "gaussian_noise":
            return gaussian_noise(x, c, generator)
        if name == "shot_noise":
            return shot_noise(x, c, generator)
        if name == "impulse_noise":
            return impulse_noise(x, c, generator)
        if name == "gaussian_blur":
            return _gaussian_blur(x, c).clamp_(0, 1)
        if name == "defocus_blur":
            return defocus_blur(x, c)
        if name == "motion_blur":
            return motion_blur(x, c, generator)
        if name == "contrast":
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            return ((x - mean) * c + mean).clamp_(0, 1)
        if name == "brightness":
            return (x + c).clamp_(0, 1)
        if name == "fog":
            return fog(x, c, generator)
        if name == "pixelate":
            return pixelate(x, c)
        if name == "jpeg":
            return jpeg(x, int(c))
        return elastic(x, c, generator)
