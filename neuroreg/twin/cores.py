"""Cores: image → feature map ``[batch, C, H', W']`` shared by all neurons.

A core exposes ``in_channels``, ``out_channels`` and ``regularizer() -> Tensor``
(a scalar penalty added to the twin's loss).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..io import load_checkpoint

_LAPLACE = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]])


def laplace_penalty(weight: torch.Tensor) -> torch.Tensor:
    """Smoothness penalty of convolution filters.

    ``P = Σ_{o,i} ‖L * w_{o,i}‖² / Σ ‖w‖²`` with ``L`` the 3×3 discrete Laplacian
    (zero padding) and ``w_{o,i}`` the ``[kh, kw]`` filter from input channel ``i`` to
    output channel ``o``. Normalising by the filters' energy makes the penalty
    scale-free: it measures roughness, not size (neuralpredictors' ``LaplaceL2norm``).

    Args:
        weight: ``[out, in, kh, kw]`` convolution weights.

    Returns:
        scalar tensor >= 0 (0 for a constant-free, perfectly smooth filter set is not
        reachable; smoother filters give smaller values).

    Example:
        >>> w = torch.randn(4, 1, 5, 5)
        >>> laplace_penalty(w) > laplace_penalty(torch.ones(4, 1, 5, 5))
        tensor(True)
    """
    o, i, kh, kw = weight.shape
    kernel = _LAPLACE.to(weight).view(1, 1, 3, 3)
    lap = F.conv2d(weight.reshape(o * i, 1, kh, kw), kernel, padding=1)
    return lap.pow(2).sum() / weight.pow(2).sum().clamp_min(1e-12)


def group_sparsity_penalty(weight: torch.Tensor) -> torch.Tensor:
    """Group-lasso penalty over the spatial filters of a convolution.

    ``P = Σ_{o,i} sqrt(Σ_{x,y} w_{o,i,x,y}²)``: each input→output filter is a group,
    so whole connections between feature channels are driven to zero (Klindt et al. 2017).

    Args:
        weight: ``[out, in, kh, kw]`` convolution weights.

    Returns:
        scalar tensor >= 0.
    """
    return weight.pow(2).sum(dim=(2, 3)).clamp_min(1e-12).sqrt().sum()


class Stacked2dCore(nn.Module):
    """Stacked convolutional core: ``layers`` × (conv → batch norm → ELU).

    The first layer uses ``input_kernel``, the others ``hidden_kernel``; all keep the
    spatial size (``same`` padding) unless ``pad_input=False`` for the first layer.
    With ``skip = s > 0`` layer ``l`` reads the concatenated outputs of the previous
    ``s`` layers (a dense-net-like skip connection). The output is the concatenation
    of the last ``final_layers`` layers' outputs (default 1: the last layer).

    Regulariser: ``gamma_input · laplace_penalty(W_1) + gamma_hidden ·
    Σ_{l>1} group_sparsity_penalty(W_l) / (number of hidden layers)``.

    Args:
        in_channels: channels of the input image (1 for grayscale).
        hidden_channels: channels of every layer (an int, or a list of length ``layers``).
        input_kernel: first-layer kernel size (odd).
        hidden_kernel: kernel size of the other layers (odd).
        layers: number of conv layers (>= 1).
        skip: number of previous layers each hidden layer reads (0: only the previous one).
        final_layers: how many of the last layers form the output.
        gamma_input: weight of the Laplace smoothness penalty on the first layer.
        gamma_hidden: weight of the group-sparsity penalty on the hidden layers.
        pad_input: ``same`` padding for the first layer (else ``valid``).
        batch_norm: use batch normalisation after each conv.
        final_nonlinearity: apply ELU after the last layer too.

    Shapes: ``[batch, in_channels, H, W]`` → ``[batch, out_channels, H', W']``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        hidden_channels: int | list[int] = 32,
        input_kernel: int = 9,
        hidden_kernel: int = 7,
        layers: int = 3,
        skip: int = 0,
        final_layers: int = 1,
        gamma_input: float = 0.0,
        gamma_hidden: float = 0.0,
        pad_input: bool = True,
        batch_norm: bool = True,
        final_nonlinearity: bool = True,
    ):
        super().__init__()
        if layers < 1:
            raise ValueError(f"Stacked2dCore: 'layers': expected >= 1, found {layers}")
        channels = [hidden_channels] * layers if isinstance(hidden_channels, int) else list(hidden_channels)
        if len(channels) != layers or min(channels) < 1:
            raise ValueError(f"Stacked2dCore: 'hidden_channels': expected an int or {layers} positive ints, found {hidden_channels}")
        for name, k in (("input_kernel", input_kernel), ("hidden_kernel", hidden_kernel)):
            if k < 1 or k % 2 == 0:
                raise ValueError(f"Stacked2dCore: '{name}': expected an odd size >= 1, found {k}")
        if not 1 <= final_layers <= layers:
            raise ValueError(f"Stacked2dCore: 'final_layers': expected 1..{layers}, found {final_layers}")
        if skip < 0:
            raise ValueError(f"Stacked2dCore: 'skip': expected >= 0, found {skip}")
        self.in_channels = in_channels
        self.skip = skip
        self.final_layers = final_layers
        self.gamma_input = gamma_input
        self.gamma_hidden = gamma_hidden
        self.final_nonlinearity = final_nonlinearity
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i in range(layers):
            if i == 0:
                c_in, k, pad = in_channels, input_kernel, input_kernel // 2 if pad_input else 0
            else:
                reads = channels[max(0, i - skip) : i] if skip > 0 else [channels[i - 1]]
                c_in, k, pad = sum(reads), hidden_kernel, hidden_kernel // 2
            self.convs.append(nn.Conv2d(c_in, channels[i], k, padding=pad, bias=not batch_norm))
            self.norms.append(nn.BatchNorm2d(channels[i]) if batch_norm else nn.Identity())
        self.out_channels = sum(channels[-final_layers:])
        for conv in self.convs:
            nn.init.xavier_normal_(conv.weight)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[batch, in_channels, H, W]`` → ``[batch, out_channels, H', W']``."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"Stacked2dCore: input: expected [batch, {self.in_channels}, H, W], found {tuple(x.shape)}")
        outputs: list[torch.Tensor] = []
        last = len(self.convs) - 1
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            if i == 0:
                inp = x
            elif self.skip > 0:
                inp = torch.cat(outputs[max(0, i - self.skip) : i], dim=1)
            else:
                inp = outputs[-1]
            y = norm(conv(inp))
            if i < last or self.final_nonlinearity:
                y = F.elu(y)
            outputs.append(y)
        return torch.cat(outputs[-self.final_layers :], dim=1)

    def regularizer(self) -> torch.Tensor:
        """``gamma_input · Laplace(W_1) + gamma_hidden · mean_l GroupSparsity(W_l)``."""
        reg = self.gamma_input * laplace_penalty(self.convs[0].weight)
        hidden = self.convs[1:]
        if len(hidden) and self.gamma_hidden:
            reg = reg + self.gamma_hidden * sum(group_sparsity_penalty(c.weight) for c in hidden) / len(hidden)
        return reg


class TorchvisionCore(nn.Module):
    """A torchvision backbone truncated after a named layer, frozen or fine-tuned.

    Weights are randomly initialised (nothing is downloaded); pass ``weights_path``
    to load a local ``state_dict`` (``.pth``/``.pt``, keys of the full torchvision
    model; keys of removed layers are ignored). Grayscale input is repeated to the
    backbone's 3 channels when ``in_channels=1``.

    Args:
        architecture: a torchvision model builder name, e.g. ``resnet18``, ``vgg11``.
        layer: module path to truncate after (``layer2``, ``features.8``, ...), as in
            :func:`torchvision.models.feature_extraction.create_feature_extractor`.
        in_channels: 1 (repeated to 3) or 3.
        weights_path: optional local state_dict file.
        fine_tune: train the backbone (else it is frozen, in eval mode).
        batch_norm: add a BatchNorm2d on the output (helps readouts on frozen features).

    Shapes: ``[batch, in_channels, H, W]`` → ``[batch, out_channels, H', W']``.

    Raises:
        ValueError: unknown architecture or layer (names the valid ones).
        FileNotFoundError: ``weights_path`` does not exist.
    """

    def __init__(
        self,
        architecture: str = "resnet18",
        layer: str = "layer2",
        in_channels: int = 1,
        weights_path: str | None = None,
        fine_tune: bool = False,
        batch_norm: bool = True,
    ):
        super().__init__()
        import torchvision
        from torchvision.models.feature_extraction import (
            create_feature_extractor,
            get_graph_node_names,
        )

        if architecture not in torchvision.models.list_models(module=torchvision.models):
            raise ValueError(f"TorchvisionCore: 'architecture': expected a torchvision classification model name, found {architecture!r}")
        if in_channels not in (1, 3):
            raise ValueError(f"TorchvisionCore: 'in_channels': expected 1 or 3, found {in_channels}")
        model = torchvision.models.get_model(architecture, weights=None)
        if weights_path is not None:
            path = Path(weights_path)
            if not path.exists():
                raise FileNotFoundError(f"TorchvisionCore: 'weights_path': file not found: {path}")
            state = load_checkpoint(path)
            missing, _ = model.load_state_dict(state, strict=False)
            if len(missing) == len(model.state_dict()):
                raise ValueError(f"TorchvisionCore: {path}: no parameter of {architecture} found in the state_dict")
        nodes = get_graph_node_names(model)[1]
        if layer not in nodes and not any(n.startswith(layer + ".") for n in nodes):
            modules = [n for n in dict(model.named_modules()) if n and "." not in n]
            raise ValueError(f"TorchvisionCore: 'layer': {layer!r} is not a node of {architecture}; top-level modules are {modules}")
        self.backbone = create_feature_extractor(model, return_nodes={layer: "out"})
        self.in_channels = in_channels
        self.fine_tune = fine_tune
        if not fine_tune:
            for p in self.backbone.parameters():
                p.requires_grad_(False)
        with torch.no_grad():
            was = self.backbone.training
            self.backbone.eval()
            out = self.backbone(torch.zeros(1, 3, 64, 64))["out"]
            self.backbone.train(was)
        self.out_channels = int(out.shape[1])
        self.norm = nn.BatchNorm2d(self.out_channels) if batch_norm else nn.Identity()

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.fine_tune:
            self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"TorchvisionCore: input: expected [batch, {self.in_channels}, H, W], found {tuple(x.shape)}")
        if self.in_channels == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.norm(self.backbone(x)["out"])

    def regularizer(self) -> torch.Tensor:
        return torch.zeros((), device=self.norm.weight.device if hasattr(self.norm, "weight") else None)


def gabor_bank(orientations: int, frequencies, envelope_cycles: float, kernel_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Quadrature pairs of Gabor kernels on a grid of orientations × frequencies.

    Frequencies are in cycles per pixel (of the level the kernels are applied to); the
    envelope is isotropic with ``σ = envelope_cycles / f`` pixels. Each kernel has zero
    mean and unit L2 norm, so responses to a uniform image are zero and the channels
    have comparable scale.

    Returns:
        ``(even, odd)``, each ``[orientations · len(frequencies), 1, k, k]`` float32
        (frequency-major: all orientations of the first frequency, then the next).
    """
    from ..gabor import GaborParams, gabor_quadrature_pair

    freqs = np.asarray(list(frequencies), dtype=np.float64)
    if orientations < 1 or freqs.size < 1 or freqs.min() <= 0 or freqs.max() > 0.5:
        raise ValueError(
            f"gabor_bank: expected orientations >= 1 and frequencies in (0, 0.5] cycles/pixel, found {orientations} and {freqs.tolist()}"
        )
    theta = np.tile(np.arange(orientations) * np.pi / orientations, freqs.size)
    sf = np.repeat(freqs, orientations)
    n = theta.size
    params = GaborParams(theta, sf, np.zeros(n), np.full(n, envelope_cycles), np.full(n, envelope_cycles))
    pair = gabor_quadrature_pair(params, kernel_size, pixels_per_degree=1.0)
    out = []
    for k in pair:
        k = k - k.mean(axis=(1, 2), keepdims=True)
        k = k / np.linalg.norm(k.reshape(n, -1), axis=1)[:, None, None]
        out.append(torch.as_tensor(k, dtype=torch.float32).unsqueeze(1))
    return out[0], out[1]


class GaborCore(nn.Module):
    """A fixed Gabor filter bank (simple and complex cells) followed by learned layers.

    Trained from scratch on a few thousand images, a convolutional core has too little
    data to learn good early filters; V1-like ones are a good prior. Level ``l`` of an
    image pyramid (``2^l``-fold average pooling of the input) is filtered with
    :func:`gabor_bank` quadrature pairs ``(e, o)``; per filter three channels come out:
    the rectified even responses ``relu(e)``, ``relu(−e)`` (simple cells, both signs)
    and the energy ``sqrt(e² + o²)`` (complex cells). Every level is brought to
    ``out_size`` (area pooling or bilinear upsampling), batch-normalised, and read by
    ``layers`` learned blocks (a 1x1 conv then ``hidden_kernel`` convs, each conv →
    batch norm → ELU). The output is the concatenation of the normalised Gabor
    channels and the last learned layer, so a readout can use both.

    With ``input_pool = p > 1`` the input is first block-averaged ``p``-fold (the twin can
    take full-resolution images and filter them at a lower one). With
    ``learn_gabor=True`` the bank is a trainable parameter initialised with the Gabor
    kernels (else a fixed buffer).

    Regulariser: ``gamma_hidden · mean_l group_sparsity_penalty(W_l)`` over the learned
    convs.

    Args:
        in_channels: 1 (gray) or 3 (RGB, averaged to luminance by the bank).
        orientations: orientations in ``[0, π)``.
        frequencies: cycles/pixel at each pyramid level.
        envelope_cycles: envelope σ in carrier cycles.
        kernel_size: Gabor kernel side (odd).
        levels: pyramid levels (1: the input resolution only).
        out_size: ``[H, W]`` of the output map.
        hidden_channels: channels of the learned layers (0: no learned layers).
        layers: learned layers (the first is 1x1).
        hidden_kernel: kernel size of the learned layers after the first (odd).
        gamma_hidden: group-sparsity weight.
        learn_gabor: train the bank.
        input_pool: block-average the input by this factor first (1: not).

    Shapes: ``[batch, in_channels, H, W]`` → ``[batch, out_channels, *out_size]``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        orientations: int = 8,
        frequencies: list[float] = (0.25, 0.125),
        envelope_cycles: float = 0.5,
        kernel_size: int = 11,
        levels: int = 3,
        out_size: list[int] = (14, 14),
        hidden_channels: int = 48,
        layers: int = 2,
        hidden_kernel: int = 3,
        gamma_hidden: float = 0.0,
        learn_gabor: bool = False,
        input_pool: int = 1,
    ):
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"GaborCore: 'in_channels': expected 1 or 3, found {in_channels}")
        if input_pool < 1:
            raise ValueError(f"GaborCore: 'input_pool': expected an int >= 1, found {input_pool}")
        self.input_pool = int(input_pool)
        if kernel_size < 1 or kernel_size % 2 == 0 or hidden_kernel < 1 or hidden_kernel % 2 == 0:
            raise ValueError(f"GaborCore: 'kernel_size', 'hidden_kernel': expected odd sizes, found {kernel_size}, {hidden_kernel}")
        if levels < 1 or layers < 0 or hidden_channels < 0 or (layers > 0) != (hidden_channels > 0):
            raise ValueError(
                f"GaborCore: expected levels >= 1 and both or neither of layers/hidden_channels > 0, "
                f"found levels={levels}, layers={layers}, hidden_channels={hidden_channels}"
            )
        self.in_channels = in_channels
        self.levels = levels
        self.out_size = tuple(int(s) for s in out_size)
        self.gamma_hidden = gamma_hidden
        even, odd = gabor_bank(orientations, frequencies, envelope_cycles, kernel_size)
        bank = torch.cat([even, odd])
        if learn_gabor:
            self.bank = nn.Parameter(bank)
        else:
            self.register_buffer("bank", bank)
        self.n_filters = even.shape[0]
        gabor_channels = 3 * self.n_filters * levels
        self.gabor_norm = nn.BatchNorm2d(gabor_channels)
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        c_in = gabor_channels
        for i in range(layers):
            k = 1 if i == 0 else hidden_kernel
            self.convs.append(nn.Conv2d(c_in, hidden_channels, k, padding=k // 2, bias=False))
            self.norms.append(nn.BatchNorm2d(hidden_channels))
            c_in = hidden_channels
        self.out_channels = gabor_channels + (hidden_channels if layers else 0)

    def gabor_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[batch, 3 · filters · levels, *out_size]`` simple and complex channels (before batch norm)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"GaborCore: input: expected [batch, {self.in_channels}, H, W], found {tuple(x.shape)}")
        if self.in_channels == 3:
            x = x.mean(dim=1, keepdim=True)
        if self.input_pool > 1:
            x = F.avg_pool2d(x, self.input_pool)
        pad = self.bank.shape[-1] // 2
        out = []
        for level in range(self.levels):
            xl = F.avg_pool2d(x, 2**level) if level else x
            resp = F.conv2d(F.pad(xl, (pad,) * 4, mode="reflect" if min(xl.shape[2:]) > pad else "constant"), self.bank)
            even, odd = resp[:, : self.n_filters], resp[:, self.n_filters :]
            feats = torch.cat([F.relu(even), F.relu(-even), (even.pow(2) + odd.pow(2) + 1e-6).sqrt()], dim=1)
            if tuple(feats.shape[2:]) != self.out_size:
                if feats.shape[2] >= self.out_size[0]:
                    feats = F.adaptive_avg_pool2d(feats, self.out_size)
                else:
                    feats = F.interpolate(feats, size=self.out_size, mode="bilinear", align_corners=False)
            out.append(feats)
        return torch.cat(out, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.gabor_norm(self.gabor_features(x))
        if not len(self.convs):
            return g
        y = g
        for conv, norm in zip(self.convs, self.norms):
            y = F.elu(norm(conv(y)))
        return torch.cat([g, y], dim=1)

    def regularizer(self) -> torch.Tensor:
        reg = torch.zeros((), device=self.gabor_norm.weight.device)
        if self.gamma_hidden and len(self.convs):
            reg = reg + self.gamma_hidden * sum(group_sparsity_penalty(c.weight) for c in self.convs) / len(self.convs)
        return reg
