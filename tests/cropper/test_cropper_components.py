"""The R101-FPN building blocks against hand computations and torchvision / torch references."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.ops import roi_align

from vehicle_cls.cropper.boxes import SCALE_CLAMP, apply_deltas, clip_boxes, nonempty
from vehicle_cls.cropper.layers import FrozenBatchNorm2d
from vehicle_cls.cropper.postprocess import paste_masks, postprocess
from vehicle_cls.cropper.resnet import BottleneckBlock
from vehicle_cls.cropper.roi_heads import ROIPooler, assign_levels
from vehicle_cls.cropper.rpn import AnchorGenerator, cell_anchors
from vehicle_cls.cropper.transforms import (
    PIXEL_MEAN_BGR,
    batch_images,
    preprocess_image,
    resized_shape,
)


@pytest.mark.parametrize(
    "hw, expected",
    [
        ((480, 640), (800, 1067)),  # 640 * 800/480 = 1066.67 -> int(1067.17) = 1067 (floor would give 1066)
        ((100, 100), (800, 800)),
        ((100, 1000), (133, 1333)),  # capped: 800 * 1333/8000 = 133.3 -> 133
        ((3, 5), (800, 1333)),  # capped: 800 * 1333/1333.33 = 799.8 -> int(800.3) = 800, floor gives 799
        ((640, 480), (1067, 800)),
    ],
)
def test_resize_sizes_use_int_plus_half(hw, expected):
    assert resized_shape(*hw, 800, 1333) == expected


def test_resize_smaller_test_size():
    assert resized_shape(480, 640, 512, 853) == (512, 683)  # 640 * 512/480 = 682.67 -> 683


def test_preprocess_is_bgr_pil_bilinear():
    rgb = np.zeros((4, 6, 3), dtype=np.uint8)
    rgb[..., 0] = 200  # red
    rgb[..., 2] = 10  # blue
    t = preprocess_image(rgb, 8, 100)  # 4x6 -> 8x12
    assert t.shape == (3, 8, 12) and t.dtype == torch.float32
    assert torch.all(t[0] == 10) and torch.all(t[1] == 0) and torch.all(t[2] == 200)  # B, G, R
    # shrinking is antialiased (PIL's triangle filter widened to 2 input pixels when halving):
    # a stripe at column 2 of 8 -> output 0 (centre 1) gets 200 * .25 / 1.75 = 28.6, output 1
    # (centre 3) 200 * .75 / 2 = 75; F.interpolate would give [0, 100, 0, 0]
    rgb = np.zeros((4, 8, 3), dtype=np.uint8)
    rgb[:, 2] = 200
    t = preprocess_image(rgb, 2, 100)  # 4x8 -> 2x4
    row = t[0, 0].tolist()
    assert row[1:] == [75.0, 0.0, 0.0] and abs(row[0] - 28.6) <= 1


def test_batch_images_subtracts_mean_then_pads_with_zero():
    a = torch.full((3, 33, 40), 100.0)
    b = torch.full((3, 20, 70), 100.0)
    mean = torch.tensor(PIXEL_MEAN_BGR).view(3, 1, 1)
    batch, sizes = batch_images([a, b], mean, 32)
    assert batch.shape == (2, 3, 64, 96) and sizes == [(33, 40), (20, 70)]
    assert batch[0, 0, 0, 0] == pytest.approx(100 - 103.53) and batch[0, 2, 32, 39] == pytest.approx(100 - 123.675)
    assert torch.all(batch[0, :, 33:] == 0) and torch.all(batch[0, :, :, 40:] == 0)
    assert torch.all(batch[1, :, 20:] == 0) and torch.all(batch[1, :, :, 70:] == 0)


def test_frozen_bn_matches_formula_and_batch_norm():
    bn = FrozenBatchNorm2d(4)
    g = torch.Generator().manual_seed(0)
    for name in ("weight", "bias", "running_mean"):
        getattr(bn, name).copy_(torch.randn(4, generator=g))
    bn.running_var.copy_(torch.rand(4, generator=g) + 0.5)
    x = torch.randn(2, 4, 3, 5, generator=g)
    v = lambda t: t.view(1, -1, 1, 1)
    expected = (x - v(bn.running_mean)) / torch.sqrt(v(bn.running_var) + 1e-5) * v(bn.weight) + v(bn.bias)
    torch.testing.assert_close(bn(x), expected, rtol=1e-5, atol=1e-5)
    ref = torch.nn.BatchNorm2d(4, eps=1e-5).eval()
    ref.load_state_dict({**bn.state_dict(), "num_batches_tracked": torch.tensor(0)})
    torch.testing.assert_close(bn(x), ref(x))
    assert sorted(bn.state_dict()) == ["bias", "running_mean", "running_var", "weight"]


def test_bottleneck_stride_in_1x1():
    block = BottleneckBlock(256, 512, 128, stride=2, stride_in_1x1=True)
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1) and block.shortcut.stride == (2, 2)
    assert block.conv1.bias is None and block.conv2.padding == (1, 1)
    assert block(torch.zeros(1, 256, 16, 12)).shape == (1, 512, 8, 6)
    other = BottleneckBlock(256, 512, 128, stride=2, stride_in_1x1=False)
    assert other.conv1.stride == (1, 1) and other.conv2.stride == (2, 2)
    assert BottleneckBlock(256, 256, 64).shortcut is None


def test_cell_anchors_are_not_rounded():
    a = cell_anchors(32)
    # ratio 0.5: w = sqrt(32^2 / 0.5) = 45.2548, h = 22.6274; ratio 2: w = 22.6274, h = 45.2548
    w = math.sqrt(1024 / 0.5)
    expected = torch.tensor([[-w / 2, -w / 4, w / 2, w / 4], [-16.0, -16.0, 16.0, 16.0], [-w / 4, -w / 2, w / 4, w / 2]])
    torch.testing.assert_close(a, expected)
    assert a[0, 0].item() != round(a[0, 0].item())  # torchvision would round -22.63 to -23


def test_grid_anchors_order_and_fixed_strides():
    gen = AnchorGenerator()
    feats = [torch.zeros(1, 1, 2, 3)] * 5
    anchors = gen(feats)
    assert [len(a) for a in anchors] == [18] * 5
    a = anchors[1]  # stride 8, size 64
    # (H, W, A) order: index (y * W + x) * A + r, centre (8x, 8y)
    y, x, r = 1, 2, 1  # ratio 1.0 -> square of side 64
    assert a[(y * 3 + x) * 3 + r].tolist() == [16.0 - 32, 8.0 - 32, 16.0 + 32, 8.0 + 32]
    # p6 keeps its stride of 64 whatever the padded image size
    assert anchors[4][(1 * 3 + 1) * 3 + 1].tolist() == [64.0 - 256, 64.0 - 256, 64.0 + 256, 64.0 + 256]


def test_apply_deltas_hand_values():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    # centre (5, 10), w 10, h 20; dx 0.1 -> +1, dy 0.2 -> +4, dw log 2 -> w 20, dh 0 -> h 20
    out = apply_deltas(torch.tensor([[0.1, 0.2, math.log(2.0), 0.0]]), boxes)
    torch.testing.assert_close(out, torch.tensor([[-4.0, 4.0, 16.0, 24.0]]))
    # box-head weights (10, 10, 5, 5): the same box needs deltas x10 / x5
    out = apply_deltas(torch.tensor([[1.0, 2.0, 5 * math.log(2.0), 0.0]]), boxes, (10.0, 10.0, 5.0, 5.0))
    torch.testing.assert_close(out, torch.tensor([[-4.0, 4.0, 16.0, 24.0]]))
    # dw clamped at log(1000/16): width 10 * 62.5 = 625
    out = apply_deltas(torch.tensor([[0.0, 0.0, 10.0, 0.0]]), boxes)
    assert SCALE_CLAMP == pytest.approx(math.log(62.5))
    torch.testing.assert_close(out[0, 2] - out[0, 0], torch.tensor(625.0))
    # class-specific: two classes decoded against the same box
    two = apply_deltas(torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.1, 0.2, math.log(2.0), 0.0]]), boxes)
    torch.testing.assert_close(two, torch.tensor([[0.0, 0.0, 10.0, 20.0, -4.0, 4.0, 16.0, 24.0]]))


def test_clip_and_nonempty():
    b = torch.tensor([[-5.0, -1.0, 50.0, 30.0], [10.0, 10.0, 10.0, 15.0]])
    c = clip_boxes(b, 20, 40)
    assert c.tolist() == [[0.0, 0.0, 40.0, 20.0], [10.0, 10.0, 10.0, 15.0]]
    assert nonempty(c).tolist() == [True, False]


def test_level_assignment_detectron2_formula():
    def box(side):
        return [0.0, 0.0, float(side), float(side)]

    boxes = torch.tensor([box(224), box(223), box(112), box(111), box(448), box(10), box(2000)])
    # floor(4 + log2(side/224 + 1e-8)) clamped to [2, 5], minus 2
    assert assign_levels(boxes).tolist() == [2, 1, 1, 0, 3, 0, 3]


def test_roi_pooler_is_roi_align_v2_on_the_assigned_level():
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(2, 3, 64 // s, 64 // s, generator=g) for s in (1, 2, 4, 8)]  # strides 4..32 of 256 px
    pooler = ROIPooler(7, strides=(4, 8, 16, 32))
    boxes = [torch.tensor([[10.0, 10.0, 40.0, 50.0], [0.0, 0.0, 250.0, 240.0]]), torch.tensor([[5.5, 7.25, 120.0, 130.0]])]
    out = pooler(feats, boxes)
    # by hand: sqrt(area) 34.6 -> level 2 (p2, scale 1/4); 244.9 -> level 4 (p4); 118.6 -> level 3 (p3)
    expected = [
        roi_align(feats[0], torch.tensor([[0.0, 10, 10, 40, 50]]), (7, 7), 0.25, 0, True),
        roi_align(feats[2], torch.tensor([[0.0, 0, 0, 250, 240]]), (7, 7), 1 / 16, 0, True),
        roi_align(feats[1], torch.tensor([[1.0, 5.5, 7.25, 120, 130]]), (7, 7), 0.125, 0, True),
    ]
    torch.testing.assert_close(out, torch.cat(expected))
    unaligned = roi_align(feats[0], torch.tensor([[0.0, 10, 10, 40, 50]]), (7, 7), 0.25, 0, False)
    assert not torch.allclose(out[:1], unaligned)  # aligned=True (ROIAlignV2) matters


def test_paste_full_mask_covers_box_pixels():
    probs = torch.ones(1, 28, 28)
    m = paste_masks(probs, torch.tensor([[2.0, 3.0, 6.0, 9.0]]), 12, 10)
    expected = torch.zeros(12, 10, dtype=torch.bool)
    expected[3:9, 2:6] = True  # pixel centres (x + .5, y + .5) inside the box
    assert torch.equal(m[0], expected)
    # a box with fractional corners (1.6, 0, 4.4, 5): centres 2.5 and 3.5 are inside, 1.5 and 4.5 are not
    m = paste_masks(probs, torch.tensor([[1.6, 0.0, 4.4, 5.0]]), 6, 6)
    assert m[0, 0].tolist() == [False, False, True, True, False, False]


def test_paste_left_half_and_both_paths_agree():
    probs = torch.zeros(1, 28, 28)
    probs[0, :, :14] = 1.0  # left half of the box
    m = paste_masks(probs, torch.tensor([[0.0, 0.0, 8.0, 4.0]]), 4, 10)
    # the 0/1 edge sits at x = 4 (box width 8): centres 0.5..3.5 sample >= 0.5, 4.5 samples < 0.5
    assert m[0, 0].tolist() == [True, True, True, True] + [False] * 6
    g = torch.Generator().manual_seed(1)
    probs = torch.rand(6, 28, 28, generator=g)
    xy = torch.rand(6, 2, generator=g) * 40
    boxes = torch.cat([xy, xy + 5 + torch.rand(6, 2, generator=g) * 30], dim=1)
    a = paste_masks(probs, boxes, 50, 60, per_box=True)
    b = paste_masks(probs, boxes, 50, 60, per_box=False)
    assert torch.equal(a, b) and a.any()


def test_postprocess_scales_clips_and_drops_empty():
    result = {
        "boxes": torch.tensor([[10.0, 20.0, 30.0, 40.0], [90.0, 5.0, 120.0, 45.0], [100.0, 10.0, 110.0, 20.0]]),
        "scores": torch.tensor([0.9, 0.8, 0.7]),
        "classes": torch.tensor([2, 7, 5]),
    }
    # resized (50, 100) -> original (100, 150): x * 1.5, y * 2
    out = postprocess(result, (50, 100), (100, 150))
    torch.testing.assert_close(out["boxes"], torch.tensor([[15.0, 40.0, 45.0, 80.0], [135.0, 10.0, 150.0, 90.0]]))
    assert out["classes"].tolist() == [2, 7]  # the third box lies beyond the right edge: clipped to empty
    torch.testing.assert_close(out["scores"], torch.tensor([0.9, 0.8]))
