"""Regularizers that pull a network's representations toward neural data."""

from .base import Regularizer, Schedule, StepContext
from .cka import CKARegularizer
from .cotraining import CotrainingRegularizer
from .dcca import DCCARegularizer
from .rsa import RSARegularizer
from .similarity import SimilarityRegularizer
from .spectral import SpectralRegularizer, SpectralSlopeRegularizer

__all__ = [
    "Regularizer",
    "Schedule",
    "StepContext",
    "SimilarityRegularizer",
    "RSARegularizer",
    "DCCARegularizer",
    "CKARegularizer",
    "CotrainingRegularizer",
    "SpectralRegularizer",
    "SpectralSlopeRegularizer",
]
