"""The two interfaces of what a regularizer is pulled toward, and the repro-stage hook.

A :class:`~neuroreg.data.datamodules.RegularizedDataModule` takes two kinds of sources,
and they are different roles, so they are different classes:

- :class:`TargetSource` (the data module's ``targets``): targets *aligned with the
  classification images*, one row per training image, as a
  :class:`~neuroreg.targets.format.TargetSet`. Training batches carry them beside the
  images.
- :class:`NeuralBatchSource` (the data module's ``neural``): a population's responses
  *to its own stimuli*, ``(stimuli, responses)``, drawn as separate neural batches
  alongside every classification batch.

Both are fed by a :class:`~neuroreg.data.recording_sources.RecordingSource` where they
use recorded data: that third "source" is where a
:class:`~neuroreg.data.recording.NeuralRecording` comes from (a file or a simulation),
the input of twin fits and of neural batches, and it stays in :mod:`neuroreg.data`.

Some sources need work done before a fit can use them (fitting a twin whose predictions
are the targets). They say so through the class method ``prerequisites(init_args)``,
which returns :class:`Prerequisite` s; ``neuroreg repro`` runs each as a stage, keyed by
content, before the fits that use the source.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.images import ImageData
from .format import TargetSet


@dataclass(frozen=True)
class Prerequisite:
    """Work a configured source needs done (once, cached by content) before a fit uses it.

    Attributes:
        kind: the kind of stage (e.g. ``"twin"``); names its folder ``stages/<kind>-<key>``.
        depends_on: what the stage's content key hashes besides the source's config
            section: a :class:`~pathlib.Path` stands for a config file's bytes and those
            of every YAML file it names; any other value is hashed as it is.
        run: does the work; returns a JSON-able summary (the stage's ``done.json``).

    Example:
        >>> need = Prerequisite("twin", (None,), lambda: {"checkpoint": "twin.ckpt"})
        >>> need.kind, need.run()
        ('twin', {'checkpoint': 'twin.ckpt'})
    """

    kind: str
    depends_on: tuple[Any, ...]
    run: Callable[[], dict[str, Any]]


class TargetSource:
    """Targets aligned with the classification images (injected by config as ``targets``)."""

    #: number of neurons the targets have; known before any data is loaded
    num_neurons: int

    def target_set(self, images: ImageData) -> TargetSet:
        """The targets of (at least) the training images of ``images``."""
        raise NotImplementedError

    @classmethod
    def prerequisites(cls, init_args: dict[str, Any]) -> list[Prerequisite]:
        """Work a source configured with ``init_args`` needs done first; none by default.

        A class method on the configuration, not on a built source: a plan is made before
        anything runs, when the files a source opens may not exist yet.
        """
        return []


class NeuralBatchSource:
    """A population's stimuli and its responses to them, drawn as separate neural batches
    (injected by config as ``neural``)."""

    #: number of neurons
    num_neurons: int

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """``(stimuli [M, C, H, W] float32 in [0, 1], responses [M, K] float32)``; NaN: no response."""
        raise NotImplementedError

    @classmethod
    def prerequisites(cls, init_args: dict[str, Any]) -> list[Prerequisite]:
        """Work a source configured with ``init_args`` needs done first (see
        :meth:`TargetSource.prerequisites`); none by default."""
        return []
