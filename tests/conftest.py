import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("WANDB_MODE", "disabled")

ROOT = Path(__file__).resolve().parents[1]
_TOOL_CACHES = {".pytest_cache", ".hypothesis", ".ruff_cache", "__pycache__"}


@pytest.fixture(scope="session", autouse=True)
def working_tree_untouched():
    """Tests write only under their tmp_path: the suite fails if it left a new file or folder in the checkout's top
    level (e.g. a data cache under ./data, a lightning_logs folder)."""
    before = {p.name for p in ROOT.iterdir()}
    yield
    new = sorted({p.name for p in ROOT.iterdir()} - before - _TOOL_CACHES)
    if new:
        pytest.fail(f"the tests wrote {new} into the checkout {ROOT}; write under tmp_path (or chdir there)", pytrace=False)


def make_recording(n_images=6, n_neurons=4, repeats=(1, 2, 3, 1, 2, 1), tiers=None, seed=0, **overrides):
    """A tiny, valid NeuralRecording with known repeat structure."""
    from neuroreg.data.recording import NeuralRecording

    rng = np.random.default_rng(seed)
    trial_image = np.repeat(np.arange(n_images), repeats)
    if tiers is None:
        tiers = np.where(trial_image < n_images - 2, "train", "test")
    kwargs = {
        "images": rng.integers(0, 256, size=(n_images, 1, 8, 8), dtype=np.uint8),
        "image_ids": np.arange(100, 100 + n_images),
        "responses": rng.poisson(2.0, size=(len(trial_image), n_neurons)).astype(np.float32),
        "trial_image": trial_image,
        "trial_tier": tiers,
        "neurons": {"ids": np.arange(n_neurons), "area": np.array(["V1"] * n_neurons)},
        "species": "mouse",
        "area": "V1",
        "response_unit": "spikes",
        "pixels_per_degree": 0.5,
        "source": "test",
    }
    kwargs.update(overrides)
    return NeuralRecording(**kwargs)


@pytest.fixture
def recording():
    return make_recording()
