"""A simulated V1 population: Gabor simple and complex cells with Poisson spiking.

The population is the embedded default data source of neuroreg (no download): any
image set can be "recorded" into a :class:`~neuroreg.data.recording.NeuralRecording`,
with a known noise-free ground truth (:meth:`V1Population.mean_response`).

Model, per neuron ``i`` with Gabor kernel ``g_i`` (and quadrature partner ``h_i``),
on the luminance image ``L`` minus mid-gray (``I = L - 0.5``):

* simple cell (half-rectified linear): ``s_i = max(0, <g_i, I>)``
* complex cell (energy model, Adelson & Bergen 1985): ``s_i = sqrt(<g_i, I>² + <h_i, I>²)``
* expected rate: ``λ_i = a_i · s_i`` spikes/trial, with ``a_i`` chosen so that the mean
  of ``λ_i`` over a fixed, seed-generated calibration set of 1/f ("pink") noise images
  equals ``mean_rate``;
* trial ``t`` of image ``n``: ``r_ti ~ Poisson(λ_ni · g_t)`` with a gain ``g_t`` shared
  by all neurons on that trial, lognormal with mean 1 and sd ``gain_sd`` (Goris,
  Movshon & Simoncelli 2014). Hence ``Var = λ + λ² gain_sd²``.

Receptive-field parameters come from :func:`neuroreg.gabor.sample_gabor_params`
(macaque: VOneNet's distributions, Dapello et al. 2020; mouse: after Niell & Stryker
2008); receptive-field centres are uniform inside the image minus a margin.

References:
    Adelson EH, Bergen JR (1985). Spatiotemporal energy models for the perception of
        motion. J Opt Soc Am A 2:284-299.
    Goris RLT, Movshon JA, Simoncelli EP (2014). Partitioning neuronal variability.
        Nat Neurosci 17:858-865.
    Dapello J et al. (2020). Simulating a primary visual cortex at the front of CNNs
        improves robustness to image perturbations. NeurIPS 33.
    Niell CM, Stryker MP (2008). Highly selective receptive fields in mouse visual
        cortex. J Neurosci 28:7520-7536.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from neuroreg.data.recording import TIERS, NeuralRecording
from neuroreg.gabor import (
    GaborParams,
    gabor_kernels,
    pixel_frequencies,
    resolve_preset,
    sample_gabor_params,
)
from neuroreg.imageops import to_grayscale

__all__ = ["V1Population", "DEFAULT_PIXELS_PER_DEGREE", "pink_noise_images"]

#: Default pixels per degree of each preset, independent of image size. Mouse: 1 px/deg,
#: so a 32 px image covers 32 deg (mouse V1 RFs are ~10-20 deg) and the highest mouse
#: spatial frequency (0.45 cpd) stays below Nyquist (0.5 cycles/pixel). Macaque: 20 px/deg
#: (a 32 px image covers 1.6 deg of the parafovea), so 8 cpd is 0.4 cycles/pixel,
#: below Nyquist; low-SF macaque cells (< ~1 cpd) see less than two cycles at 32 px.
DEFAULT_PIXELS_PER_DEGREE = {"mouse_v1": 1.0, "macaque_v1": 20.0}

# Bump when the response model changes: it is part of the fingerprint (cache key).
_MODEL_VERSION = 1
_N_CALIBRATION = 256
_CHUNK = 4096


def pink_noise_images(n: int, size: int, rng: np.random.Generator, contrast: float = 0.15) -> np.ndarray:
    """Random natural-like images with a 1/f amplitude spectrum.

    Args:
        n: number of images.
        size: side in pixels.
        rng: random generator.
        contrast: standard deviation of the luminance around 0.5 (values clipped to
            ``[0, 1]``).

    Returns:
        ``[n, 1, size, size]`` float32 images in ``[0, 1]``.
    """
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    radius = np.sqrt(fx**2 + fy**2)
    amplitude = np.where(radius > 0, 1.0 / np.maximum(radius, 1e-12), 0.0)
    spectrum = np.fft.rfft2(rng.standard_normal((n, size, size))) * amplitude
    img = np.fft.irfft2(spectrum, s=(size, size))
    img = img / img.std(axis=(1, 2), keepdims=True)
    return np.clip(0.5 + contrast * img, 0.0, 1.0).astype(np.float32)[:, None]


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"V1Population: '{name}': expected an integer >= {minimum}, found {value!r}")
    return int(value)


def _check_float(name: str, value, low: float, high: float = np.inf, low_open: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"V1Population: '{name}': expected a number, found {value!r}") from None
    ok = np.isfinite(v) and (v > low if low_open else v >= low) and v <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"V1Population: '{name}': expected a value in {bracket}{low}, {high}], found {value!r}")
    return v


class V1Population:
    """A simulated population of V1 simple and complex cells.

    Args:
        n_neurons: number of neurons K.
        preset: ``"mouse_v1"`` or ``"macaque_v1"`` (receptive-field distributions,
            :mod:`neuroreg.gabor`).
        image_size: side H = W of the images it sees, in pixels.
        pixels_per_degree: ``None``: the preset's default
            (:data:`DEFAULT_PIXELS_PER_DEGREE`). Spatial frequencies above Nyquist are
            clipped (:func:`neuroreg.gabor.pixel_frequencies`).
        complex_fraction: fraction of complex cells (exact count ``round(K · fraction)``,
            types assigned to random neurons).
        mean_rate: mean expected spike count per trial over the calibration images.
        gain_sd: standard deviation of the shared lognormal trial gain (mean 1);
            0 gives pure Poisson trials.
        rf_margin: receptive-field centres are uniform in
            ``[margin · S, (1 - margin) · S]`` along each axis (``S = image_size``).
        sf_corr: copula correlation of spatial frequency and envelope size (``None``:
            the preset's default).
        seed: seed of everything that defines the population (parameters, centres,
            cell types, calibration images).

    Raises:
        ValueError: unknown preset (the message lists the valid ones) or an argument
            out of range (the message names it).

    Example:
        >>> pop = V1Population(n_neurons=50, preset="mouse_v1", seed=0)
        >>> rec = pop.record(np.random.default_rng(0).random((10, 1, 32, 32), dtype=np.float32), repeats=2, seed=1)
        >>> rec.responses.shape
        (20, 50)
    """

    def __init__(
        self,
        n_neurons: int = 500,
        preset: str = "mouse_v1",
        image_size: int = 32,
        pixels_per_degree: float | None = None,
        complex_fraction: float = 0.5,
        mean_rate: float = 2.0,
        gain_sd: float = 0.2,
        rf_margin: float = 0.2,
        sf_corr: float | None = None,
        seed: int = 0,
    ) -> None:
        if not isinstance(preset, str) or preset not in DEFAULT_PIXELS_PER_DEGREE:
            raise ValueError(f"V1Population: unknown preset {preset!r}; expected one of {sorted(DEFAULT_PIXELS_PER_DEGREE)}")
        self.preset = preset
        self._spec = resolve_preset(preset)
        self.n_neurons = _check_int("n_neurons", n_neurons, 1)
        self.image_size = _check_int("image_size", image_size, 2)
        ppd = DEFAULT_PIXELS_PER_DEGREE[preset] if pixels_per_degree is None else pixels_per_degree
        self.pixels_per_degree = _check_float("pixels_per_degree", ppd, 0.0, low_open=True)
        self.complex_fraction = _check_float("complex_fraction", complex_fraction, 0.0, 1.0)
        self.mean_rate = _check_float("mean_rate", mean_rate, 0.0, low_open=True)
        self.gain_sd = _check_float("gain_sd", gain_sd, 0.0)
        self.rf_margin = _check_float("rf_margin", rf_margin, 0.0, 0.5)
        self.sf_corr = self._spec.sf_corr if sf_corr is None else _check_float("sf_corr", sf_corr, -1.0, 1.0)
        self.seed = _check_int("seed", seed, 0)

        params_rng, layout_rng, calib_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(self.seed).spawn(3))
        self.params: GaborParams = sample_gabor_params(self.n_neurons, self._spec, params_rng, sf_corr=self.sf_corr)
        size = self.image_size
        low, high = self.rf_margin * (size - 1), (1.0 - self.rf_margin) * (size - 1)
        self.rf_x = layout_rng.uniform(low, high, self.n_neurons)
        self.rf_y = layout_rng.uniform(low, high, self.n_neurons)
        n_complex = int(round(self.n_neurons * self.complex_fraction))
        self.is_complex = np.zeros(self.n_neurons, dtype=bool)
        self.is_complex[layout_rng.permutation(self.n_neurons)[:n_complex]] = True
        #: Effective preferred spatial frequency (cycles/degree) after the Nyquist clip.
        self.sf_effective = pixel_frequencies(self.params.sf, self.pixels_per_degree) * self.pixels_per_degree

        even = gabor_kernels(self.params, size, self.pixels_per_degree, center_x=self.rf_x, center_y=self.rf_y)
        odd_params = self.params.subset(self.is_complex)
        odd = gabor_kernels(
            odd_params,
            size,
            self.pixels_per_degree,
            center_x=self.rf_x[self.is_complex],
            center_y=self.rf_y[self.is_complex],
            phase_offset=np.pi / 2.0,
        )
        # [H*W, K + K_complex]: even kernels of all neurons, then odd kernels of complex cells.
        self._weights = np.ascontiguousarray(np.concatenate([even, odd]).reshape(-1, size * size).T, dtype=np.float32)
        self._complex_index = np.flatnonzero(self.is_complex)
        self._fingerprint: str | None = None
        self._scale = np.ones(self.n_neurons, dtype=np.float64)
        calib = self._drive(pink_noise_images(_N_CALIBRATION, size, calib_rng)).mean(axis=0).astype(np.float64)
        self._scale = self.mean_rate / np.maximum(calib, 1e-12)

    # ------------------------------------------------------------- properties
    @property
    def species(self) -> str:
        return self._spec.species

    @property
    def cell_type(self) -> np.ndarray:
        """``[K]`` ``"simple"`` / ``"complex"`` per neuron."""
        return np.where(self.is_complex, "complex", "simple").astype(object)

    @property
    def rate_scale(self) -> np.ndarray:
        """``[K]`` per-neuron factor from filter drive to spikes/trial (calibrated)."""
        return self._scale.copy()

    # ------------------------------------------------------------ computation
    def _luminance(self, images) -> np.ndarray:
        """Validate ``[N, C, H, W]`` images and return luminance ``[N, H*W]`` float32 in [0, 1]."""
        arr = np.asarray(images)
        if arr.ndim != 4:
            raise ValueError(f"V1Population: 'images': expected rank 4 [N, C, H, W], found shape {arr.shape}")
        if arr.shape[1] not in (1, 3):
            raise ValueError(f"V1Population: 'images': expected 1 or 3 channels in axis 1 ([N, C, H, W]), found shape {arr.shape}")
        expected = (self.image_size, self.image_size)
        if arr.shape[2:] != expected:
            raise ValueError(f"V1Population: 'images': expected spatial size {expected} (image_size), found {arr.shape[2:]}")
        if arr.dtype == np.uint8:
            arr = arr.astype(np.float32) / 255.0
        elif arr.dtype.kind == "f":
            arr = arr.astype(np.float32, copy=False)
            if arr.size and not np.isfinite(arr).all():
                raise ValueError(f"V1Population: 'images': expected finite values, found {int((~np.isfinite(arr)).sum())} NaN/inf")
            if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
                raise ValueError(f"V1Population: 'images': expected float values in [0, 1], found range [{arr.min():.3g}, {arr.max():.3g}]")
        else:
            raise ValueError(f"V1Population: 'images': expected dtype uint8 or float, found {arr.dtype}")
        return to_grayscale(arr).reshape(arr.shape[0], -1)

    def _drive(self, images) -> np.ndarray:
        """Scaled, noise-free responses ``[N, K]`` float32 (chunked over images)."""
        lum = self._luminance(images)
        out = np.empty((lum.shape[0], self.n_neurons), dtype=np.float32)
        scale = self._scale.astype(np.float32)
        k = self.n_neurons
        for start in range(0, lum.shape[0], _CHUNK):
            proj = (lum[start : start + _CHUNK] - np.float32(0.5)) @ self._weights  # [n, K + K_c]
            resp = np.maximum(proj[:, :k], 0.0)
            resp[:, self._complex_index] = np.sqrt(proj[:, self._complex_index] ** 2 + proj[:, k:] ** 2)
            out[start : start + _CHUNK] = resp * scale
        return out

    def mean_response(self, images) -> np.ndarray:
        """Noise-free expected spike counts per trial (the ground truth).

        Args:
            images: ``[N, C, H, W]``, C = 1 (gray) or 3 (RGB, converted with
                :data:`~neuroreg.imageops.LUMINANCE_WEIGHTS`), float in ``[0, 1]`` or uint8 (scaled by 1/255),
                H = W = ``image_size``.

        Returns:
            ``[N, K]`` float32 expected spikes/trial (``λ`` of the module docstring).

        Raises:
            ValueError: wrong rank, channels, size (names expected and found), dtype or range.
        """
        return self._drive(images)

    def record(
        self,
        images,
        repeats: int | np.ndarray,
        seed: int,
        tiers=None,
        image_ids=None,
    ) -> NeuralRecording:
        """Simulate a trial-level recording of the population.

        Trials are ordered by image, then repeat. Trial ``t`` shows image ``n`` and gives
        ``Poisson(λ_n · g_t)`` spikes with ``g_t`` the shared lognormal gain.

        Args:
            images: ``[N, C, H, W]`` images (see :meth:`mean_response`); stored as given
                (uint8 stays uint8, floats become float32).
            repeats: trials per image, an int or ``[N]`` ints (>= 0).
            seed: seed of the trial noise (combined with the population seed).
            tiers: ``[N]`` tier per image (one of :data:`~neuroreg.data.recording.TIERS`),
                a single tier name for all, or ``None`` (all ``"train"``).
            image_ids: ``[N]`` unique ids (default ``0 .. N-1``).

        Returns:
            :class:`NeuralRecording` with ``responses [T, K]``, ``T = sum(repeats)``.

        Raises:
            ValueError: bad images, repeats, tiers or ids (the message names the field).
        """
        arr = np.asarray(images)
        rates = self._drive(arr)  # validates images
        n = arr.shape[0]
        if isinstance(repeats, (int, np.integer)) and not isinstance(repeats, bool):
            reps = np.full(n, int(repeats), dtype=np.int64)
        else:
            reps = np.asarray(repeats)
            if reps.shape != (n,) or reps.dtype.kind not in "iu":
                raise ValueError(f"V1Population.record: 'repeats': expected an int or an integer array of shape ({n},), found {reps.dtype} shape {reps.shape}")
            reps = reps.astype(np.int64)
        if reps.size and reps.min() < 0:
            raise ValueError(f"V1Population.record: 'repeats': expected values >= 0, found minimum {reps.min()}")
        if tiers is None:
            tier_arr = np.full(n, "train", dtype=object)
        elif isinstance(tiers, str):
            tier_arr = np.full(n, tiers, dtype=object)
        else:
            tier_arr = np.asarray([str(t) for t in np.asarray(tiers).ravel()], dtype=object)
            if tier_arr.shape != (n,):
                raise ValueError(f"V1Population.record: 'tiers': expected {n} entries (one per image), found {tier_arr.shape[0]}")
        unknown = sorted(set(tier_arr) - set(TIERS))
        if unknown:
            raise ValueError(f"V1Population.record: 'tiers': expected tiers in {list(TIERS)}, found unknown {unknown}")
        ids = np.arange(n, dtype=np.int64) if image_ids is None else np.asarray(image_ids)
        if ids.shape != (n,):
            raise ValueError(f"V1Population.record: 'image_ids': expected shape ({n},), found {ids.shape}")
        _check_int("seed", seed, 0)

        rng = np.random.default_rng(np.random.SeedSequence([int(seed), self.seed]))
        trial_image = np.repeat(np.arange(n, dtype=np.int64), reps)
        n_trials = trial_image.size
        if self.gain_sd > 0:
            s2 = np.log1p(self.gain_sd**2)
            gain = rng.lognormal(mean=-0.5 * s2, sigma=np.sqrt(s2), size=n_trials)
        else:
            gain = np.ones(n_trials)
        lam = rates[trial_image].astype(np.float64) * gain[:, None]
        responses = rng.poisson(lam).astype(np.float32)

        stored = arr if arr.dtype == np.uint8 else arr.astype(np.float32)
        return NeuralRecording(
            images=stored,
            image_ids=ids,
            responses=responses,
            trial_image=trial_image,
            trial_tier=tier_arr[trial_image],
            neurons=self.neuron_metadata(),
            species=self.species,
            area="V1",
            response_unit="spikes",
            pixels_per_degree=self.pixels_per_degree,
            source=f"neuroreg simulated V1 population, preset={self.preset}, seed={self.seed}, fingerprint={self.fingerprint()}",
            citation=self._spec.citation,
            license="CC0-1.0 (simulated data)",
        )

    def neuron_metadata(self) -> dict[str, np.ndarray]:
        """Per-neuron metadata, each ``[K]``.

        Fields: ``ids`` (int), ``cell_type`` (simple/complex), ``orientation`` (rad,
        wave-vector direction, counter-clockwise from +x with y up), ``spatial_frequency``
        (effective, cycles/degree), ``phase`` (rad), ``nx``, ``ny`` (cycles),
        ``rf_x``, ``rf_y`` (RF centre, pixel column / row index), ``rate_scale``.
        """
        return {
            "ids": np.arange(self.n_neurons, dtype=np.int64),
            "cell_type": self.cell_type,
            "orientation": self.params.orientation.copy(),
            "spatial_frequency": self.sf_effective.copy(),
            "phase": self.params.phase.copy(),
            "nx": self.params.nx.copy(),
            "ny": self.params.ny.copy(),
            "rf_x": self.rf_x.copy(),
            "rf_y": self.rf_y.copy(),
            "rate_scale": self._scale.copy(),
        }

    def fingerprint(self) -> str:
        """SHA-256 hex digest of everything that defines the population.

        Covers the model version, the constructor arguments and the sampled parameters
        (rounded to 10 significant digits, so it is stable across platforms); usable as
        a cache-key component.
        """
        if self._fingerprint is not None:
            return self._fingerprint

        def rounded(values: np.ndarray) -> list[str]:
            return [f"{v:.10g}" for v in np.asarray(values, dtype=np.float64)]

        payload = {
            "model_version": _MODEL_VERSION,
            "n_calibration": _N_CALIBRATION,
            "preset": self.preset,
            "n_neurons": self.n_neurons,
            "image_size": self.image_size,
            "pixels_per_degree": repr(self.pixels_per_degree),
            "complex_fraction": repr(self.complex_fraction),
            "mean_rate": repr(self.mean_rate),
            "gain_sd": repr(self.gain_sd),
            "rf_margin": repr(self.rf_margin),
            "sf_corr": repr(self.sf_corr),
            "seed": self.seed,
            "orientation": rounded(self.params.orientation),
            "sf": rounded(self.params.sf),
            "phase": rounded(self.params.phase),
            "nx": rounded(self.params.nx),
            "ny": rounded(self.params.ny),
            "rf_x": rounded(self.rf_x),
            "rf_y": rounded(self.rf_y),
            "is_complex": self.is_complex.astype(int).tolist(),
        }
        self._fingerprint = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        return self._fingerprint

    def __repr__(self) -> str:
        return (
            f"V1Population(n_neurons={self.n_neurons}, preset={self.preset!r}, image_size={self.image_size}, "
            f"pixels_per_degree={self.pixels_per_degree}, complex_fraction={self.complex_fraction}, "
            f"mean_rate={self.mean_rate}, gain_sd={self.gain_sd}, seed={self.seed})"
        )
