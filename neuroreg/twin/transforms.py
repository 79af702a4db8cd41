"""What the animal saw: maps any image batch to the twin's input space."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..imageops import cover_crop, to_channels


class StimulusTransform(nn.Module):
    """Grayscale → resize/crop → normalise, configured per recording.

    ``[batch, C_in, h, w]`` images in [0, 1] become ``[batch, channels, H, W]``
    normalised stimuli ``(x − mean) / std``:

    1. channels: RGB → luminance with :data:`~neuroreg.imageops.LUMINANCE_WEIGHTS`
       when ``channels=1``; gray is repeated when ``channels=3``;
    2. size: when ``(h, w) != size`` and ``resize`` is true, scale so the image covers
       ``size`` (bilinear, aspect kept) and centre-crop; when ``resize`` is false a
       mismatch is an error;
    3. normalisation: ``mean``/``std`` as configured, or — when left ``None`` —
       estimated from the recording's training images by :meth:`fit_statistics` (the
       TwinModule does this at fit time; the values are stored in the checkpoint).

    Args:
        size: ``[H, W]`` the twin's input resolution (the recording's images).
        channels: 1 (gray) or 3.
        mean, std: normalisation constants (``None``: from the recording).
        resize: resize/crop inputs of another resolution (else refuse them).

    Raises:
        ValueError: bad configuration, or (in ``forward``) inputs of another resolution
            with ``resize=False`` or of an unsupported channel count.
    """

    def __init__(
        self,
        size: tuple[int, int] = (32, 32),
        channels: int = 1,
        mean: float | None = None,
        std: float | None = None,
        resize: bool = True,
    ):
        super().__init__()
        size = tuple(int(s) for s in size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"StimulusTransform: 'size': expected [H, W] positive ints, found {size}")
        if channels not in (1, 3):
            raise ValueError(f"StimulusTransform: 'channels': expected 1 or 3, found {channels}")
        if std is not None and std <= 0:
            raise ValueError(f"StimulusTransform: 'std': expected > 0, found {std}")
        self.size = size
        self.channels = channels
        self.resize = resize
        self.register_buffer("mean", torch.tensor(0.0 if mean is None else float(mean)))
        self.register_buffer("std", torch.tensor(1.0 if std is None else float(std)))
        self.register_buffer("fitted", torch.tensor(mean is not None and std is not None))

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.size)

    def fit_statistics(self, images: np.ndarray) -> None:
        """Set ``mean``/``std`` from ``[N, C, H, W]`` images in [0, 1] (after the channel
        mapping), unless they were configured."""
        if bool(self.fitted):
            return
        with torch.no_grad():
            x = self._channels(torch.as_tensor(np.asarray(images, dtype=np.float32)))
            self.mean.fill_(float(x.mean()))
            self.std.fill_(max(float(x.std()), 1e-6))
            self.fitted.fill_(True)

    def _channels(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] not in (1, 3):
            raise ValueError(f"StimulusTransform: images: expected 1 or 3 channels, found {x.shape[1]}")
        return to_channels(x, self.channels)

    def _size(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        H, W = self.size
        if (h, w) != (H, W) and not self.resize:
            raise ValueError(
                f"StimulusTransform: images: expected resolution {H}x{W} (transform size), found {h}x{w}; "
                "set resize: true to resize and crop them"
            )
        return cover_crop(x, self.size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[batch, C_in, h, w]`` in [0, 1] → ``[batch, channels, H, W]`` normalised."""
        if x.ndim != 4:
            raise ValueError(f"StimulusTransform: images: expected [batch, C, H, W], found {tuple(x.shape)}")
        return (self._size(self._channels(x)) - self.mean) / self.std
