"""Feature taps: read intermediate activations of a backbone by module path."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


class LayerNotFoundError(KeyError):
    """A requested layer is not a module path of the backbone."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


class FeatureTaps:
    """Forward hooks that store the outputs of named submodules while capturing.

    Args:
        model: the backbone.
        layers: module paths as in ``model.named_modules()`` (e.g. ``layer1``,
            ``layer2.0.conv2``).

    Raises:
        LayerNotFoundError: naming the missing layer and listing the available ones.

    Example:
        >>> backbone = nn.Sequential()
        >>> backbone.add_module("layer1", nn.Conv2d(3, 8, 3, padding=1))
        >>> backbone.add_module("layer2", nn.Conv2d(8, 16, 3, stride=2, padding=1))
        >>> taps = FeatureTaps(backbone, ["layer1"])
        >>> with taps.capture() as feats:
        ...     _ = backbone(torch.randn(2, 3, 32, 32))
        >>> feats["layer1"].shape  # [batch, channels, h, w]
        torch.Size([2, 8, 32, 32])
    """

    def __init__(self, model: nn.Module, layers: list[str]):
        modules = dict(model.named_modules())
        for name in layers:
            if name not in modules or name == "":
                top = [n for n in modules if n and "." not in n]
                raise LayerNotFoundError(
                    f"layer {name!r}: not a module of {type(model).__name__}; expected a module path such as "
                    f"{top} (any path from named_modules())"
                )
        self.layers = list(dict.fromkeys(layers))
        self._store: dict[str, torch.Tensor] | None = None
        self._handles = [modules[name].register_forward_hook(self._hook(name)) for name in self.layers]

    def _hook(self, name: str):
        def hook(module, inputs, output):
            if self._store is not None:
                self._store[name] = output

        return hook

    @contextmanager
    def capture(self):
        """Collect ``{layer: output}`` for forward passes inside the block."""
        self._store = {}
        try:
            yield self._store
        finally:
            self._store = None

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
