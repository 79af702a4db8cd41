"""Stateless, differentiable math of the regularizers.

Every function takes batches of population vectors ``[batch, units]`` (any further
dimensions are flattened) and is tested against a naive reference in
``tests/test_functional.py``.
"""

from __future__ import annotations

import torch

_EPS = 1e-8


def _flatten(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.ndim < 2:
        raise ValueError(f"{name}: expected [batch, units, ...], found shape {tuple(x.shape)}")
    return x.reshape(x.shape[0], -1)


class _OuterGram(torch.autograd.Function):
    """``G = X Xᵀ`` with a one-matmul backward, ``dX = (dG + dGᵀ) X``."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x @ x.T

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return (grad + grad.T) @ x


def gram(x: torch.Tensor) -> torch.Tensor:
    """``x xᵀ`` ``[batch, batch]`` of ``x`` ``[batch, units]`` (one matmul forward, one backward).

    Example:
        >>> x = torch.randn(4, 10)
        >>> torch.allclose(gram(x), x @ x.T)
        True
    """
    return _OuterGram.apply(x)


def cosine_similarity_matrix(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Cosine similarity of centred population vectors over the images of a batch.

    .. math::
        \\tilde x_i = x_i - \\frac{1}{B}\\sum_j x_j, \\qquad
        S_{ij} = \\frac{\\tilde x_i \\cdot \\tilde x_j}{\\lVert \\tilde x_i\\rVert\\,\\lVert \\tilde x_j\\rVert}

    (Li et al. 2019, "Learning from brains how to regularize machines"). With a
    ``mask``, each unit is centred over the images where it is valid, and invalid
    entries contribute nothing to the dot products.

    Args:
        x: ``[batch, units, ...]`` activations or responses.
        mask: optional ``[batch, units]`` bool, True where the entry is valid.

    Returns:
        ``[batch, batch]`` similarities in [-1, 1]; a row whose centred vector is
        zero has similarity 0 with every other image.

    Example:
        >>> s = cosine_similarity_matrix(torch.randn(8, 100))
        >>> s.shape, torch.allclose(s, s.T)
        (torch.Size([8, 8]), True)
    """
    x = _flatten(x, "x")
    if mask is None:
        # normalise in Gram space: one [batch, units] temporary (the centred x)
        g = gram(x - x.mean(dim=0, keepdim=True))
        d = g.diagonal().clamp_min(0).sqrt().clamp_min(_EPS)
        return g / d[:, None] / d[None, :]
    else:
        if mask.shape != x.shape:
            raise ValueError(f"mask: expected shape {tuple(x.shape)}, found {tuple(mask.shape)}")
        m = mask.to(x.dtype)
        x = torch.where(mask, x, torch.zeros_like(x))
        mean = (x * m).sum(0, keepdim=True) / m.sum(0, keepdim=True).clamp_min(1.0)
        xc = (x - mean) * m
    norm = xc.norm(dim=1, keepdim=True).clamp_min(_EPS)
    xn = xc / norm
    return xn @ xn.T


def fisher_z(r: torch.Tensor, clamp: float = 1e-4) -> torch.Tensor:
    """Fisher z-transform ``atanh(r)`` with ``r`` clamped to ``[-1 + clamp, 1 - clamp]``."""
    return torch.atanh(r.clamp(-1.0 + clamp, 1.0 - clamp))


def offdiagonal(s: torch.Tensor) -> torch.Tensor:
    """Upper-triangular entries ``[batch·(batch-1)/2]`` of a ``[batch, batch]`` matrix."""
    i, j = torch.triu_indices(s.shape[0], s.shape[1], offset=1, device=s.device)
    return s[i, j]


def similarity_loss(s_model: torch.Tensor, s_neural: torch.Tensor, clamp: float = 1e-4) -> torch.Tensor:
    """Mean squared difference of Fisher-z similarities over image pairs (Li et al. 2019).

    .. math:: L = \\frac{2}{B(B-1)} \\sum_{i<j} (\\operatorname{atanh} S^{model}_{ij} - \\operatorname{atanh} S^{neural}_{ij})^2

    Args:
        s_model, s_neural: ``[batch, batch]`` similarity matrices.
        clamp: similarities are clamped to ``[-1 + clamp, 1 - clamp]`` before atanh.

    Raises:
        ValueError: shapes differ or the batch has fewer than 2 images (no pairs).

    Example:
        >>> x = torch.randn(8, 50)
        >>> float(similarity_loss(cosine_similarity_matrix(x), cosine_similarity_matrix(x)))
        0.0
    """
    if s_model.shape != s_neural.shape or s_model.ndim != 2 or s_model.shape[0] != s_model.shape[1]:
        raise ValueError(
            f"s_model, s_neural: expected two equal [batch, batch] matrices, found {tuple(s_model.shape)} and "
            f"{tuple(s_neural.shape)}"
        )
    if s_model.shape[0] < 2:
        raise ValueError(f"batch size: expected at least 2 images to form pairs, found {s_model.shape[0]}")
    diff = fisher_z(offdiagonal(s_model), clamp) - fisher_z(offdiagonal(s_neural), clamp)
    return diff.pow(2).mean()


def _centre(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(dim=0, keepdim=True)


def rdm(x: torch.Tensor, metric: str = "correlation", mask: torch.Tensor | None = None) -> torch.Tensor:
    """Representational dissimilarity matrix over the images of a batch.

    .. math::
        D^{cos}_{ij} = 1 - \\frac{x_i \\cdot x_j}{\\lVert x_i\\rVert\\,\\lVert x_j\\rVert},\\qquad
        D^{corr}_{ij} = 1 - \\operatorname{corr}_{units}(x_i, x_j)

    (Kriegeskorte et al. 2008; used as a training loss by Federer et al. 2020,
    "Improved object recognition using neural networks trained to mimic the brain's
    statistical properties"). ``correlation`` centres each image's vector over its
    units (Pearson); ``cosine`` uses the raw vectors. With a ``mask``, invalid
    entries are ignored (zeroed after per-image centring over valid units).

    Args:
        x: ``[batch, units, ...]``.
        metric: ``"correlation"`` or ``"cosine"``.
        mask: optional ``[batch, units]`` bool, True where valid.

    Returns:
        ``[batch, batch]`` symmetric, zero diagonal, values in [0, 2]; a zero vector
        has dissimilarity 1 to every other image.

    Raises:
        ValueError: unknown metric, bad shapes.

    Example:
        >>> d = rdm(torch.randn(8, 100))
        >>> d.shape, float(d.diagonal().abs().max())
        (torch.Size([8, 8]), 0.0)
    """
    if metric not in ("correlation", "cosine"):
        raise ValueError(f"metric: expected 'correlation' or 'cosine', found {metric!r}")
    x = _flatten(x, "x")
    m = None
    if mask is not None:
        if mask.shape != x.shape:
            raise ValueError(f"mask: expected shape {tuple(x.shape)}, found {tuple(mask.shape)}")
        m = mask.to(x.dtype)
        x = torch.where(mask, x, torch.zeros_like(x))
    if m is None:
        if metric == "correlation":
            x = x - x.mean(dim=1, keepdim=True)
        g = gram(x)  # normalised in Gram space
        n = g.diagonal().clamp_min(0).sqrt().clamp_min(_EPS)
        d = 1.0 - g / n[:, None] / n[None, :]
    else:
        if metric == "correlation":
            x = (x - (x * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp_min(1.0)) * m
        xn = x / x.norm(dim=1, keepdim=True).clamp_min(_EPS)
        d = 1.0 - xn @ xn.T
    eye = torch.eye(d.shape[0], dtype=torch.bool, device=d.device)
    return d.masked_fill(eye, 0.0)


def rsa_loss(d_model: torch.Tensor, d_neural: torch.Tensor, power: int = 1) -> torch.Tensor:
    """Mean ``|Δ|^p`` between two RDMs' dissimilarities over image pairs (Federer et al. 2020).

    .. math:: L = \\frac{2}{B(B-1)} \\sum_{i<j} \\big|D^{model}_{ij} - D^{neural}_{ij}\\big|^p

    Args:
        d_model, d_neural: ``[B, B]`` RDMs (only the upper triangles are read) or their
            condensed upper triangles ``[B(B-1)/2]`` (:func:`offdiagonal`).
        power: 1 (absolute difference) or 2 (squared).

    Raises:
        ValueError: shapes differ, fewer than one pair, or a power other than 1 or 2.

    Example:
        >>> d = rdm(torch.randn(6, 20))
        >>> float(rsa_loss(d, d)), float(rsa_loss(d, torch.zeros(6, 6), 2)) > 0
        (0.0, True)
    """
    if power not in (1, 2):
        raise ValueError(f"power: expected 1 or 2, found {power}")
    if d_model.shape != d_neural.shape:
        raise ValueError(f"d_model, d_neural: expected RDMs of one shape, found {tuple(d_model.shape)} and {tuple(d_neural.shape)}")
    if d_model.ndim == 2:
        if d_model.shape[0] != d_model.shape[1]:
            raise ValueError(f"d_model: expected a square [B, B] RDM or a condensed vector, found {tuple(d_model.shape)}")
        d_model, d_neural = offdiagonal(d_model), offdiagonal(d_neural)
    elif d_model.ndim != 1:
        raise ValueError(f"d_model: expected a square [B, B] RDM or a condensed vector, found {tuple(d_model.shape)}")
    if d_model.numel() < 1:
        raise ValueError("d_model: expected at least one image pair, found none")
    return (d_model - d_neural).abs().pow(power).mean()


def _gram(x: torch.Tensor) -> torch.Tensor:
    """Gram matrix ``[batch, batch]`` of the column-centred, flattened ``x``."""
    return gram(_centre(_flatten(x, "x")))


def _hsic_biased(gk: torch.Tensor, gl: torch.Tensor) -> torch.Tensor:
    # gk, gl are Gram matrices of column-centred data, hence already double-centred.
    return (gk * gl).sum()


def _hsic_unbiased(gk: torch.Tensor, gl: torch.Tensor) -> torch.Tensor:
    n = gk.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=gk.device)
    gk = gk.masked_fill(eye, 0.0)
    gl = gl.masked_fill(eye, 0.0)
    kl = (gk * gl).sum()
    ks, ls = gk.sum(), gl.sum()
    cross = (gk.sum(0) * gl.sum(0)).sum()  # 1ᵀ K L 1
    return (kl + ks * ls / ((n - 1) * (n - 2)) - 2.0 * cross / (n - 2)) / (n * (n - 3))


def linear_cka(x: torch.Tensor, y: torch.Tensor, unbiased: bool = False) -> torch.Tensor:
    """Linear centred kernel alignment between two representations of the same images.

    .. math::
        \\mathrm{CKA}(X, Y) = \\frac{\\mathrm{HSIC}(K, L)}{\\sqrt{\\mathrm{HSIC}(K, K)\\,\\mathrm{HSIC}(L, L)}},
        \\quad K = \\tilde X \\tilde X^\\top,\\; L = \\tilde Y \\tilde Y^\\top

    with column-centred ``X̃, Ỹ``. Biased: ``HSIC(K, L) = tr(K L)`` (Kornblith et al.
    2019; the common 1/(n-1)² cancels). Unbiased: the U-statistic of Song et al.
    (2012), used for minibatch CKA by Nguyen et al. (2021),

    .. math:: \\mathrm{HSIC}_1 = \\frac{1}{n(n-3)}\\Big[\\operatorname{tr}(\\bar K \\bar L)
              + \\frac{\\mathbf 1^\\top \\bar K \\mathbf 1\\, \\mathbf 1^\\top \\bar L \\mathbf 1}{(n-1)(n-2)}
              - \\frac{2}{n-2} \\mathbf 1^\\top \\bar K \\bar L \\mathbf 1\\Big]

    where ``K̄, L̄`` have zeroed diagonals. Computed from ``[batch, batch]`` Gram
    matrices, so cost is linear in the number of units.

    Args:
        x: ``[batch, units_x, ...]``; y: ``[batch, units_y, ...]``.
        unbiased: use the unbiased estimator (needs ``batch >= 4``).

    Returns:
        scalar; biased CKA is in [0, 1]; the unbiased one can be slightly negative.
        A constant representation gives 0 (not NaN).

    Raises:
        ValueError: batch sizes differ, or fewer than 2 (biased) / 4 (unbiased) images.

    Example:
        >>> x = torch.randn(32, 10)
        >>> round(float(linear_cka(x, 3.0 * x)), 4)
        1.0
    """
    x, y = _flatten(x, "x"), _flatten(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x, y: expected the same batch size, found {x.shape[0]} and {y.shape[0]}")
    need = 4 if unbiased else 2
    if x.shape[0] < need:
        raise ValueError(f"batch size: linear CKA ({'unbiased' if unbiased else 'biased'}) needs >= {need} images, found {x.shape[0]}")
    gx, gy = _gram(x), _gram(y)
    hsic = _hsic_unbiased if unbiased else _hsic_biased
    kl, kk, ll = hsic(gx, gy), hsic(gx, gx), hsic(gy, gy)
    return kl / (kk.clamp_min(0) * ll.clamp_min(0)).sqrt().clamp_min(_EPS)


def _inv_sqrt(c: torch.Tensor) -> torch.Tensor:
    """``C^{-1/2}`` of a symmetric positive-definite matrix via ``eigh``."""
    vals, vecs = torch.linalg.eigh(c)
    return (vecs * vals.clamp_min(_EPS).rsqrt()) @ vecs.T


def cca(x: torch.Tensor, y: torch.Tensor, k: int, eps: float = 1e-3) -> torch.Tensor:
    """Top-``k`` canonical correlations with ridge-regularised covariances.

    .. math::
        \\Sigma_{xx} = \\tfrac{1}{n-1}\\tilde X^\\top \\tilde X + ε I,\\;
        \\Sigma_{yy} = \\tfrac{1}{n-1}\\tilde Y^\\top \\tilde Y + ε I,\\;
        T = \\Sigma_{xx}^{-1/2} \\Sigma_{xy} \\Sigma_{yy}^{-1/2},\\quad
        ρ_1 \\ge … \\ge ρ_k = \\text{top singular values of } T

    The deep CCA objective of Andrew et al. (2013) is ``-Σ ρ_i`` (used to align CNN
    layers with neural responses by Pirlot et al. 2022). Inverse square roots use
    ``eigh``, so the result is differentiable in both inputs. When the batch has fewer
    images than dimensions, the ridge keeps every matrix invertible and the
    correlations finite (they approach 1 as ``ε → 0``, as sample CCA must).

    Args:
        x: ``[batch, dx]``; y: ``[batch, dy]``.
        k: number of correlations, ``1 <= k <= min(dx, dy)``.
        eps: ridge ``ε > 0`` added to each covariance.

    Returns:
        ``[k]`` canonical correlations, descending, each in [0, 1].

    Raises:
        ValueError: ``k`` out of range, ``eps <= 0``, batch sizes differ or < 2.

    Example:
        >>> x = torch.randn(256, 5)
        >>> rho = cca(x, x @ torch.randn(5, 5), k=3, eps=1e-6)
        >>> bool((rho > 0.99).all())
        True
    """
    x, y = _flatten(x, "x"), _flatten(y, "y")
    n, dx = x.shape
    dy = y.shape[1]
    if y.shape[0] != n:
        raise ValueError(f"x, y: expected the same batch size, found {n} and {y.shape[0]}")
    if n < 2:
        raise ValueError(f"batch size: CCA needs >= 2 images, found {n}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= min(dx, dy):
        raise ValueError(f"k: expected an integer in [1, min(dx, dy)] = [1, {min(dx, dy)}] (dx={dx}, dy={dy}), found {k}")
    if not eps > 0:
        raise ValueError(f"eps: expected a ridge > 0, found {eps}")
    xc, yc = _centre(x), _centre(y)
    sxx = xc.T @ xc / (n - 1) + eps * torch.eye(dx, dtype=x.dtype, device=x.device)
    syy = yc.T @ yc / (n - 1) + eps * torch.eye(dy, dtype=y.dtype, device=y.device)
    sxy = xc.T @ yc / (n - 1)
    t = _inv_sqrt(sxx) @ sxy @ _inv_sqrt(syy)
    # singular values of T = sqrt of eigenvalues of TᵀT (or T Tᵀ, the smaller one)
    m = t.T @ t if dy <= dx else t @ t.T
    vals = torch.linalg.eigvalsh(m).flip(0)[:k]
    return vals.clamp_min(1e-12).sqrt().clamp_max(1.0)  # clamp: finite gradient at ρ = 0


def eigenspectrum(x: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of the covariance of a batch of population vectors, descending.

    .. math:: λ_1 \\ge … \\ge λ_m \\text{ of } \\tfrac{1}{n-1}\\tilde X^\\top \\tilde X,\\quad m = \\min(n, d)

    Computed from the smaller of the two Gram matrices with ``eigvalsh`` (whose
    gradient needs no eigenvalue gaps). Only ``n - 1`` eigenvalues can be non-zero.

    Args:
        x: ``[batch, units, ...]`` (batch >= 2).

    Returns:
        ``[min(batch, units)]`` non-negative eigenvalues, descending.

    Example:
        >>> lam = eigenspectrum(torch.randn(64, 10))
        >>> lam.shape, bool((lam[:-1] >= lam[1:]).all())
        (torch.Size([10]), True)
    """
    x = _flatten(x, "x")
    n, d = x.shape
    if n < 2:
        raise ValueError(f"batch size: an eigenspectrum needs >= 2 images, found {n}")
    xc = _centre(x)
    g = gram(xc) if n <= d else gram(xc.T)
    return torch.linalg.eigvalsh(g / (n - 1)).flip(0).clamp_min(0)


def power_law_fit(spectrum: torch.Tensor, n_min: int = 1, n_max: int | None = None) -> torch.Tensor:
    """Exponent α of a power law ``λ_n ∝ n^{-α}`` fitted by least squares in log–log.

    .. math:: α = -\\frac{\\sum_n (u_n - \\bar u)(v_n - \\bar v)}{\\sum_n (u_n - \\bar u)^2},
              \\quad u_n = \\log n,\\; v_n = \\log λ_n,\\; n = n_{min} … n_{max}

    (Stringer et al. 2019 measure α ≈ 1 in mouse V1; Gerum et al. 2022 regularise
    this fitted slope.) Indices are 1-based; eigenvalues are clamped at 1e-12 before
    the log. Differentiable in ``spectrum``.

    Args:
        spectrum: ``[m]`` positive, descending eigenvalues.
        n_min, n_max: fitted index range (inclusive, 1-based); ``n_max=None`` is ``m``.

    Returns:
        scalar α.

    Raises:
        ValueError: fewer than 2 indices in range, or the range exceeds the spectrum.

    Example:
        >>> n = torch.arange(1, 101, dtype=torch.float64)
        >>> round(float(power_law_fit(n ** -1.5, 1, 100)), 6)
        1.5
    """
    if spectrum.ndim != 1:
        raise ValueError(f"spectrum: expected a 1-D tensor [m], found shape {tuple(spectrum.shape)}")
    m = spectrum.shape[0]
    n_max = m if n_max is None else n_max
    if not 1 <= n_min < n_max <= m:
        raise ValueError(f"n_min, n_max: expected 1 <= n_min < n_max <= {m} (spectrum length), found {n_min}, {n_max}")
    n = torch.arange(n_min, n_max + 1, dtype=spectrum.dtype, device=spectrum.device)
    u = n.log()
    v = spectrum[n_min - 1 : n_max].clamp_min(1e-12).log()
    uc = u - u.mean()
    return -(uc * (v - v.mean())).sum() / uc.pow(2).sum()


def ey_cca_objective(
    zx: torch.Tensor, zy: torch.Tensor, zx2: torch.Tensor | None = None, zy2: torch.Tensor | None = None
) -> torch.Tensor:
    """Eckhart–Young (EY) unconstrained CCA objective, unbiased on minibatches.

    .. math::
        A = Σ_{xy} + Σ_{yx},\\quad B = Σ_{xx} + Σ_{yy},\\quad
        L = -2\\operatorname{tr}(A) + \\operatorname{tr}(B\\,B')

    where ``B'`` is estimated on an independent batch ``(zx2, zy2)`` (``None``: the
    same batch, biased). Its minimisers span the top canonical subspace with no
    whitening, so its stochastic gradients are unbiased (Chapman, Aguila, Wells 2023,
    "Efficient algorithms for the CCA family"; cca_zoo's DCCA_EY).

    Args:
        zx: ``[batch, d]``, zy: ``[batch, d]`` projections of the two views.
        zx2, zy2: optional ``[batch2, d]`` projections of an independent batch.

    Returns:
        scalar; at the optimum ``-Σ_i ρ_i²``-like (lower is better).

    Example:
        >>> z = torch.randn(64, 3)
        >>> bool(ey_cca_objective(z, z) < ey_cca_objective(z, torch.randn(64, 3)))
        True
    """
    if zx.shape != zy.shape or zx.ndim != 2:
        raise ValueError(f"zx, zy: expected two [batch, d] tensors of one shape, found {tuple(zx.shape)} and {tuple(zy.shape)}")

    def ab(a, b):
        n = a.shape[0]
        ac, bc = _centre(a), _centre(b)
        cxy = ac.T @ bc / (n - 1)
        return cxy + cxy.T, ac.T @ ac / (n - 1) + bc.T @ bc / (n - 1)

    a, b = ab(zx, zy)
    b2 = b if zx2 is None else ab(zx2, zy2)[1]
    return -2.0 * torch.trace(a) + torch.trace(b @ b2)
