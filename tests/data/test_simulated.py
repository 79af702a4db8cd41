"""Tests of neuroreg.data.simulated.V1Population."""

from __future__ import annotations

import time

import numpy as np
import pytest

from neuroreg.data import simulated
from neuroreg.data.recording import NeuralRecording
from neuroreg.data.simulated import V1Population, pink_noise_images
from neuroreg.gabor import pixel_frequencies, sinusoidal_grating
from neuroreg.imageops import LUMINANCE_WEIGHTS


@pytest.fixture(scope="module")
def mouse():
    return V1Population(n_neurons=120, preset="mouse_v1", seed=1)


@pytest.fixture(scope="module")
def images():
    return pink_noise_images(40, 32, np.random.default_rng(99))


def _naive_response(pop: V1Population, image: np.ndarray) -> np.ndarray:
    """Reference: one neuron at a time, straight from the model's formulas."""
    lum = image[0] if image.shape[0] == 1 else np.tensordot(LUMINANCE_WEIGHTS, image, axes=1)
    contrast = lum.astype(np.float64) - 0.5
    size = pop.image_size
    cols, rows = np.meshgrid(np.arange(size), np.arange(size))
    out = np.empty(pop.n_neurons)
    for i in range(pop.n_neurons):
        f = min(pop.params.sf[i] / pop.pixels_per_degree, 0.5)
        sx, sy, th = pop.params.nx[i] / f, pop.params.ny[i] / f, pop.params.orientation[i]
        x, y = cols - pop.rf_x[i], pop.rf_y[i] - rows
        xr, yr = x * np.cos(th) + y * np.sin(th), -x * np.sin(th) + y * np.cos(th)
        env = np.exp(-0.5 * (xr**2 / sx**2 + yr**2 / sy**2)) / (2 * np.pi * sx * sy)
        even = np.sum(env * np.cos(2 * np.pi * f * xr + pop.params.phase[i]) * contrast)
        if pop.is_complex[i]:
            odd = np.sum(env * np.cos(2 * np.pi * f * xr + pop.params.phase[i] + np.pi / 2) * contrast)
            drive = np.hypot(even, odd)
        else:
            drive = max(even, 0.0)
        out[i] = drive * pop.rate_scale[i]
    return out


# --------------------------------------------------------------- construction
def test_unknown_preset_names_it_and_valid_ones():
    with pytest.raises(ValueError, match=r"'cat_v1'.*macaque_v1.*mouse_v1"):
        V1Population(n_neurons=5, preset="cat_v1")


@pytest.mark.parametrize(
    "kwargs, field",
    [({"n_neurons": 0}, "n_neurons"), ({"complex_fraction": 1.5}, "complex_fraction"), ({"mean_rate": 0}, "mean_rate"),
     ({"gain_sd": -0.1}, "gain_sd"), ({"pixels_per_degree": -1.0}, "pixels_per_degree")],
)
def test_bad_constructor_arguments(kwargs, field):
    with pytest.raises(ValueError, match=field):
        V1Population(**kwargs)


def test_presets_defaults_keep_frequencies_below_nyquist():
    for preset in ("mouse_v1", "macaque_v1"):
        pop = V1Population(n_neurons=2000, preset=preset, seed=0)
        assert (pop.params.sf / pop.pixels_per_degree).max() < 0.5
        np.testing.assert_allclose(pop.sf_effective, pop.params.sf)
    mouse, monkey = V1Population(300, "mouse_v1"), V1Population(300, "macaque_v1")
    assert np.median(mouse.sf_effective) * 20 < np.median(monkey.sf_effective)
    assert mouse.species == "mouse" and monkey.species == "macaque"


def test_cell_types_and_rf_centres(mouse):
    assert mouse.is_complex.sum() == 60
    assert set(mouse.cell_type) == {"simple", "complex"}
    lo, hi = 0.2 * 31, 0.8 * 31
    for c in (mouse.rf_x, mouse.rf_y):
        assert c.min() >= lo and c.max() <= hi and c.std() > 2.0


# ------------------------------------------------------------------ responses
def test_mean_response_matches_naive_reference(mouse, images):
    fast = mouse.mean_response(images[:4])
    assert fast.shape == (4, mouse.n_neurons) and fast.dtype == np.float32
    for n in range(4):
        np.testing.assert_allclose(fast[n], _naive_response(mouse, images[n]), rtol=2e-3, atol=2e-4)


def test_macaque_mean_response_matches_naive_reference(images):
    pop = V1Population(n_neurons=40, preset="macaque_v1", seed=2)
    np.testing.assert_allclose(pop.mean_response(images[:1])[0], _naive_response(pop, images[0]), rtol=2e-3, atol=2e-4)


def test_responses_non_negative_and_simple_cells_rectified(mouse, images):
    r = mouse.mean_response(images)
    assert (r >= 0).all()
    simple = r[:, ~mouse.is_complex]
    assert (simple == 0).mean() > 0.2  # half-wave rectification silences some cells
    assert (r[:, mouse.is_complex] > 0).mean() > 0.95


def test_rgb_uint8_and_gray_inputs_agree(mouse, images):
    gray = images[:5]
    rgb = np.repeat(gray, 3, axis=1)
    np.testing.assert_allclose(mouse.mean_response(rgb), mouse.mean_response(gray), rtol=1e-4, atol=1e-5)
    u8 = np.round(gray * 255).astype(np.uint8)
    np.testing.assert_allclose(mouse.mean_response(u8), mouse.mean_response(u8.astype(np.float32) / 255), rtol=1e-5, atol=1e-6)
    # luminance weights: a pure-green image drives like a gray one at 0.587 of the level
    green = np.zeros((1, 3, 32, 32), np.float32)
    green[:, 1] = gray[0, 0]
    equiv = 0.587 * gray[:1]
    np.testing.assert_allclose(mouse.mean_response(green), mouse.mean_response(equiv), rtol=1e-3, atol=1e-4)


def test_bad_images_raise(mouse):
    with pytest.raises(ValueError, match=r"expected spatial size \(32, 32\).*found \(28, 28\)"):
        mouse.mean_response(np.zeros((2, 1, 28, 28), np.float32))
    with pytest.raises(ValueError, match="rank 4"):
        mouse.mean_response(np.zeros((32, 32), np.float32))
    with pytest.raises(ValueError, match="channels"):
        mouse.mean_response(np.zeros((1, 2, 32, 32), np.float32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mouse.mean_response(np.full((1, 1, 32, 32), 2.0, np.float32))


def test_chunking_and_batch_independence(mouse, images, monkeypatch):
    full = mouse.mean_response(images)
    monkeypatch.setattr(simulated, "_CHUNK", 7)
    # float32 sums over differently sized blocks differ in the last bits (here up to ~3e-6)
    np.testing.assert_allclose(mouse.mean_response(images), full, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mouse.mean_response(images[13:14])[0], full[13], rtol=1e-5, atol=1e-5)


def test_mean_rate_calibrated_on_unseen_natural_like_images():
    pop = V1Population(n_neurons=300, preset="macaque_v1", mean_rate=3.0, seed=4)
    fresh = pink_noise_images(400, 32, np.random.default_rng(12345))
    assert pop.mean_response(fresh).mean() == pytest.approx(3.0, rel=0.1)
    # the calibration is internal: the same population whatever was shown before
    again = V1Population(n_neurons=300, preset="macaque_v1", mean_rate=3.0, seed=4)
    np.testing.assert_array_equal(again.rate_scale, pop.rate_scale)


def test_speed_2000_images_500_neurons():
    pop = V1Population(n_neurons=500, preset="macaque_v1")
    imgs = np.random.default_rng(0).random((2000, 1, 32, 32), dtype=np.float32)
    pop.mean_response(imgs[:10])
    t0 = time.perf_counter()
    pop.mean_response(imgs)
    assert time.perf_counter() - t0 < 2.0


# ---------------------------------------------------------------- V1 physiology
def _grating_responses(pop, neuron_index, oris, phases):
    f = pixel_frequencies(pop.params.sf, pop.pixels_per_degree)
    out = []
    for i in neuron_index:
        o, p = np.meshgrid(oris, phases, indexing="ij")
        g = sinusoidal_grating(pop.image_size, o.ravel(), f[i], p.ravel())[:, None]
        out.append(pop.mean_response(g)[:, i].reshape(len(oris), len(phases)))
    return np.stack(out)  # [neurons, oris, phases]


def test_orientation_tuning_peaks_at_preferred_orientation():
    pop = V1Population(n_neurons=60, preset="macaque_v1", image_size=48, seed=3)
    oris = np.linspace(0, np.pi, 16, endpoint=False)
    r = _grating_responses(pop, range(pop.n_neurons), oris, np.linspace(0, 2 * np.pi, 8, endpoint=False))
    best = oris[np.argmax(r.mean(axis=2), axis=1)]
    err = np.rad2deg(np.abs((best - pop.params.orientation + np.pi / 2) % np.pi - np.pi / 2))
    assert np.mean(err <= 12.0) >= 0.9  # chance would be ~0.14
    # tuned: the orthogonal orientation drives much less than the preferred one
    ortho = np.argmin(np.abs(((oris[None] - pop.params.orientation[:, None]) % np.pi) - np.pi / 2), axis=1)
    ratio = r.mean(axis=2)[np.arange(pop.n_neurons), ortho] / r.mean(axis=2).max(axis=1)
    assert np.median(ratio) < 0.3


def test_complex_cells_phase_invariant_simple_cells_modulated():
    pop = V1Population(n_neurons=60, preset="mouse_v1", image_size=48, seed=5)
    phases = np.linspace(0, 2 * np.pi, 12, endpoint=False)  # a drifting grating
    mods = []
    for i in range(pop.n_neurons):
        r = _grating_responses(pop, [i], np.array([pop.params.orientation[i]]), phases)[0, 0]
        mods.append((r.max() - r.min()) / r.mean())
    mods = np.array(mods)
    assert np.median(mods[pop.is_complex]) < 0.05
    assert np.percentile(mods[pop.is_complex], 90) < 0.25
    assert np.min(mods[~pop.is_complex]) > 2.0  # half-rectified: F1/F0 large


# --------------------------------------------------------------------- record
def test_record_contents(mouse, images):
    reps = np.arange(len(images)) % 3 + 1
    tiers = np.where(np.arange(len(images)) < 30, "train", "test")
    rec = mouse.record(images, repeats=reps, seed=0, tiers=tiers, image_ids=np.arange(len(images)) + 100)
    assert isinstance(rec, NeuralRecording)
    assert rec.responses.shape == (reps.sum(), mouse.n_neurons)
    np.testing.assert_array_equal(np.bincount(rec.trial_image), reps)
    assert rec.tiers == ["train", "test"]
    assert set(rec.trial_tier[rec.trial_image >= 30]) == {"test"}
    assert rec.image_ids[0] == 100 and rec.images.dtype == np.float32
    assert (rec.species, rec.area, rec.response_unit) == ("mouse", "V1", "spikes")
    assert rec.pixels_per_degree == mouse.pixels_per_degree
    assert "preset=mouse_v1" in rec.source and "seed=1" in rec.source
    assert np.all(rec.responses == np.round(rec.responses)) and rec.responses.min() >= 0
    for key in ("ids", "cell_type", "orientation", "spatial_frequency", "rf_x", "rf_y"):
        assert rec.neurons[key].shape == (mouse.n_neurons,)
    np.testing.assert_array_equal(rec.neurons["cell_type"], mouse.cell_type)


def test_record_deterministic_and_seed_dependent(mouse, images):
    a = mouse.record(images[:5], repeats=4, seed=11)
    b = mouse.record(images[:5], repeats=4, seed=11)
    c = mouse.record(images[:5], repeats=4, seed=12)
    np.testing.assert_array_equal(a.responses, b.responses)
    assert not np.array_equal(a.responses, c.responses)
    other = V1Population(n_neurons=120, preset="mouse_v1", seed=2)
    assert not np.allclose(other.mean_response(images[:5]), mouse.mean_response(images[:5]))
    assert not np.array_equal(other.params.sf, mouse.params.sf)


def test_poisson_statistics_without_gain_noise(images):
    pop = V1Population(n_neurons=80, preset="mouse_v1", gain_sd=0.0, seed=6)
    rec = pop.record(images[:6], repeats=600, seed=1)
    _, reps = rec.repeats()
    mean, var = reps.mean(axis=1), reps.var(axis=1, ddof=1)
    truth = pop.mean_response(images[:6])
    active = truth > 0.5
    fano = var[active] / mean[active]
    assert np.median(fano) == pytest.approx(1.0, abs=0.05)
    # repeat average converges to the ground truth: z-scores under Poisson
    z = (mean - truth) / np.sqrt(np.maximum(truth, 1e-3) / 600)
    assert np.abs(z[active]).mean() < 1.0 and np.abs(z[active]).max() < 5.5


def test_shared_gain_adds_super_poisson_variance(images):
    sd = 0.5
    pop = V1Population(n_neurons=80, preset="mouse_v1", gain_sd=sd, mean_rate=4.0, seed=6)
    rec = pop.record(images[:4], repeats=1500, seed=3)
    _, reps = rec.repeats()
    truth = pop.mean_response(images[:4])
    mean, var = reps.mean(axis=1), reps.var(axis=1, ddof=1)
    active = truth > 1.0
    # E = λ (mean-1 gain); Var = λ + λ² sd²
    np.testing.assert_allclose(mean[active].mean() / truth[active].mean(), 1.0, atol=0.05)
    excess = (var[active] - truth[active]) / truth[active] ** 2
    assert np.median(excess) == pytest.approx(sd**2, rel=0.2)
    # the gain is shared: neurons are positively correlated across trials of an image
    x = reps[0][:, active[0]]
    cc = np.corrcoef(x.T)[np.triu_indices(x.shape[1], 1)]
    assert np.mean(cc) > 0.05


def test_record_round_trips_through_file(mouse, images, tmp_path):
    u8 = np.round(images[:6] * 255).astype(np.uint8)
    rec = mouse.record(u8, repeats=2, seed=5, tiers="validation")
    path = rec.save(tmp_path / "sim.h5")
    back = NeuralRecording.load(path)
    assert back.images.dtype == np.uint8
    np.testing.assert_array_equal(back.images, u8)
    np.testing.assert_array_equal(back.responses, rec.responses)
    np.testing.assert_array_equal(back.trial_image, rec.trial_image)
    assert list(back.trial_tier) == ["validation"] * 12
    for key, values in rec.neurons.items():
        np.testing.assert_array_equal(back.neurons[key], values)
    for attr in ("species", "area", "response_unit", "pixels_per_degree", "source", "citation", "license"):
        assert getattr(back, attr) == getattr(rec, attr)


def test_record_bad_arguments(mouse, images):
    with pytest.raises(ValueError, match="repeats"):
        mouse.record(images[:3], repeats=np.array([1, 2]), seed=0)
    with pytest.raises(ValueError, match="repeats"):
        mouse.record(images[:3], repeats=-1, seed=0)
    with pytest.raises(ValueError, match="tiers.*'bogus'"):
        mouse.record(images[:3], repeats=1, seed=0, tiers=["train", "bogus", "test"])
    with pytest.raises(ValueError, match="image_ids"):
        mouse.record(images[:3], repeats=1, seed=0, image_ids=[1, 2])
    with pytest.raises(ValueError, match=r"\(32, 32\).*\(16, 16\)"):
        mouse.record(np.zeros((1, 1, 16, 16), np.float32), repeats=1, seed=0)


# ---------------------------------------------------------------- fingerprint
def test_fingerprint_stable_and_parameter_sensitive():
    a = V1Population(n_neurons=50, preset="mouse_v1", seed=0).fingerprint()
    assert a == V1Population(n_neurons=50, preset="mouse_v1", seed=0).fingerprint()
    assert len(a) == 64 and int(a, 16) >= 0
    for change in ({"seed": 1}, {"mean_rate": 2.5}, {"preset": "macaque_v1"}, {"n_neurons": 51}, {"gain_sd": 0.3},
                   {"image_size": 40}, {"complex_fraction": 0.3}, {"pixels_per_degree": 2.0}):
        kwargs = {"n_neurons": 50, "preset": "mouse_v1", "seed": 0, **change}
        assert V1Population(**kwargs).fingerprint() != a, change
