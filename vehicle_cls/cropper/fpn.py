"""Feature pyramid on res2..res5 (detectron2 names fpn_lateral{l} / fpn_output{l}) plus the p6 max pool."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vehicle_cls.cropper.layers import Conv2d
from vehicle_cls.cropper.resnet import ResNet


class FPN(nn.Module):
    """``bottom_up`` ResNet + top-down pathway; returns p2..p6 (256 channels, strides 4..64)."""

    size_divisibility = 32

    def __init__(self, bottom_up: ResNet, in_channels=(256, 512, 1024, 2048), out_channels: int = 256):
        super().__init__()
        self.bottom_up = bottom_up
        self.levels = tuple(range(2, 2 + len(in_channels)))
        for level, ch in zip(self.levels, in_channels):
            self.add_module(f"fpn_lateral{level}", Conv2d(ch, out_channels, kernel_size=1, bias=True))
            self.add_module(
                f"fpn_output{level}", Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=True)
            )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.bottom_up(x)
        names = [f"res{level}" for level in self.levels]
        top = self.levels[-1]
        prev = getattr(self, f"fpn_lateral{top}")(feats[names[-1]])
        results = [getattr(self, f"fpn_output{top}")(prev)]
        for level, name in zip(reversed(self.levels[:-1]), reversed(names[:-1])):
            top_down = F.interpolate(prev, scale_factor=2.0, mode="nearest")
            prev = getattr(self, f"fpn_lateral{level}")(feats[name]) + top_down
            results.insert(0, getattr(self, f"fpn_output{level}")(prev))
        out = {f"p{level}": r for level, r in zip(self.levels, results)}
        out[f"p{top + 1}"] = F.max_pool2d(results[-1], kernel_size=1, stride=2, padding=0)
        return out
