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
        xc = x - x.mean(dim=0, keepdim=True)
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
