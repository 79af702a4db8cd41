"""Tests of neuroreg.gabor: published RF distributions, copula, kernels, gratings."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from neuroreg.gabor import (
    MACAQUE_V1,
    GaborParams,
    ReceptiveFieldPreset,
    gabor_kernels,
    gabor_quadrature_pair,
    pixel_frequencies,
    sample_gabor_params,
    sinusoidal_grating,
)

N_LARGE = 100_000

# Published histograms (De Valois et al. 1982a/b; Ringach 2002), written out again here
# on purpose: the test must not read them back from the module under test.
ORI_COUNTS = np.array([66, 49, 77, 54])
SF_EDGES = np.array([0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0, 5.6, 8.0])
SF_COUNTS = np.array([4, 4, 8, 25, 32, 26, 28, 12])
N_EDGES = np.logspace(-1, 0.2, 6)
N_JOINT = np.array([[2, 0, 1, 0, 0], [8, 9, 4, 1, 0], [1, 2, 19, 17, 3], [0, 0, 1, 7, 4], [0, 0, 0, 0, 0]], float)


@pytest.fixture(scope="module")
def macaque():
    return sample_gabor_params(N_LARGE, "macaque_v1", rng=123)


def _chisq_p(observed: np.ndarray, probs: np.ndarray) -> float:
    keep = probs > 0
    assert observed[~keep].sum() == 0, "samples fell into a bin of zero probability"
    return stats.chisquare(observed[keep], probs[keep] / probs[keep].sum() * observed.sum()).pvalue


def _orientation_bins(orientation: np.ndarray) -> np.ndarray:
    deg = np.rad2deg(orientation)
    return (((deg + 22.5) % 180.0) // 45.0).astype(int)


# ------------------------------------------------------------------ distributions
def test_orientation_matches_de_valois_histogram(macaque):
    assert macaque.orientation.min() >= 0 and macaque.orientation.max() < np.pi
    observed = np.bincount(_orientation_bins(macaque.orientation), minlength=4)
    assert _chisq_p(observed, ORI_COUNTS / ORI_COUNTS.sum()) > 1e-3
    # the test has power: a uniform orientation distribution is rejected
    assert _chisq_p(observed, np.ones(4) / 4) < 1e-6


def test_spatial_frequency_matches_de_valois_histogram(macaque):
    assert macaque.sf.min() >= 0.5 and macaque.sf.max() <= 8.0
    observed = np.histogram(macaque.sf, SF_EDGES)[0]
    assert observed.sum() == N_LARGE
    assert _chisq_p(observed, SF_COUNTS / SF_COUNTS.sum()) > 1e-3


def test_spatial_frequency_is_log_uniform_within_a_bin(macaque):
    lo, hi = 2.0, 2.8
    inside = macaque.sf[(macaque.sf >= lo) & (macaque.sf < hi)]
    below_geometric_mid = np.mean(inside < np.sqrt(lo * hi))
    # log-uniform: 0.5; linear-uniform would give ~0.458
    assert abs(below_geometric_mid - 0.5) < 0.015


def test_nx_ny_match_ringach_joint_histogram(macaque):
    observed = np.histogram2d(macaque.nx, macaque.ny, bins=[N_EDGES, N_EDGES])[0]
    assert observed.sum() == N_LARGE
    assert _chisq_p(observed.ravel(), (N_JOINT / N_JOINT.sum()).ravel()) > 1e-3
    np.testing.assert_allclose(macaque.sigma_x, macaque.nx / macaque.sf)
    np.testing.assert_allclose(macaque.sigma_y, macaque.ny / macaque.sf)


def test_phase_uniform(macaque):
    assert macaque.phase.min() >= 0 and macaque.phase.max() < 2 * np.pi
    assert stats.kstest(macaque.phase / (2 * np.pi), "uniform").pvalue > 1e-3


@pytest.mark.parametrize("rho", [0.75, 0.0, -0.5])
def test_copula_rank_correlation_and_marginals(rho):
    p = sample_gabor_params(30_000, "macaque_v1", rng=7, sf_corr=rho)
    spearman = stats.spearmanr(p.sf, p.nx)[0]
    assert spearman == pytest.approx(6 / np.pi * np.arcsin(rho / 2), abs=0.02)
    # the marginals are the published histograms whatever the correlation
    assert _chisq_p(np.histogram(p.sf, SF_EDGES)[0], SF_COUNTS / SF_COUNTS.sum()) > 1e-3
    assert _chisq_p(np.histogram(p.nx, N_EDGES)[0], N_JOINT.sum(1) / N_JOINT.sum()) > 1e-3


def test_default_sf_corr_is_vonenet_value():
    assert MACAQUE_V1.sf_corr == 0.75
    p = sample_gabor_params(20_000, "macaque_v1", rng=1)
    assert stats.spearmanr(p.sf, p.nx)[0] > 0.6


def test_mouse_spatial_frequencies_much_lower_and_orientation_uniform():
    mouse = sample_gabor_params(20_000, "mouse_v1", rng=0)
    monkey = sample_gabor_params(20_000, "macaque_v1", rng=0)
    assert np.median(mouse.sf) < np.median(monkey.sf) / 20
    assert 0.03 < np.median(mouse.sf) < 0.07  # Niell & Stryker 2008: peak ~0.04 cpd
    assert mouse.sf.min() >= 0.014 and mouse.sf.max() <= 0.46
    counts = np.histogram(mouse.orientation, np.linspace(0, np.pi, 9))[0]
    assert stats.chisquare(counts).pvalue > 1e-3
    # RF diameters (2 sigma) of typical cells ~10-20 deg
    assert 8 < np.median(2 * mouse.sigma_x) < 25


def test_sf_max_truncates_whole_bins():
    p = sample_gabor_params(5000, "macaque_v1", rng=0, sf_max=4.0)
    assert p.sf.max() <= 4.0 and p.sf.min() >= 0.5
    p_all = sample_gabor_params(5000, "macaque_v1", rng=0, sf_max=11.2)
    assert p_all.sf.max() > 8.0
    with pytest.raises(ValueError, match="sf_max"):
        sample_gabor_params(10, "macaque_v1", rng=0, sf_max=0.6)


def test_determinism_and_seed_dependence():
    a = sample_gabor_params(100, "macaque_v1", rng=5)
    b = sample_gabor_params(100, "macaque_v1", rng=np.random.default_rng(5))
    c = sample_gabor_params(100, "macaque_v1", rng=6)
    for name in ("orientation", "sf", "phase", "nx", "ny"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert not np.array_equal(getattr(a, name), getattr(c, name))
    assert len(sample_gabor_params(0, "mouse_v1", rng=0)) == 0


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"'cat_v1'.*macaque_v1.*mouse_v1"):
        sample_gabor_params(10, "cat_v1")
    with pytest.raises(ValueError, match="sf_corr"):
        sample_gabor_params(10, "macaque_v1", sf_corr=1.5)
    with pytest.raises(ValueError, match="'n'"):
        sample_gabor_params(-1, "macaque_v1")
    with pytest.raises(ValueError, match="'sf'"):
        GaborParams(np.zeros(2), np.array([1.0, -1.0]), np.zeros(2), np.ones(2), np.ones(2))
    with pytest.raises(ValueError, match="'nx'"):
        GaborParams(np.zeros(2), np.ones(2), np.zeros(2), np.ones(3), np.ones(2))
    with pytest.raises(ValueError, match="sf_counts"):
        ReceptiveFieldPreset("x", "y", (0, 180), (1,), (1, 2), (0,), (0.1, 1), ((1,),), 0.0, None)


def test_custom_preset_is_injectable():
    preset = ReceptiveFieldPreset(
        name="narrow", species="test", ori_edges_deg=(10, 20), ori_counts=(1,), sf_edges_cpd=(1.0, 2.0),
        sf_counts=(1,), n_edges=(0.5, 1.0), n_joint_counts=((1,),), sf_corr=0.0, sf_max=None,
    )
    p = sample_gabor_params(1000, preset, rng=0)
    assert np.all((np.rad2deg(p.orientation) >= 10) & (np.rad2deg(p.orientation) <= 20))
    assert np.all((p.sf >= 1) & (p.sf <= 2)) and np.all((p.nx >= 0.5) & (p.ny <= 1.0))


# ------------------------------------------------------------------------ kernels
def _one(theta, sf, phase, nx, ny) -> GaborParams:
    return GaborParams(*(np.array([v], float) for v in (theta, sf, phase, nx, ny)))


def test_kernel_matches_naive_formula():
    p = sample_gabor_params(5, "macaque_v1", rng=3)
    size, ppd = 21, 10.0
    k = gabor_kernels(p, size, ppd, center_x=np.arange(5) + 8.0, center_y=12.0)
    assert k.shape == (5, size, size) and k.dtype == np.float32
    for i in range(5):
        f = min(p.sf[i] / ppd, 0.5)
        sx, sy = p.nx[i] / f, p.ny[i] / f
        for row, col in [(0, 0), (12, 8 + i), (5, 17), (20, 3)]:
            x, y = col - (8.0 + i), 12.0 - row
            xr = x * np.cos(p.orientation[i]) + y * np.sin(p.orientation[i])
            yr = -x * np.sin(p.orientation[i]) + y * np.cos(p.orientation[i])
            ref = np.exp(-0.5 * (xr**2 / sx**2 + yr**2 / sy**2)) / (2 * np.pi * sx * sy) * np.cos(2 * np.pi * f * xr + p.phase[i])
            assert k[i, row, col] == pytest.approx(ref, rel=1e-4, abs=1e-7)


def test_kernel_orientation_and_phase_match_grating_convention():
    size = 41
    for theta in np.deg2rad([0, 30, 75, 120, 160]):
        p = _one(theta, 0.15, 0.7, 2.0, 2.0)  # cycles/pixel at ppd 1
        k = gabor_kernels(p, size, 1.0)[0]
        oris = np.deg2rad(np.arange(0, 180, 5.0))
        phases = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        o, ph = np.meshgrid(oris, phases, indexing="ij")
        g = sinusoidal_grating(size, o.ravel(), 0.15, ph.ravel()) - 0.5
        r = np.tensordot(g, k, axes=([1, 2], [0, 1])).reshape(len(oris), len(phases))
        i, j = np.unravel_index(np.argmax(r), r.shape)
        assert abs(np.rad2deg(oris[i] - theta)) <= 2.5
        assert abs(np.angle(np.exp(1j * (phases[j] - 0.7)))) <= np.pi / 16 + 1e-9


def test_quadrature_pair_is_orthogonal_with_equal_energy():
    p = _one(0.4, 0.12, 0.3, 1.5, 1.5)
    even, odd = gabor_quadrature_pair(p, 61, 1.0)
    e, o = even.ravel().astype(float), odd.ravel().astype(float)
    assert abs(e @ o) < 1e-3 * np.sqrt((e @ e) * (o @ o))
    assert (e @ e) == pytest.approx(o @ o, rel=1e-2)


def test_frequencies_above_nyquist_are_clipped():
    f = pixel_frequencies(np.array([1.0, 4.0, 30.0]), 10.0)
    np.testing.assert_allclose(f, [0.1, 0.4, 0.5])
    f = pixel_frequencies(np.array([4.0]), 10.0, max_cycles_per_pixel=0.25)
    np.testing.assert_allclose(f, [0.25])
    k = gabor_kernels(_one(0.0, 30.0, 0.0, 1.0, 1.0), 15, 10.0)
    assert np.isfinite(k).all()
    # clipped to 0.5 cycles/pixel: along x (theta = 0) the centre row alternates in sign
    row = k[0, 7, 3:12]
    assert np.all(np.sign(row[:-1]) != np.sign(row[1:]))
    with pytest.raises(ValueError, match="pixels_per_degree"):
        pixel_frequencies(np.ones(1), 0.0)
    with pytest.raises(ValueError, match="max_cycles_per_pixel"):
        pixel_frequencies(np.ones(1), 1.0, max_cycles_per_pixel=0.7)


def test_grating_range_and_shape():
    g = sinusoidal_grating(16, [0.0, 1.0], 0.1, 0.0, contrast=0.5)
    assert g.shape == (2, 16, 16) and g.dtype == np.float32
    assert g.min() >= 0.25 - 1e-6 and g.max() <= 0.75 + 1e-6
    with pytest.raises(ValueError, match="contrast"):
        sinusoidal_grating(16, 0.0, 0.1, contrast=2.0)
