import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from neuroreg.regularizers import functional as F


def naive_cosine(x, mask=None):
    """Loop-based reference: centre each unit over its valid images, then cosine."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    b, k = x.shape
    m = np.ones_like(x, dtype=bool) if mask is None else np.asarray(mask)
    xc = np.zeros_like(x)
    for u in range(k):
        valid = m[:, u]
        if valid.any():
            mu = x[valid, u].mean()
            xc[valid, u] = x[valid, u] - mu
    s = np.zeros((b, b))
    for i in range(b):
        for j in range(b):
            ni, nj = np.linalg.norm(xc[i]), np.linalg.norm(xc[j])
            s[i, j] = xc[i] @ xc[j] / (max(ni, 1e-8) * max(nj, 1e-8))  # norms floored at the same 1e-8: a zero vector gives 0
    return s


def naive_similarity_loss(s1, s2, clamp=1e-4):
    vals = []
    for i in range(len(s1)):
        for j in range(i + 1, len(s1)):
            a = math.atanh(min(max(s1[i, j], -1 + clamp), 1 - clamp))
            b = math.atanh(min(max(s2[i, j], -1 + clamp), 1 - clamp))
            vals.append((a - b) ** 2)
    return float(np.mean(vals))


finite = st.floats(-10, 10, allow_nan=False, width=32)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(2, 9), st.integers(1, 12)), elements=finite))
def test_cosine_matches_naive_reference(x):
    s = F.cosine_similarity_matrix(torch.from_numpy(x).double()).numpy()
    np.testing.assert_allclose(s, naive_cosine(x), atol=1e-6)
    np.testing.assert_allclose(s, s.T, atol=1e-12)
    assert np.all(np.abs(s) <= 1 + 1e-9)


def test_cosine_with_mask_matches_reference():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 9))
    mask = rng.random((7, 9)) > 0.3
    x_nan = np.where(mask, x, np.nan)
    s = F.cosine_similarity_matrix(torch.from_numpy(np.nan_to_num(x_nan)), torch.from_numpy(mask)).numpy()
    np.testing.assert_allclose(s, naive_cosine(x, mask), atol=1e-10)


def test_cosine_flattens_feature_maps_and_is_invariant_to_scale_and_shift():
    x = torch.randn(6, 3, 4, 4, dtype=torch.float64)
    s = F.cosine_similarity_matrix(x)
    np.testing.assert_allclose(s.numpy(), naive_cosine(x.numpy()), atol=1e-10)
    torch.testing.assert_close(F.cosine_similarity_matrix(3.0 * x + 2.0), s)


def test_similarity_loss_matches_naive_and_is_zero_on_identical():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(8, 20)), rng.normal(size=(8, 30))
    sa, sb = F.cosine_similarity_matrix(torch.from_numpy(a)), F.cosine_similarity_matrix(torch.from_numpy(b))
    assert float(F.similarity_loss(sa, sb)) == pytest.approx(naive_similarity_loss(sa.numpy(), sb.numpy()), rel=1e-9)
    assert float(F.similarity_loss(sa, sa)) == 0.0
    assert float(F.similarity_loss(sa, sb)) > 0.01


def test_similarity_loss_gradient_finite_even_for_identical_images():
    x = torch.randn(5, 10, requires_grad=True)
    x2 = torch.cat([x[:1], x[:1], x[2:]])  # two identical rows: similarity 1, clamped
    loss = F.similarity_loss(F.cosine_similarity_matrix(x2), F.cosine_similarity_matrix(torch.randn(5, 7)))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_similarity_loss_rejects_single_image_and_bad_shapes():
    with pytest.raises(ValueError, match="at least 2 images"):
        F.similarity_loss(torch.ones(1, 1), torch.ones(1, 1))
    with pytest.raises(ValueError, match=r"\(4, 4\) and \(3, 3\)"):
        F.similarity_loss(torch.eye(4), torch.eye(3))


def test_fisher_z_clamps():
    z = F.fisher_z(torch.tensor([-1.0, 0.0, 0.5, 1.0]), clamp=1e-3)
    assert torch.isfinite(z).all()
    assert float(z[2]) == pytest.approx(math.atanh(0.5))


# ------------------------------------------------------------------ RDM, CKA, CCA, spectra
def naive_rdm(x, metric):
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    b = len(x)
    d = np.zeros((b, b))
    for i in range(b):
        for j in range(b):
            a, c = x[i].copy(), x[j].copy()
            if metric == "correlation":
                a, c = a - a.mean(), c - c.mean()
            na, nc = np.linalg.norm(a), np.linalg.norm(c)
            sim = 0.0 if na < 1e-8 or nc < 1e-8 else a @ c / (na * nc)
            d[i, j] = 0.0 if i == j else 1.0 - sim
    return d


@settings(max_examples=30, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(2, 8), st.integers(2, 10)),
              elements=st.floats(-10, 10).filter(lambda v: v == 0 or abs(v) > 1e-3)),  # away from the zero-norm threshold
       st.sampled_from(["correlation", "cosine"]))
def test_rdm_matches_naive_and_is_symmetric_with_zero_diagonal(x, metric):
    d = F.rdm(torch.from_numpy(x), metric).numpy()
    np.testing.assert_allclose(d, naive_rdm(x, metric), atol=1e-6)
    np.testing.assert_allclose(d, d.T, atol=1e-12)
    assert np.all(np.diag(d) == 0) and np.all(d >= -1e-9) and np.all(d <= 2 + 1e-9)


def test_rdm_mask_ignores_invalid_entries_and_rejects_unknown_metric():
    x = torch.randn(5, 6, dtype=torch.float64)
    garbage = x.clone()
    garbage[:, 5] = 1e6
    mask = torch.ones(5, 6, dtype=torch.bool)
    mask[:, 5] = False
    torch.testing.assert_close(F.rdm(garbage, "correlation", mask), F.rdm(x[:, :5], "correlation"))
    with pytest.raises(ValueError, match="metric"):
        F.rdm(x, "euclid")


def naive_cka(x, y):
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    y = np.asarray(y, np.float64).reshape(len(y), -1)
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    gk, gl = h @ x @ x.T @ h, h @ y @ y.T @ h
    return np.trace(gk @ gl) / np.sqrt(np.trace(gk @ gk) * np.trace(gl @ gl))


def naive_unbiased_hsic(gk, gl):
    n = len(gk)
    gk, gl = gk.copy(), gl.copy()
    np.fill_diagonal(gk, 0)
    np.fill_diagonal(gl, 0)
    one = np.ones(n)
    return (np.trace(gk @ gl) + (one @ gk @ one) * (one @ gl @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * one @ gk @ gl @ one) / (n * (n - 3))


@settings(max_examples=30, deadline=None)
@given(st.integers(4, 12), st.integers(1, 8), st.integers(1, 8), st.integers(0, 10_000))
def test_linear_cka_matches_naive_and_invariances(n, dx, dy, seed):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(n, dx)), rng.normal(size=(n, dy))
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    c = float(F.linear_cka(tx, ty))
    assert c == pytest.approx(naive_cka(x, y), abs=1e-9)
    q, _ = np.linalg.qr(rng.normal(size=(dx, dx)))
    assert float(F.linear_cka(torch.from_numpy(x @ q) * 7.5, ty)) == pytest.approx(c, abs=1e-9)  # orthogonal + isotropic
    assert float(F.linear_cka(tx + 3.0, ty)) == pytest.approx(c, abs=1e-9)
    assert 0.0 <= c <= 1.0 + 1e-12


def test_unbiased_cka_matches_naive_u_statistic():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(10, 4)), rng.normal(size=(10, 6))
    xc, yc = x - x.mean(0), y - y.mean(0)
    gk, gl = xc @ xc.T, yc @ yc.T
    ref = naive_unbiased_hsic(gk, gl) / np.sqrt(naive_unbiased_hsic(gk, gk) * naive_unbiased_hsic(gl, gl))
    assert float(F.linear_cka(torch.from_numpy(x), torch.from_numpy(y), unbiased=True)) == pytest.approx(ref, rel=1e-9)
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    assert float(F.linear_cka(torch.from_numpy(2 * x @ q), torch.from_numpy(y), unbiased=True)) == pytest.approx(ref, rel=1e-9)
    with pytest.raises(ValueError, match=">= 4 images"):
        F.linear_cka(torch.randn(3, 2), torch.randn(3, 2), unbiased=True)


def test_cka_of_constant_representation_is_zero_not_nan():
    c = F.linear_cka(torch.ones(8, 5), torch.randn(8, 3))
    assert torch.isfinite(c) and float(c) == 0.0


def naive_cca(x, y, eps):
    n = len(x)
    xc, yc = x - x.mean(0), y - y.mean(0)
    sxx = xc.T @ xc / (n - 1) + eps * np.eye(x.shape[1])
    syy = yc.T @ yc / (n - 1) + eps * np.eye(y.shape[1])
    sxy = xc.T @ yc / (n - 1)
    # generalized eigenproblem: Sxx^-1 Sxy Syy^-1 Syx a = rho^2 a
    m = np.linalg.solve(sxx, sxy) @ np.linalg.solve(syy, sxy.T)
    return np.sort(np.sqrt(np.clip(np.linalg.eigvals(m).real, 0, None)))[::-1]


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.integers(0, 10_000))
def test_cca_matches_naive_and_is_invariant_to_invertible_maps(dx, dy, seed):
    rng = np.random.default_rng(seed)

    def invertible(d):  # well-conditioned (rotation × scaling in [0.5, 2] × rotation), so the 1e-9 ridge stays negligible
        q1, _ = np.linalg.qr(rng.normal(size=(d, d)))
        q2, _ = np.linalg.qr(rng.normal(size=(d, d)))
        return q1 @ np.diag(rng.uniform(0.5, 2.0, d)) @ q2

    n = 200
    z = rng.normal(size=(n, 2))
    # a mixing matrix drawn as plain normals can be near singular (seed 194 gave x a covariance eigenvalue of 2e-7), and
    # then the ridge is not negligible against it and the invariance does not hold (0.9999 vs 0.99987)
    x = np.hstack([z, rng.normal(size=(n, dx))]) @ invertible(dx + 2)
    y = np.hstack([z @ invertible(2), rng.normal(size=(n, dy))])
    k = min(x.shape[1], y.shape[1])
    rho = F.cca(torch.from_numpy(x), torch.from_numpy(y), k, eps=1e-9).numpy()
    np.testing.assert_allclose(rho, naive_cca(x, y, 1e-9)[:k], atol=1e-5)

    a, b = invertible(x.shape[1]), invertible(y.shape[1])
    rho2 = F.cca(torch.from_numpy(x @ a + 5.0), torch.from_numpy(y @ b), k, eps=1e-9).numpy()
    np.testing.assert_allclose(rho2, rho, atol=1e-4)
    assert np.all((rho >= 0) & (rho <= 1)) and rho[0] > 0.95  # two shared latent dimensions


def test_cca_rank_deficient_batch_is_finite_with_gradients():
    x = torch.randn(6, 20, requires_grad=True)
    y = torch.randn(6, 30)
    rho = F.cca(x, y, k=5, eps=1e-3)
    (-rho.sum()).backward()
    assert torch.isfinite(rho).all() and torch.isfinite(x.grad).all()
    assert float(rho.detach().max()) <= 1.0


@pytest.mark.parametrize("k, eps, msg", [(6, 1e-3, r"k: expected an integer in \[1, min\(dx, dy\)\] = \[1, 5\]"), (0, 1e-3, "k:"),
                                         (2, 0.0, "eps")])
def test_cca_rejects_bad_arguments(k, eps, msg):
    with pytest.raises(ValueError, match=msg):
        F.cca(torch.randn(10, 5), torch.randn(10, 8), k, eps)


def test_eigenspectrum_matches_numpy_and_power_law_recovers_exponent():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 12)) * np.arange(1, 13) ** -0.5
    lam = F.eigenspectrum(torch.from_numpy(x)).numpy()
    ref = np.sort(np.linalg.eigvalsh(np.cov(x.T)))[::-1]
    np.testing.assert_allclose(lam, ref, atol=1e-10)
    wide = F.eigenspectrum(torch.randn(8, 40, dtype=torch.float64))
    assert wide.shape == (8,) and float(wide[-1]) == pytest.approx(0.0, abs=1e-9)  # rank n - 1
    n = torch.arange(1, 51, dtype=torch.float64)
    assert float(F.power_law_fit(3.0 * n**-1.3, 5, 40)) == pytest.approx(1.3)
    with pytest.raises(ValueError, match="n_min, n_max"):
        F.power_law_fit(n, 10, 60)


def test_power_law_fit_is_differentiable():
    lam = torch.linspace(2.0, 0.1, 30, dtype=torch.float64, requires_grad=True)
    F.power_law_fit(lam, 1, 30).backward()
    assert torch.isfinite(lam.grad).all() and lam.grad.abs().sum() > 0


def test_ey_objective_prefers_correlated_views():
    z = torch.randn(128, 3)
    assert float(F.ey_cca_objective(z, z + 0.1 * torch.randn(128, 3))) < float(F.ey_cca_objective(z, torch.randn(128, 3)))


def test_gram_has_exact_gradient():
    x = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(F.gram, (x,))
    torch.testing.assert_close(F.gram(x), x @ x.T)
