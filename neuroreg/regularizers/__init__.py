"""Regularizers that pull a network's representations toward neural data."""

from .base import Regularizer
from .similarity import SimilarityRegularizer

__all__ = ["Regularizer", "SimilarityRegularizer"]
