"""The global random states of python, numpy, torch and CUDA: saved, restored, carried.

:func:`random_state` / :func:`set_random_state` turn the states into a dict of tensors and
back (so a checkpoint loads them with ``torch.load(weights_only=True)``);
:func:`kept_random_state` restores them after a block; :class:`RandomState` stores them in
every checkpoint and restores them when training restarts from one.

>>> import random
>>> state = random_state()
>>> first = random.random()
>>> set_random_state(state)
>>> random.random() == first
True
>>> before = random.getstate()
>>> with kept_random_state():
...     _ = random.random()
>>> random.getstate() == before
True
"""

from __future__ import annotations

import contextlib
import os
import random
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

#: environment variable in which Lightning's ``seed_everything`` stores the run's seed
SEED_ENV = "PL_GLOBAL_SEED"


def random_state() -> dict[str, Any]:
    """The global random states of python, numpy, torch (and CUDA when initialised).

    Returns:
        ``{"python", "numpy", "torch", "cuda"}`` made of tensors, ints, floats and
        strings only (loadable with ``torch.load(weights_only=True)``); ``"cuda"`` is
        one state per device, empty when CUDA is not initialised.
    """
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
    }


def set_random_state(state: dict[str, Any]) -> None:
    """Restore what :func:`random_state` returned.

    CUDA states are restored when CUDA is available and the device count matches (else
    a warning says why not).

    Args:
        state: the saved states.

    Raises:
        KeyError: a state is missing.
    """
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    nps = state["numpy"]
    np.random.set_state((nps["name"], nps["keys"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"], nps["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    cuda = list(state.get("cuda", []))
    if cuda and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            warnings.warn(f"checkpoint holds the random state of {len(cuda)} CUDA devices, found {torch.cuda.device_count()}; not restored",
                          stacklevel=2)


@contextlib.contextmanager
def kept_random_state() -> Iterator[None]:
    """Restore every global random state, and Lightning's seed variable, when the block ends.

    Saves :func:`random_state` and ``$PL_GLOBAL_SEED`` (which ``seed_everything`` sets and
    the training order reads, see :mod:`neuroreg.data.sampling`) on entry and puts them
    back on exit, also when the block raises; so work done inside (fitting a twin,
    building modules that draw initial weights) leaves the surrounding run's random
    streams as they were.
    """
    state, seed = random_state(), os.environ.get(SEED_ENV)
    try:
        yield
    finally:
        set_random_state(state)
        if seed is None:
            os.environ.pop(SEED_ENV, None)
        else:
            os.environ[SEED_ENV] = seed


class RandomState(Callback):
    """Carries the global random states through checkpoints.

    Every checkpoint stores the states at the moment it is written; when training
    restarts from a checkpoint they are restored at ``on_train_start`` (after the
    sanity check, which an uninterrupted run did not run at that point).
    """

    def __init__(self):
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return random_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending is not None:
            set_random_state(self._pending)
            self._pending = None
