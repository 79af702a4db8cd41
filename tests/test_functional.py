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
            s[i, j] = 0.0 if ni < 1e-8 or nj < 1e-8 else xc[i] @ xc[j] / (ni * nj)
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
