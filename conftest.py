"""Docstring examples (``--doctest-modules``) start from the same random state every run."""

import pytest


@pytest.fixture(autouse=True)
def seeded_doctest(request):
    if getattr(request.node, "dtest", None) is not None:  # a doctest item
        import numpy as np
        import torch

        torch.manual_seed(0)
        np.random.seed(0)
