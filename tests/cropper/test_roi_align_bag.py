"""``roi_align_bag`` against torchvision's ``roi_align`` (the independent oracle), edge cases included."""
from __future__ import annotations

import pytest
import torch
from torchvision.ops import roi_align

from vehicle_cls.cropper.roi_align_bag import roi_align_bag


def _rois(generator: torch.Generator, n: int, images: int, height: int, width: int, scale: float) -> torch.Tensor:
    """Random boxes in input pixels: mostly inside, some past the borders, some tiny or inverted."""
    h, w = height / scale, width / scale
    centre = torch.rand(n, 2, generator=generator) * torch.tensor([w * 1.2, h * 1.2]) - torch.tensor([w * 0.1, h * 0.1])
    size = torch.rand(n, 2, generator=generator) ** 2 * torch.tensor([w, h]) * 0.6
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=1)
    boxes[: n // 10, 2:] = boxes[: n // 10, :2] + 0.3  # sub-pixel boxes
    boxes[n // 10 : n // 10 + 3, 2:] = boxes[n // 10 : n // 10 + 3, :2] - 5.0  # inverted boxes
    index = torch.randint(0, images, (n, 1), generator=generator).float()
    return torch.cat([index, boxes], dim=1)


@pytest.mark.parametrize("output_size,scale,sampling_ratio,aligned", [
    (7, 1 / 4, 0, True),   # detectron2's box pooler on p2
    (7, 1 / 32, 0, True),  # ... on p5: few feature pixels, large boxes
    (14, 1 / 8, 0, True),  # the mask pooler
    (7, 1 / 16, 2, True),  # a fixed sampling ratio
    (5, 1 / 4, 0, False),  # legacy (not aligned) mode
])
def test_matches_torchvision_roi_align(output_size, scale, sampling_ratio, aligned):
    g = torch.Generator().manual_seed(output_size * 100 + sampling_ratio)
    features = torch.randn(2, 32, 37, 53, generator=g)
    rois = _rois(g, 300, 2, 37, 53, scale)
    expected = roi_align(features, rois, (output_size, output_size), scale, sampling_ratio, aligned)
    got = roi_align_bag(features.contiguous(memory_format=torch.channels_last), rois, output_size, scale,
                        sampling_ratio, aligned)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-6)
    assert (expected.abs().sum(dim=(1, 2, 3)) == 0).any(), "the cases include rois that pool nothing"


def test_contiguous_features_and_no_rois():
    g = torch.Generator().manual_seed(1)
    features = torch.randn(1, 8, 20, 20, generator=g)
    rois = _rois(g, 40, 1, 20, 20, 1 / 4)
    torch.testing.assert_close(roi_align_bag(features, rois, 7, 1 / 4),
                               roi_align(features, rois, (7, 7), 1 / 4, 0, True), rtol=0, atol=2e-6)
    assert roi_align_bag(features, rois[:0], 7, 1 / 4).shape == (0, 8, 7, 7)
