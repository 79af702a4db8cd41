"""Backbones: image → feature vector ``[batch, out_features]``.

A backbone takes normalised images ``[batch, in_channels, H, W]`` and returns a
pooled feature vector; the classifier owns the linear head. Layers are addressed by
module path (``layer1``, ``layer2.0.conv2``) for feature taps.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """Two 3×3 conv–BN layers with a residual connection (He et al. 2016)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """A small ResNet for 32×32 inputs: 3×3 stem, stages ``layer1…layerN``, global pooling.

    Args:
        in_channels: image channels (1 for grey, 3 for RGB).
        widths: channels of each stage; stage ``i`` (from 2 on) halves the resolution.
        blocks: residual blocks per stage (one int for all, or one per stage).

    Example:
        >>> net = SmallResNet(in_channels=1, widths=[8, 16])
        >>> net(torch.randn(2, 1, 32, 32)).shape, net.layer2(net.layer1(net.stem(torch.randn(2, 1, 32, 32)))).shape
        (torch.Size([2, 16]), torch.Size([2, 16, 16, 16]))
    """

    def __init__(self, in_channels: int = 1, widths: list[int] = (16, 32, 64), blocks: int | list[int] = 1):
        super().__init__()
        widths = list(widths)
        if not widths or any(w < 1 for w in widths):
            raise ValueError(f"widths: expected a non-empty list of positive ints, found {widths}")
        blocks = [blocks] * len(widths) if isinstance(blocks, int) else list(blocks)
        if len(blocks) != len(widths) or any(b < 1 for b in blocks):
            raise ValueError(f"blocks: expected {len(widths)} positive ints (one per stage), found {blocks}")
        self.in_channels = in_channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        prev = widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks), start=1):
            stage = [BasicBlock(prev, w, stride=1 if i == 1 else 2)] + [BasicBlock(w, w) for _ in range(n - 1)]
            self.add_module(f"layer{i}", nn.Sequential(*stage))
            prev = w
        self.n_stages = len(widths)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_features = prev

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for i in range(1, self.n_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        return torch.flatten(self.pool(x), 1)


class ResNet18(nn.Module):
    """torchvision's ResNet-18 (random init), optionally with a CIFAR stem.

    With ``cifar_stem=True`` the 7×7 stride-2 convolution and max-pool are replaced
    by a 3×3 stride-1 convolution, the usual choice for 32×32 images. Layer names
    are torchvision's (``layer1`` … ``layer4``).
    """

    def __init__(self, in_channels: int = 3, cifar_stem: bool = True):
        super().__init__()
        from torchvision.models import resnet18

        net = resnet18(weights=None)
        if cifar_stem:
            net.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        net.fc = nn.Identity()
        self.in_channels = in_channels
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.avgpool = net.avgpool
        self.out_features = 512

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


class _PoolBlock(nn.Module):
    """conv → 2×2 max-pool → BN → GELU, then a residual conv → BN → GELU at the pooled size."""

    def __init__(self, in_channels: int, out_channels: int, pool: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False)
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.pool(self.conv1(x))))
        return x + self.act(self.bn2(self.conv2(x)))


class FastResNet(nn.Module):
    """A small, fast residual net for many-seed runs at full scale (large batches, short schedules).

    Design: a 2×2 stride-1 stem without padding (one pixel smaller, cheap at full
    resolution), then stages ``layer1…layerN``, each a convolution whose output is
    max-pooled 2×2 *before* batch norm and GELU (pooling first runs the normalisation
    and the residual convolution at a quarter of the pixels), followed by one residual
    3×3 conv–BN–GELU; global max pooling at the end. Most of the compute is at low
    resolution, so a step costs a fraction of ResNet-18's while keeping its accuracy on
    small images when trained with large batches and a short warm-up/decay schedule
    (e.g. SGD with Nesterov momentum, label smoothing, a one-cycle learning rate).

    Args:
        in_channels: image channels (1 for grey, 3 for RGB).
        widths: channels of the stem and of each stage, ``[stem, stage1, …]``.
        pool: per stage, whether it halves the resolution (default: all do; stages of
            small inputs that would reach 1×1 keep their size).

    Layer names for taps: ``stem``, ``layer1`` … ``layerN`` (and their parts, e.g.
    ``layer2.conv2``).

    Example:
        >>> net = FastResNet(in_channels=3, widths=[16, 32, 64, 64])
        >>> net(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 64])
    """

    def __init__(self, in_channels: int = 3, widths: list[int] = (32, 64, 256, 256), pool: list[bool] | None = None):
        super().__init__()
        widths = list(widths)
        if len(widths) < 2 or any(int(w) < 1 for w in widths):
            raise ValueError(f"widths: expected [stem, stage1, ...] positive ints (at least 2), found {widths}")
        n = len(widths) - 1
        pool = [True] * n if pool is None else [bool(p) for p in pool]
        if len(pool) != n:
            raise ValueError(f"pool: expected {n} flags (one per stage), found {len(pool)}")
        self.in_channels = in_channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 2, 1, 0, bias=False), nn.BatchNorm2d(widths[0]), nn.GELU())
        for i in range(n):
            self.add_module(f"layer{i + 1}", _PoolBlock(widths[i], widths[i + 1], pool[i]))
        self.n_stages = n
        self.out_features = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for i in range(1, self.n_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        return torch.amax(x, dim=(2, 3))
