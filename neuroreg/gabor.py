"""Gabor receptive fields of V1 neurons: published parameter distributions and kernels.

This module is shared by the simulated V1 population (:mod:`neuroreg.data.simulated`)
and the VOneBlock front end. It has two halves:

* :func:`sample_gabor_params` draws receptive-field parameters (orientation, spatial
  frequency, phase and envelope sizes) from binned empirical distributions held in a
  :class:`ReceptiveFieldPreset`. Two presets are provided, ``"macaque_v1"`` (the
  distributions used by VOneNet, Dapello et al. 2020) and ``"mouse_v1"``.
* :func:`gabor_kernels` / :func:`gabor_quadrature_pair` turn parameters into pixel
  kernels ``[n, size, size]``; :func:`sinusoidal_grating` draws test gratings in the
  same coordinate convention.

Conventions (used by every function here):

* Image coordinates: ``x`` grows with the column index, ``y`` grows *upwards* (against
  the row index); the origin is the kernel centre (by default the image centre,
  ``(size - 1) / 2``).
* ``orientation`` θ (radians, in ``[0, π)``) is the direction of the carrier's wave
  vector, measured counter-clockwise from the +x axis. A Gabor of orientation θ and a
  grating of orientation θ (:func:`sinusoidal_grating`) have parallel stripes.
* Envelope sizes follow Ringach (2002): ``nx``, ``ny`` are in cycles of the carrier,
  ``sigma_x = nx / sf`` along the wave vector and ``sigma_y = ny / sf`` along the
  stripes (in degrees when ``sf`` is in cycles/degree).

References:
    Dapello J, Marques T, Schrimpf M, Geiger F, Cox DD, DiCarlo JJ (2020). Simulating
        a primary visual cortex at the front of CNNs improves robustness to image
        perturbations. NeurIPS 33.
    De Valois RL, Yund EW, Hepler N (1982). The orientation and direction selectivity
        of cells in macaque visual cortex. Vision Res 22:531-544.
    De Valois RL, Albrecht DG, Thorell LG (1982). Spatial frequency selectivity of
        cells in macaque visual cortex. Vision Res 22:545-559.
    Ringach DL (2002). Spatial structure and symmetry of simple-cell receptive fields
        in macaque primary visual cortex. J Neurophysiol 88:455-463.
    Niell CM, Stryker MP (2008). Highly selective receptive fields in mouse visual
        cortex. J Neurosci 28:7520-7536.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

NYQUIST_CYCLES_PER_PIXEL = 0.5
_PARAM_FIELDS = ("orientation", "sf", "phase", "nx", "ny")

__all__ = [
    "NYQUIST_CYCLES_PER_PIXEL",
    "GaborParams",
    "ReceptiveFieldPreset",
    "MACAQUE_V1",
    "MOUSE_V1",
    "PRESETS",
    "resolve_preset",
    "sample_gabor_params",
    "pixel_frequencies",
    "gabor_kernels",
    "gabor_quadrature_pair",
    "sinusoidal_grating",
]


# --------------------------------------------------------------------------- data
@dataclass(frozen=True)
class ReceptiveFieldPreset:
    """Binned receptive-field parameter distributions of one species / area.

    All histograms are counts (any positive scale); sampling is uniform within an
    orientation bin and log-uniform within a spatial-frequency or envelope-size bin.

    Args:
        name: preset identifier, e.g. ``"macaque_v1"``.
        species: species name stored on recordings (``"macaque"``, ``"mouse"``).
        ori_edges_deg: ``[B_o + 1]`` orientation bin edges in degrees; values below 0
            wrap to ``[0, 180)`` after sampling.
        ori_counts: ``[B_o]`` orientation histogram.
        sf_edges_cpd: ``[B_f + 1]`` spatial-frequency bin edges, cycles/degree.
        sf_counts: ``[B_f]`` spatial-frequency histogram.
        n_edges: ``[B_n + 1]`` envelope-size bin edges (cycles), shared by nx and ny.
        n_joint_counts: ``[B_n, B_n]`` joint histogram, rows = nx bins, cols = ny bins.
        sf_corr: default Gaussian-copula correlation between spatial frequency and nx.
        sf_max: default upper limit on spatial frequency (cycles/degree); bins whose
            upper edge exceeds it are dropped. ``None``: keep all bins.
        citation: sources of the distributions.
    """

    name: str
    species: str
    ori_edges_deg: tuple[float, ...]
    ori_counts: tuple[float, ...]
    sf_edges_cpd: tuple[float, ...]
    sf_counts: tuple[float, ...]
    n_edges: tuple[float, ...]
    n_joint_counts: tuple[tuple[float, ...], ...]
    sf_corr: float
    sf_max: float | None
    citation: str = ""

    def __post_init__(self) -> None:
        checks = (
            ("ori", self.ori_edges_deg, self.ori_counts),
            ("sf", self.sf_edges_cpd, self.sf_counts),
        )
        for label, edges, counts in checks:
            edges_a, counts_a = np.asarray(edges, float), np.asarray(counts, float)
            if edges_a.shape != (counts_a.size + 1,) or np.any(np.diff(edges_a) <= 0):
                raise ValueError(
                    f"preset {self.name!r}: field '{label}_edges': expected {counts_a.size + 1} increasing edges, "
                    f"found {edges_a.tolist()}"
                )
            if np.any(counts_a < 0) or counts_a.sum() <= 0:
                raise ValueError(f"preset {self.name!r}: field '{label}_counts': expected non-negative counts with a positive sum, found {counts_a.tolist()}")
        if self.sf_edges_cpd[0] <= 0:
            raise ValueError(f"preset {self.name!r}: field 'sf_edges_cpd': expected positive edges, found {list(self.sf_edges_cpd)}")
        n_edges = np.asarray(self.n_edges, float)
        joint = np.asarray(self.n_joint_counts, float)
        if joint.shape != (n_edges.size - 1, n_edges.size - 1) or n_edges[0] <= 0 or np.any(np.diff(n_edges) <= 0):
            raise ValueError(
                f"preset {self.name!r}: fields 'n_edges'/'n_joint_counts': expected positive increasing edges [B+1] and a "
                f"[B, B] matrix, found edges {n_edges.tolist()} and matrix shape {joint.shape}"
            )
        if np.any(joint < 0) or joint.sum() <= 0:
            raise ValueError(f"preset {self.name!r}: field 'n_joint_counts': expected non-negative counts with a positive sum")
        if not -1.0 <= self.sf_corr <= 1.0:
            raise ValueError(f"preset {self.name!r}: field 'sf_corr': expected a value in [-1, 1], found {self.sf_corr}")


#: Macaque V1 (foveal), the distributions of VOneNet (Dapello et al. 2020).
#: Orientation: De Valois, Yund & Hepler 1982 (4 bins centred on 0/45/90/135 deg).
#: Spatial frequency: De Valois, Albrecht & Thorell 1982 foveal histogram; the 8-11.2 cpd
#: bin (count 8) is part of the published histogram but dropped by the default
#: ``sf_max = 8`` cpd (VOneNet itself defaults to ``sf_max = 6``).
#: nx / ny: Ringach 2002 joint histogram (log-spaced edges 10^-1 .. 10^0.2).
#: ``sf_corr = 0.75``: the value VOneNet's model constructor uses (``VOneNet(sf_corr=0.75)``):
#: cells tuned to higher spatial frequencies have envelopes with more cycles (narrower
#: octave bandwidth), as reported by De Valois, Albrecht & Thorell 1982.
MACAQUE_V1 = ReceptiveFieldPreset(
    name="macaque_v1",
    species="macaque",
    ori_edges_deg=(-22.5, 22.5, 67.5, 112.5, 157.5),
    ori_counts=(66, 49, 77, 54),
    sf_edges_cpd=(0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0, 5.6, 8.0, 11.2),
    sf_counts=(4, 4, 8, 25, 32, 26, 28, 12, 8),
    n_edges=tuple(float(v) for v in np.logspace(-1.0, 0.2, 6)),
    n_joint_counts=(
        (2, 0, 1, 0, 0),
        (8, 9, 4, 1, 0),
        (1, 2, 19, 17, 3),
        (0, 0, 1, 7, 4),
        (0, 0, 0, 0, 0),
    ),
    sf_corr=0.75,
    sf_max=8.0,
    citation=(
        "Dapello et al. 2020 (VOneNet); De Valois, Yund & Hepler 1982 Vision Res 22:531; "
        "De Valois, Albrecht & Thorell 1982 Vision Res 22:545; Ringach 2002 J Neurophysiol 88:455"
    ),
)

#: Mouse V1. Spatial frequency after Niell & Stryker 2008 (Fig. 6: preferred SF tested
#: at octave steps 0.02-0.32 cpd, peak near 0.04 cpd, population mean ~0.04 cpd); the
#: counts are an approximation of that histogram's shape (half-octave bins around the
#: tested frequencies), not digitised data. Orientation preferences are close to
#: uniform in mouse V1 (Niell & Stryker 2008), hence equal counts. No joint nx/ny
#: histogram is published for mouse, so Ringach's (2002) is reused: with
#: ``sigma = n / sf`` this gives envelope sigmas of ~3-12 deg at the typical
#: 0.04-0.08 cpd, i.e. receptive-field diameters (2 sigma) of ~10-20 deg, in line with
#: the ~10-15 deg RF sizes reported by Niell & Stryker 2008. ``sf_corr`` reuses the
#: macaque value (keeps low-SF cells from getting implausibly large envelopes).
MOUSE_V1 = ReceptiveFieldPreset(
    name="mouse_v1",
    species="mouse",
    ori_edges_deg=(0.0, 45.0, 90.0, 135.0, 180.0),
    ori_counts=(1, 1, 1, 1),
    sf_edges_cpd=tuple(float(f) for f in 0.02 * 2.0 ** (np.arange(6) - 0.5)),
    sf_counts=(20, 35, 25, 13, 7),
    n_edges=tuple(float(v) for v in np.logspace(-1.0, 0.2, 6)),
    n_joint_counts=MACAQUE_V1.n_joint_counts,
    sf_corr=0.75,
    sf_max=None,
    citation="Niell & Stryker 2008 J Neurosci 28:7520 (spatial frequency, orientation); Ringach 2002 (nx/ny)",
)

#: Presets by name (plain data; a preset object can always be passed instead of a name).
PRESETS: dict[str, ReceptiveFieldPreset] = {MACAQUE_V1.name: MACAQUE_V1, MOUSE_V1.name: MOUSE_V1}


def resolve_preset(preset: str | ReceptiveFieldPreset) -> ReceptiveFieldPreset:
    """Return ``preset`` itself, or the built-in preset of that name.

    Raises:
        ValueError: unknown preset name (the message lists the valid ones).
    """
    if isinstance(preset, ReceptiveFieldPreset):
        return preset
    if isinstance(preset, str) and preset in PRESETS:
        return PRESETS[preset]
    raise ValueError(f"unknown receptive-field preset {preset!r}; expected one of {sorted(PRESETS)} or a ReceptiveFieldPreset")


@dataclass
class GaborParams:
    """Receptive-field parameters of ``n`` Gabor neurons, each a float64 array ``[n]``.

    Args:
        orientation: wave-vector direction in radians, ``[0, π)``.
        sf: preferred spatial frequency in cycles/degree.
        phase: carrier phase in radians, ``[0, 2π)``.
        nx: envelope size along the wave vector, in cycles (Ringach 2002).
        ny: envelope size along the stripes, in cycles.

    Raises:
        ValueError: arrays of different shapes, not 1-D, non-finite, or non-positive
            ``sf`` / ``nx`` / ``ny``.
    """

    orientation: np.ndarray
    sf: np.ndarray
    phase: np.ndarray
    nx: np.ndarray
    ny: np.ndarray

    def __post_init__(self) -> None:
        shape = None
        for name in _PARAM_FIELDS:
            values = np.asarray(getattr(self, name), dtype=np.float64)
            if values.ndim != 1:
                raise ValueError(f"GaborParams field '{name}': expected a 1-D array [n], found shape {values.shape}")
            if shape is None:
                shape = values.shape
            elif values.shape != shape:
                raise ValueError(f"GaborParams field '{name}': expected shape {shape} (like 'orientation'), found {values.shape}")
            if not np.isfinite(values).all():
                raise ValueError(f"GaborParams field '{name}': expected finite values, found {int((~np.isfinite(values)).sum())} NaN/inf")
            if name in ("sf", "nx", "ny") and values.size and values.min() <= 0:
                raise ValueError(f"GaborParams field '{name}': expected positive values, found minimum {values.min():.3g}")
            setattr(self, name, values)

    def __len__(self) -> int:
        return int(self.sf.shape[0])

    @property
    def sigma_x(self) -> np.ndarray:
        """Envelope sigma along the wave vector, ``nx / sf`` (degrees), ``[n]``."""
        return self.nx / self.sf

    @property
    def sigma_y(self) -> np.ndarray:
        """Envelope sigma along the stripes, ``ny / sf`` (degrees), ``[n]``."""
        return self.ny / self.sf

    def subset(self, index) -> GaborParams:
        """Parameters of the neurons selected by ``index`` (any numpy index)."""
        return GaborParams(*(getattr(self, name)[index] for name in _PARAM_FIELDS))


# ----------------------------------------------------------------------- sampling
def _binned_ppf(u: np.ndarray, edges: np.ndarray, counts: np.ndarray, log: bool) -> tuple[np.ndarray, np.ndarray]:
    """Inverse CDF of a histogram density, uniform (or log-uniform) within a bin.

    Args:
        u: ``[n]`` quantiles in ``[0, 1]``.
        edges: ``[B + 1]`` increasing bin edges.
        counts: ``[B]`` non-negative counts, positive sum.
        log: sample log-uniformly within a bin.

    Returns:
        ``(values [n], bin_index [n])``; empty bins are never returned.
    """
    p = np.asarray(counts, dtype=np.float64)
    p = p / p.sum()
    cdf = np.concatenate([[0.0], np.cumsum(p)])
    cdf[-1] = 1.0
    u = np.clip(np.asarray(u, dtype=np.float64), 0.0, np.nextafter(1.0, 0.0))
    idx = np.searchsorted(cdf, u, side="right") - 1
    nonzero = np.flatnonzero(p > 0)
    idx = np.clip(idx, nonzero[0], nonzero[-1])
    # An index can land on an empty bin only through the clip above (u at the very ends).
    frac = np.clip((u - cdf[idx]) / np.where(p[idx] > 0, p[idx], 1.0), 0.0, 1.0)
    e = np.log(edges) if log else np.asarray(edges, dtype=np.float64)
    values = e[idx] + frac * (e[idx + 1] - e[idx])
    return (np.exp(values) if log else values), idx


def _truncate_sf(preset: ReceptiveFieldPreset, sf_max: float | None) -> tuple[np.ndarray, np.ndarray]:
    edges = np.asarray(preset.sf_edges_cpd, dtype=np.float64)
    counts = np.asarray(preset.sf_counts, dtype=np.float64)
    if sf_max is None:
        return edges, counts
    keep = int(np.searchsorted(edges, sf_max * (1 + 1e-9), side="right")) - 1  # number of whole bins below sf_max
    if keep < 1 or counts[:keep].sum() <= 0:
        raise ValueError(
            f"sample_gabor_params: 'sf_max': expected at least one spatial-frequency bin of preset {preset.name!r} "
            f"below it (bin edges {edges.tolist()} cpd), found sf_max={sf_max}"
        )
    return edges[: keep + 1], counts[:keep]


def sample_gabor_params(
    n: int,
    preset: str | ReceptiveFieldPreset = "macaque_v1",
    rng: np.random.Generator | int | None = None,
    *,
    sf_corr: float | None = None,
    sf_max: float | None = None,
) -> GaborParams:
    """Draw receptive-field parameters of ``n`` V1 neurons from a preset's distributions.

    * orientation: histogram ``ori_counts`` over ``ori_edges_deg``, uniform within a
      bin, wrapped to ``[0, 180)`` degrees and returned in radians;
    * phase: uniform on ``[0, 2π)``;
    * spatial frequency ``sf`` and ``nx``: a Gaussian copula, ``z ~ N(0, [[1, ρ], [ρ, 1]])``,
      ``u = Φ(z)``, then each ``u`` is mapped through the inverse CDF of its binned
      distribution (log-uniform within a bin): ``sf = F_sf⁻¹(u₁)``, ``nx = F_nx⁻¹(u₂)``
      with ``F_nx`` the row marginal of the joint nx/ny histogram. The marginals are
      exactly the published histograms for any ρ; only the rank correlation between
      sf and nx changes (Spearman ρ_s = 6/π · asin(ρ/2)).
    * ``ny``: drawn from the row of the joint histogram selected by nx's bin
      (log-uniform within a bin), so the nx/ny joint histogram is preserved.

    This is the scheme of VOneNet (Dapello et al. 2020), re-implemented.

    Args:
        n: number of neurons.
        preset: ``"macaque_v1"``, ``"mouse_v1"`` or a :class:`ReceptiveFieldPreset`.
        rng: a numpy Generator, or a seed for one (``None``: seed 0, for reproducibility).
        sf_corr: copula correlation ρ in ``[-1, 1]`` (``None``: the preset's default,
            0.75 for both built-in presets, as in VOneNet).
        sf_max: drop spatial-frequency bins whose upper edge exceeds this (cycles/degree;
            ``None``: the preset's default, 8 cpd for macaque, no limit for mouse).

    Returns:
        :class:`GaborParams` with arrays ``[n]``.

    Raises:
        ValueError: unknown preset, ``n < 0``, ``sf_corr`` outside ``[-1, 1]`` or an
            ``sf_max`` below every bin.

    Example:
        >>> p = sample_gabor_params(1000, "macaque_v1", rng=0)
        >>> bool(0.5 <= p.sf.min() and p.sf.max() <= 8.0)
        True
    """
    spec = resolve_preset(preset)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"sample_gabor_params: 'n': expected a non-negative integer, found {n!r}")
    n = int(n)
    rho = spec.sf_corr if sf_corr is None else float(sf_corr)
    if not -1.0 <= rho <= 1.0:
        raise ValueError(f"sample_gabor_params: 'sf_corr': expected a value in [-1, 1], found {sf_corr}")
    sf_edges, sf_counts = _truncate_sf(spec, spec.sf_max if sf_max is None else float(sf_max))
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(0 if rng is None else rng)

    # Fixed draw order: orientation, phase, copula normals, ny quantiles.
    ori_deg, _ = _binned_ppf(gen.random(n), np.asarray(spec.ori_edges_deg, float), np.asarray(spec.ori_counts, float), log=False)
    ori_deg = np.mod(ori_deg, 180.0)
    phase = gen.uniform(0.0, 2.0 * np.pi, size=n)

    z1 = gen.standard_normal(n)
    z2 = gen.standard_normal(n)
    z_nx = rho * z1 + np.sqrt(max(0.0, 1.0 - rho * rho)) * z2  # corr(z1, z_nx) = rho
    sf, _ = _binned_ppf(ndtr(z1), sf_edges, sf_counts, log=True)

    n_edges = np.asarray(spec.n_edges, dtype=np.float64)
    joint = np.asarray(spec.n_joint_counts, dtype=np.float64)
    nx, nx_bin = _binned_ppf(ndtr(z_nx), n_edges, joint.sum(axis=1), log=True)
    u_ny = gen.random(n)
    ny = np.empty(n, dtype=np.float64)
    for row in np.unique(nx_bin):
        sel = nx_bin == row
        ny[sel], _ = _binned_ppf(u_ny[sel], n_edges, joint[row], log=True)

    return GaborParams(orientation=np.deg2rad(ori_deg), sf=sf, phase=phase, nx=nx, ny=ny)


# ------------------------------------------------------------------------ kernels
def pixel_frequencies(
    sf_cpd: np.ndarray, pixels_per_degree: float, max_cycles_per_pixel: float = NYQUIST_CYCLES_PER_PIXEL
) -> np.ndarray:
    """Spatial frequencies in cycles/pixel, clipped to ``max_cycles_per_pixel``.

    ``f = sf_cpd / pixels_per_degree``. Frequencies above the limit (by default the
    Nyquist frequency, 0.5 cycles/pixel) cannot be represented on the pixel grid and
    are *clipped* to the limit (not resampled), so such a neuron is tuned to the
    highest representable frequency instead of an aliased low one.

    Args:
        sf_cpd: ``[n]`` spatial frequencies, cycles/degree.
        pixels_per_degree: pixels per degree of visual angle (> 0).
        max_cycles_per_pixel: the clip limit, in ``(0, 0.5]``.

    Returns:
        ``[n]`` float64 cycles/pixel.
    """
    if not np.isfinite(pixels_per_degree) or pixels_per_degree <= 0:
        raise ValueError(f"'pixels_per_degree': expected a positive number, found {pixels_per_degree!r}")
    if not 0 < max_cycles_per_pixel <= NYQUIST_CYCLES_PER_PIXEL:
        raise ValueError(f"'max_cycles_per_pixel': expected a value in (0, 0.5], found {max_cycles_per_pixel!r}")
    return np.minimum(np.asarray(sf_cpd, dtype=np.float64) / float(pixels_per_degree), max_cycles_per_pixel)


def _grid(size: int, center_x, center_y, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-kernel coordinates ``x [n, 1, size]``, ``y [n, size, 1]`` (y up)."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"'size': expected a positive integer, found {size!r}")
    c = (size - 1) / 2.0
    cx = np.broadcast_to(np.asarray(c if center_x is None else center_x, dtype=np.float64), (n,))
    cy = np.broadcast_to(np.asarray(c if center_y is None else center_y, dtype=np.float64), (n,))
    pix = np.arange(size, dtype=np.float64)
    x = pix[None, None, :] - cx[:, None, None]
    y = cy[:, None, None] - pix[None, :, None]
    return x, y


def gabor_kernels(
    params: GaborParams,
    size: int,
    pixels_per_degree: float,
    *,
    center_x: np.ndarray | float | None = None,
    center_y: np.ndarray | float | None = None,
    phase_offset: float = 0.0,
    max_cycles_per_pixel: float = NYQUIST_CYCLES_PER_PIXEL,
) -> np.ndarray:
    """Gabor kernels sampled on a ``size × size`` pixel grid.

    .. math::
        g(x, y) = \\frac{1}{2π σ_x σ_y}
                  \\exp\\Big(-\\frac{x'^2}{2σ_x^2} - \\frac{y'^2}{2σ_y^2}\\Big)
                  \\cos(2π f x' + φ),
        \\quad x' = x\\cos θ + y\\sin θ,\\; y' = -x\\sin θ + y\\cos θ

    with ``f`` the spatial frequency in cycles/pixel (:func:`pixel_frequencies`:
    ``sf / pixels_per_degree``, clipped at ``max_cycles_per_pixel``) and the envelope in
    pixels ``σ_x = nx / f``, ``σ_y = ny / f`` (computed from the clipped frequency, so a
    clipped neuron keeps its number of cycles, i.e. its octave bandwidth). The envelope
    integrates to one (as in VOneNet), so kernel amplitude does not depend on its size.

    Args:
        params: ``n`` neurons' parameters.
        size: kernel side in pixels.
        pixels_per_degree: pixels per degree of visual angle.
        center_x, center_y: kernel centres in pixel coordinates (column / row index,
            scalar or ``[n]``; default the grid centre ``(size - 1) / 2``).
        phase_offset: added to every phase (π/2 gives the quadrature partner).
        max_cycles_per_pixel: frequency clip limit (default Nyquist, 0.5).

    Returns:
        ``[n, size, size]`` float32 kernels (rows = image rows).

    Example:
        >>> p = sample_gabor_params(4, "macaque_v1", rng=0)
        >>> gabor_kernels(p, 25, 28.0).shape
        (4, 25, 25)
    """
    n = len(params)
    f = pixel_frequencies(params.sf, pixels_per_degree, max_cycles_per_pixel)[:, None, None]
    x, y = _grid(size, center_x, center_y, n)
    theta = params.orientation[:, None, None]
    xr = x * np.cos(theta) + y * np.sin(theta)
    yr = -x * np.sin(theta) + y * np.cos(theta)
    sx = params.nx[:, None, None] / f
    sy = params.ny[:, None, None] / f
    envelope = np.exp(-0.5 * (xr**2 / sx**2 + yr**2 / sy**2)) / (2.0 * np.pi * sx * sy)
    carrier = np.cos(2.0 * np.pi * f * xr + params.phase[:, None, None] + phase_offset)
    return (envelope * carrier).astype(np.float32)


def gabor_quadrature_pair(
    params: GaborParams, size: int, pixels_per_degree: float, **kwargs
) -> tuple[np.ndarray, np.ndarray]:
    """The kernels of ``params`` and their quadrature partners (phase + π/2).

    For the energy model of complex cells (Adelson & Bergen 1985):
    ``r = sqrt((g₀ * I)² + (g₁ * I)²)``.

    Args:
        params, size, pixels_per_degree, **kwargs: as :func:`gabor_kernels`
            (``phase_offset`` is added to both).

    Returns:
        ``(even [n, size, size], odd [n, size, size])`` float32.
    """
    offset = float(kwargs.pop("phase_offset", 0.0))
    even = gabor_kernels(params, size, pixels_per_degree, phase_offset=offset, **kwargs)
    odd = gabor_kernels(params, size, pixels_per_degree, phase_offset=offset + np.pi / 2.0, **kwargs)
    return even, odd


def sinusoidal_grating(
    size: int,
    orientation: np.ndarray | float,
    cycles_per_pixel: np.ndarray | float,
    phase: np.ndarray | float = 0.0,
    contrast: float = 1.0,
) -> np.ndarray:
    """Full-field sinusoidal gratings in the kernels' coordinate convention.

    ``I(x, y) = 0.5 + 0.5 · contrast · cos(2π f (x cos θ + y sin θ) + φ)`` with the
    origin at the grid centre, so a grating matches a centred Gabor of the same θ, f, φ.

    Args:
        size: image side in pixels.
        orientation, cycles_per_pixel, phase: scalars or arrays broadcast to ``[m]``.
        contrast: Michelson contrast in ``[0, 1]``.

    Returns:
        ``[m, size, size]`` float32 images in ``[0, 1]``.
    """
    theta, f, phi = np.broadcast_arrays(
        np.atleast_1d(np.asarray(orientation, dtype=np.float64)),
        np.atleast_1d(np.asarray(cycles_per_pixel, dtype=np.float64)),
        np.atleast_1d(np.asarray(phase, dtype=np.float64)),
    )
    if not 0.0 <= contrast <= 1.0:
        raise ValueError(f"sinusoidal_grating: 'contrast': expected a value in [0, 1], found {contrast}")
    x, y = _grid(size, None, None, theta.size)
    t, fr, ph = theta[:, None, None], f[:, None, None], phi[:, None, None]
    wave = np.cos(2.0 * np.pi * fr * (x * np.cos(t) + y * np.sin(t)) + ph)
    return (0.5 + 0.5 * contrast * wave).astype(np.float32)
