"""Target sources that read or compute targets from data.

- :class:`GroundTruthTargets` (a :class:`~neuroreg.targets.base.TargetSource`): the
  noise-free responses of a simulated population to the training images (the oracle);
- :class:`TargetSetFile` (a :class:`~neuroreg.targets.base.TargetSource`): a TargetSet
  on disk, e.g. written by ``neuroreg predict``;
- :class:`RecordingResponses` (a :class:`~neuroreg.targets.base.NeuralBatchSource`): a
  recording's own stimuli with their mean (or twin-denoised) responses, drawn as
  neural batches.

Controls (shuffled, pixels, random network) are in :mod:`neuroreg.targets.controls`,
twin-predicted targets in :mod:`neuroreg.targets.twin`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.images import ImageData
from ..data.recording import NeuralRecording, RecordingError
from ..data.recording_sources import RecordingSource
from .base import NeuralBatchSource, TargetSource
from .format import TargetSet, TargetSetError, target_key


class GroundTruthTargets(TargetSource):
    """Noise-free mean responses of a simulated population to the training images.

    The oracle target source: cached as a TargetSet under ``cache_dir``, keyed by the
    population's fingerprint and the training images' content.

    Args:
        population: a :class:`~neuroreg.data.simulated.V1Population`.
        cache_dir: folder of cached TargetSets.
    """

    def __init__(self, population, cache_dir: str = "data/targets"):
        self.population = population
        self.cache_dir = Path(cache_dir)
        self.num_neurons = int(population.n_neurons)

    def target_set(self, images: ImageData) -> TargetSet:
        train = images.split("train")
        key = target_key("ground-truth", self.population.fingerprint(), train.fingerprint())
        path = self.cache_dir / f"ground_truth_{key[:20]}.h5"
        if path.exists():
            return TargetSet.load(path, expected_key=key)
        responses = self.population.mean_response(train.images_float())
        ts = TargetSet(
            targets=np.asarray(responses, dtype=np.float32),
            image_keys=train.keys,
            key=key,
            source=f"ground truth of {type(self.population).__name__} {self.population.fingerprint()[:12]}",
        )
        ts.save(path)
        ts.name = str(path)
        return ts


class TargetSetFile(TargetSource):
    """A TargetSet on disk (e.g. written by a twin's prediction).

    Args:
        path: the ``.h5`` file.
        expected_key: when given, a file with any other key is refused.
        num_neurons: when given, the neurons the config expects (e.g. the population the
            regularizer was set up for); a file with another count is refused when the
            source is built, before any training.

    Raises:
        TargetSetError: the file is not a TargetSet, or its neuron count is not ``num_neurons``.
    """

    def __init__(self, path: str, expected_key: str | None = None, num_neurons: int | None = None):
        self.path = Path(path)
        self.expected_key = expected_key
        found = int(TargetSet.read_header(self.path)["n_neurons"])
        if num_neurons is not None and found != int(num_neurons):
            raise TargetSetError(f"{self.path}: attribute 'n_neurons': expected {int(num_neurons)} neurons "
                                 f"(TargetSetFile num_neurons), found {found}")
        self.num_neurons = found

    def target_set(self, images: ImageData) -> TargetSet:
        ts = TargetSet.load(self.path, expected_key=self.expected_key)
        if ts.n_neurons != self.num_neurons:
            raise TargetSetError(f"{self.path}: field 'targets': expected {self.num_neurons} neurons, found {ts.n_neurons}")
        return ts


class RecordingResponses(NeuralBatchSource):
    """Per-stimulus responses of a recording: recorded means over repeats, or twin-denoised.

    Args:
        recording: where the :class:`~neuroreg.data.recording.NeuralRecording` comes from
            (:class:`~neuroreg.data.recording_sources.RecordingFile`, or
            :class:`~neuroreg.data.recording_sources.SimulatedRecording` for the embedded data).
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
