"""ResNet-101 bottom-up network as in detectron2: FrozenBN, stride on the 1x1 conv (STRIDE_IN_1X1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vehicle_cls.cropper.layers import Conv2d, FrozenBatchNorm2d

# (name, number of blocks, bottleneck width, output channels, first stride)
R101_STAGES = (("res2", 3, 64, 256, 1), ("res3", 4, 128, 512, 2), ("res4", 23, 256, 1024, 2), ("res5", 3, 512, 2048, 2))


class BasicStem(nn.Module):
    """7x7/2 conv + FrozenBN + ReLU + 3x3/2 max pool."""

    def __init__(self, in_channels: int = 3, out_channels: int = 64):
        super().__init__()
        self.conv1 = Conv2d(
            in_channels,
            out_channels,
            kernel_size=7,
            stride=2,
            padding=3,
            bias=False,
            norm=FrozenBatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu_(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class BottleneckBlock(nn.Module):
    """1x1 -> 3x3 -> 1x1 bottleneck; with ``stride_in_1x1`` the stride sits on conv1 (MSRA weights)."""

    def __init__(
        self, in_channels: int, out_channels: int, bottleneck_channels: int, stride: int = 1, stride_in_1x1: bool = True
    ):
        super().__init__()
        self.shortcut: Conv2d | None = None
        if in_channels != out_channels:
            self.shortcut = Conv2d(
                in_channels,
                out_channels,
                kernel_size=1,
                stride=stride,
                bias=False,
                norm=FrozenBatchNorm2d(out_channels),
            )
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv2d(
            in_channels,
            bottleneck_channels,
            kernel_size=1,
            stride=stride_1x1,
            bias=False,
            norm=FrozenBatchNorm2d(bottleneck_channels),
        )
        self.conv2 = Conv2d(
            bottleneck_channels,
            bottleneck_channels,
            kernel_size=3,
            stride=stride_3x3,
            padding=1,
            bias=False,
            norm=FrozenBatchNorm2d(bottleneck_channels),
        )
        self.conv3 = Conv2d(
            bottleneck_channels, out_channels, kernel_size=1, bias=False, norm=FrozenBatchNorm2d(out_channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        out += shortcut
        return F.relu_(out)


class ResNet(nn.Module):
    """Stem + res2..res5; ``forward`` returns the four stage outputs by name."""

    def __init__(self, stages=R101_STAGES, stem_out: int = 64, stride_in_1x1: bool = True):
        super().__init__()
        self.stem = BasicStem(3, stem_out)
        self.stage_names = tuple(s[0] for s in stages)
        in_ch = stem_out
        for name, blocks, width, out_ch, stride in stages:
            layers = []
            for i in range(blocks):
                layers.append(BottleneckBlock(in_ch, out_ch, width, stride if i == 0 else 1, stride_in_1x1))
                in_ch = out_ch
            self.add_module(name, nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(x)
        outputs = {}
        for name in self.stage_names:
            x = getattr(self, name)(x)
            outputs[name] = x
        return outputs
