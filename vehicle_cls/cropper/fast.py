"""The detector's inference copy for the fast path: detectron2's frozen norms folded into the convs,
channels_last, on the CPU one weighted gather for ROIAlign and the box head's fc1 as a convolution,
and (opt-in) parts in bf16/fp16.

fp32 without ``prepare_detector`` stays the exact reference. The prepared copy serves inference only;
the original module (what ``save`` writes) is left untouched.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vehicle_cls.cropper.layers import Conv2d, FrozenBatchNorm2d
from vehicle_cls.cropper.rcnn import GeneralizedRCNN
from vehicle_cls.cropper.roi_heads import FastRCNNConvFCHead
from vehicle_cls.runtime import precision_dtype


def fold_frozen_norms(module: nn.Module) -> int:
    """Fold every detectron2-style ``Conv2d.norm`` (FrozenBatchNorm2d) into its conv, in place; returns
    how many were folded. The arithmetic is done in float64, so the folded fp32 weights differ from
    the unfolded convolution + norm only by rounding."""
    folded = 0
    for conv in module.modules():
        norm = getattr(conv, "norm", None)
        if not isinstance(conv, Conv2d) or not isinstance(norm, FrozenBatchNorm2d):
            continue
        scale = norm.weight.double() / torch.sqrt(norm.running_var.double() + norm.eps)
        bias = norm.bias.double() - norm.running_mean.double() * scale
        if conv.bias is not None:
            bias = bias + conv.bias.double() * scale
        weight = conv.weight.double() * scale.view(-1, 1, 1, 1)
        conv.weight = nn.Parameter(weight.to(conv.weight.dtype), requires_grad=False)
        conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)
        conv.norm = None
        folded += 1
    return folded


#: detector parts that run in bf16/fp16 by default on the fast path: none. Measured on real photos
#: with calibrated R101-FPN weights (benchmarks/README.md): the backbone or the RPN head in bf16 moves
#: detections (0.3 % rounding per layer grows to 11-14 % at the FPN outputs; changed proposals move
#: boxes, IoU down to 0); even the box head alone in bf16 changed the chosen crop on 1 of 24 photos
#: (scores move by up to 0.02 around the 0.5 threshold) for ~4 % of the time. So the default fast
#: detector keeps fp32 arithmetic (folded norms, channels_last, gathered ROIAlign); low-precision
#: parts are an explicit opt-in (``Cropper.set_precision("bf16", parts=DETECTOR_PARTS)``).
DETECTOR_LOW_PRECISION_PARTS: tuple[str, ...] = ()
DETECTOR_PARTS = ("backbone", "rpn_head", "box_head", "mask_head")


def prepare_detector(
    model: GeneralizedRCNN,
    device: torch.device | str,
    precision: str,
    parts: tuple[str, ...] = DETECTOR_LOW_PRECISION_PARTS,
) -> GeneralizedRCNN:
    """An inference copy of our GeneralizedRCNN for ``precision``: FrozenBN folded into the convs,
    everything channels_last, ``parts`` in the precision's dtype, the rest fp32; anchors and the box
    predictor (class logits and box deltas) always fp32. On the CPU the ROI poolers use one weighted
    gather (``roi_align_bag``) and the box head's fc1 runs as a 7x7 conv (oneDNN), both the same sums."""
    unknown = set(parts) - set(DETECTOR_PARTS)
    if unknown:
        raise ValueError(f"unknown detector part(s) {sorted(unknown)}; known: {list(DETECTOR_PARTS)}")
    dtype = precision_dtype(precision)
    fast = copy.deepcopy(model).eval()
    fold_frozen_norms(fast)
    device = torch.device(device)
    fast.to(device)
    heads: Any = fast.roi_heads  # its box head is swapped for ConvFCBoxHead below
    if device.type == "cpu":
        heads.box_head = ConvFCBoxHead(heads.box_head, heads.box_pooler.output_size)
        for pooler in (heads.box_pooler, getattr(heads, "mask_pooler", None)):
            if pooler is not None:
                pooler.kernel = "embedding_bag"
    if dtype is not None:  # anchors, pixel mean and the box predictor stay fp32
        modules: dict[str, nn.Module | None] = {
            "backbone": fast.backbone,
            "rpn_head": fast.proposal_generator.rpn_head,
            "box_head": heads.box_head,
            "mask_head": getattr(heads, "mask_head", None),
        }
        for name in parts:
            part = modules[name]
            if part is not None:
                part.to(dtype)
    fast.to(memory_format=torch.channels_last)
    for p in fast.parameters():
        p.requires_grad_(False)
    return fast


class ConvFCBoxHead(nn.Module):
    """detectron2's FC box head with fc1 as a ``size``x``size`` convolution over the pooled (R, C, size, size)
    features: the same weights and sum (flatten's C-major order is the conv weight's layout), but on the
    CPU oneDNN's conv takes half the time of the (R, C*size*size) matmul and reads channels_last as it is."""

    def __init__(self, head: FastRCNNConvFCHead, size: int):
        super().__init__()
        out_dim, in_dim = head.fc1.weight.shape
        channels = in_dim // (size * size)
        self.fc1 = nn.Conv2d(channels, out_dim, kernel_size=size)
        self.fc1.weight = nn.Parameter(head.fc1.weight.detach().view(out_dim, channels, size, size).clone())
        self.fc1.bias = nn.Parameter(head.fc1.bias.detach().clone())
        self.fc1.to(head.fc1.weight.device, head.fc1.weight.dtype)
        self.fc2 = head.fc2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc1(x.to(self.fc1.weight.dtype)))
        return F.relu(self.fc2(torch.flatten(x, start_dim=1)))
