"""Neural batch sources: a recording's own stimuli and responses, drawn alongside
classification batches (see :class:`~neuroreg.data.datamodules.RegularizedDataModule`).

A :class:`NeuralSource` has ``num_neurons`` and returns ``(stimuli [M, C, H, W]
float32 in [0, 1], responses [M, K] float32)``; NaN marks a neuron without a
response to a stimulus.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .neural import RecordingSource
from .recording import NeuralRecording, RecordingError
from .targets import TargetSet, TargetSetError


class NeuralSource:
    """Stimuli and per-stimulus responses of one population (injected by config)."""

    #: number of neurons
    num_neurons: int

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """``(stimuli [M, C, H, W] float32 in [0, 1], responses [M, K] float32)``."""
        raise NotImplementedError


class RecordingResponses(NeuralSource):
    """Per-stimulus responses of a recording: recorded means over repeats, or twin-denoised.

    Args:
        recording: where the :class:`~neuroreg.data.recording.NeuralRecording` comes from
            (:class:`~neuroreg.data.neural.RecordingFile`, or
            :class:`~neuroreg.data.neural.SimulatedRecording` for the embedded data).
        tier: stimuli with trials of this tier are used; responses are
            ``NeuralRecording.mean_per_image(tier)``.
        denoised: optional TargetSet ``.h5`` with predicted (twin-denoised) responses to
            the recording's stimuli, keyed by ``str(image_id)``, used instead of the means.
        expected_key: content key the denoised TargetSet must carry (when given).
    """

    def __init__(self, recording: RecordingSource, tier: str = "train", denoised: str | None = None, expected_key: str | None = None):
        self.recording = recording
        self.tier = tier
        self.denoised = None if denoised is None else Path(denoised)
        self.expected_key = expected_key
        self._rec: NeuralRecording | None = None

    def _load_recording(self) -> NeuralRecording:
        if self._rec is None:
            self._rec = self.recording.load()
        return self._rec

    @property
    def num_neurons(self) -> int:
        if self.denoised is not None:
            return int(TargetSet.read_header(self.denoised)["n_neurons"])
        return self._load_recording().n_neurons

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        rec = self._load_recording()
        index, mean = rec.mean_per_image(self.tier)
        if len(index) == 0:
            raise RecordingError(f"{rec.name}: tier {self.tier!r}: expected trials, found none (tiers: {rec.tiers})")
        stimuli = rec.images_float()[index]
        if self.denoised is None:
            return stimuli, mean
        ts = TargetSet.load(self.denoised, expected_key=self.expected_key)
        if ts.n_neurons != rec.n_neurons:
            raise TargetSetError(f"{ts.name}: field 'targets': expected {rec.n_neurons} neurons (the recording's), found {ts.n_neurons}")
        return stimuli, ts.align(np.asarray([str(i) for i in rec.image_ids[index]]))


class ShuffledResponses(NeuralSource):
    """Control: another source's responses permuted across its stimuli (seeded).

    Keeps every response statistic but breaks the stimulus–response pairing.

    Args:
        source: the neural source to shuffle.
        seed: permutation seed.
    """

    def __init__(self, source: NeuralSource, seed: int = 0):
        self.source = source
        self.seed = seed

    @property
    def num_neurons(self) -> int:
        return int(self.source.num_neurons)

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        stimuli, responses = self.source.load()
        perm = np.random.default_rng(self.seed).permutation(len(responses))
        return stimuli, responses[perm]
