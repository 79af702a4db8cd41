"""neuroreg: neural-data regularization of vision models."""

__version__ = "0.1.0"
