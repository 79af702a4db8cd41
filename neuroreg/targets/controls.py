"""Control sources the neural-regularization papers compare against.

Each takes the place of neural data for any regularizer. Aligned with the training
images (:class:`~neuroreg.targets.base.TargetSource`):

- :class:`ShuffledTargets`: real targets permuted across images (same statistics,
  no image–response pairing);
- :class:`PixelTargets`: the (down-sampled) pixels themselves — "pixel-space
  similarity";
- :class:`RandomNetworkTargets`: features of a randomly initialised, untrained network.

Neural batches (:class:`~neuroreg.targets.base.NeuralBatchSource`):

- :class:`ShuffledResponses`: a source's responses permuted across its stimuli;
- :class:`PixelResponses`: a source's stimuli, their (down-sampled) pixels as responses.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..data.images import ImageData
from .base import NeuralBatchSource, TargetSource
from .format import TargetSet, target_key


class ShuffledTargets(TargetSource):
    """Another source's targets, rows permuted across the training images (seeded).

    Args:
        source: the target source to shuffle.
        seed: permutation seed.
    """

    def __init__(self, source: TargetSource, seed: int = 0):
        self.source = source
        self.seed = seed
        self.num_neurons = int(source.num_neurons)

    def target_set(self, images: ImageData) -> TargetSet:
        base = self.source.target_set(images)
        perm = np.random.default_rng(self.seed).permutation(len(base.image_keys))
        return TargetSet(
            targets=base.targets[perm],
            image_keys=base.image_keys,
            key=target_key("shuffled", base.key, str(self.seed)),
            source=f"shuffled (seed {self.seed}) {base.source}",
            name=f"shuffled {base.name}",
        )


class PixelTargets(TargetSource):
    """Pixels of the training images, average-pooled to ``size × size``, as targets.

    Args:
        channels: image channels (must match the image set; sets ``num_neurons``).
        size: side after pooling (``num_neurons = channels · size²``).
    """

    def __init__(self, channels: int = 1, size: int = 8):
        if channels < 1 or size < 1:
            raise ValueError(f"channels, size: expected >= 1, found {channels}, {size}")
        self.channels, self.size = channels, size
        self.num_neurons = channels * size * size

    def target_set(self, images: ImageData) -> TargetSet:
        train = images.split("train")
        if train.images.shape[1] != self.channels:
            raise ValueError(f"PixelTargets: 'channels': expected {train.images.shape[1]} (the image set's), found {self.channels}")
        x = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(train.images_float()), self.size)
        return TargetSet(
            targets=x.flatten(1).numpy().astype(np.float32),
            image_keys=train.keys,
            key=target_key("pixels", str(self.size), train.fingerprint()),
            source=f"pixels pooled to {self.size}x{self.size}",
            name="pixel targets",
        )


class RandomNetworkTargets(TargetSource):
    """Output features of a randomly initialised, untrained network.

    The network's parameters are re-initialised from ``seed`` (every submodule with
    ``reset_parameters``), so the targets do not depend on the global RNG.

    Args:
        network: a backbone mapping ``[N, C, H, W]`` images in [0, 1] to
            ``[N, out_features]`` (must expose ``out_features``).
        seed: initialisation seed.
        batch_size: images per forward pass.
    """

    def __init__(self, network: nn.Module, seed: int = 0, batch_size: int = 256):
        if not hasattr(network, "out_features"):
            raise ValueError(f"network: expected a module with 'out_features', found {type(network).__name__}")
        self.network = network
        self.seed = seed
        self.batch_size = batch_size
        self.num_neurons = int(network.out_features)

    def target_set(self, images: ImageData) -> TargetSet:
        train = images.split("train")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            for m in self.network.modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
        self.network.eval()
        x = torch.from_numpy(train.images_float())
        with torch.no_grad():
            out = torch.cat([self.network(x[i : i + self.batch_size]) for i in range(0, len(x), self.batch_size)])
        return TargetSet(
            targets=out.numpy().astype(np.float32),
            image_keys=train.keys,
            key=target_key("random-network", type(self.network).__name__, repr(self.network), str(self.seed), train.fingerprint()),
            source=f"untrained {type(self.network).__name__} (seed {self.seed})",
            name="random-network targets",
        )


class ShuffledResponses(NeuralBatchSource):
    """Control: another source's responses permuted across its stimuli (seeded).

    Keeps every response statistic but breaks the stimulus–response pairing.

    Args:
        source: the neural source to shuffle.
        seed: permutation seed.
    """

    def __init__(self, source: NeuralBatchSource, seed: int = 0):
        self.source = source
        self.seed = seed

    @property
    def num_neurons(self) -> int:
        return int(self.source.num_neurons)

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        stimuli, responses = self.source.load()
        perm = np.random.default_rng(self.seed).permutation(len(responses))
        return stimuli, responses[perm]


class PixelResponses(NeuralBatchSource):
    """Control: another source's stimuli with their own pixels, average-pooled to
    ``size × size``, in place of its responses ("pixel-space similarity" for neural batches).

    Args:
        source: the neural source whose stimuli are used (its responses are not).
        channels: the stimuli are converted to this many channels first (grey ↔ RGB);
            ``num_neurons = channels · size²``.
        size: side after pooling.
    """

    def __init__(self, source: NeuralBatchSource, channels: int = 1, size: int = 8):
        if channels not in (1, 3) or size < 1:
            raise ValueError(f"PixelResponses: 'channels', 'size': expected 1 or 3 and >= 1, found {channels}, {size}")
        self.source = source
        self.channels, self.size = channels, size
        self.num_neurons = channels * size * size

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        from ..imageops import to_channels

        stimuli, _ = self.source.load()
        x = to_channels(torch.as_tensor(np.asarray(stimuli, dtype=np.float32)), self.channels)
        pooled = torch.nn.functional.adaptive_avg_pool2d(x, self.size).flatten(1)
        return stimuli, pooled.numpy().astype(np.float32)
