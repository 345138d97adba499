"""Inference-time copies of the models for the fast path: frozen norms folded into the convs, weights
cast to bf16/fp16 (not only autocast) and convolutions in channels_last.

fp32 stays the exact reference: for ``precision="fp32"`` nothing here is used. The prepared copies
serve inference only; the original modules (what ``save`` writes) are left untouched.
"""
from __future__ import annotations

import copy
import logging

import torch
import torch.nn.functional as F
from torch import nn

from vehicle_cls.runtime import AUTOCAST_DTYPES

logger = logging.getLogger(__name__)


def precision_dtype(precision: str) -> torch.dtype | None:
    """The weight dtype of ``precision`` ("fp32" -> None: keep the module as it is)."""
    if precision not in AUTOCAST_DTYPES:
        raise ValueError(f"precision must be one of {sorted(AUTOCAST_DTYPES)}, not {precision!r}")
    return AUTOCAST_DTYPES[precision]


def fold_frozen_norms(module: nn.Module) -> int:
    """Fold every detectron2-style ``Conv2d.norm`` (FrozenBatchNorm2d) into its conv, in place; returns
    how many were folded. The arithmetic is done in float64, so the folded fp32 weights differ from
    the unfolded convolution + norm only by rounding."""
    from vehicle_cls.cropper.layers import Conv2d, FrozenBatchNorm2d

    folded = 0
    for conv in module.modules():
        if not isinstance(conv, Conv2d) or not isinstance(conv.norm, FrozenBatchNorm2d):
            continue
        norm = conv.norm
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


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """``model`` (changed in place) with each eval-mode BatchNorm2d that directly follows a Conv2d folded
    into it (torch.fx); the model itself when it cannot be traced (then the norms simply stay)."""
    try:
        from torch.fx.experimental.optimization import fuse

        return fuse(model, inplace=True)
    except Exception as exc:  # an untraceable custom model: keep it unfused, it still runs
        logger.info("batch norms not folded (%s: %s)", type(exc).__name__, exc)
        return model


#: detector parts that run in bf16/fp16 by default on the fast path: none. Measured on real photos
#: with calibrated R101-FPN weights (benchmarks/README.md): the backbone or the RPN head in bf16 moves
#: detections (0.3 % rounding per layer grows to 11-14 % at the FPN outputs; changed proposals move
#: boxes, IoU down to 0); even the box head alone in bf16 changed the chosen crop on 1 of 24 photos
#: (scores move by up to 0.02 around the 0.5 threshold) for ~4 % of the time. So the default fast
#: detector keeps fp32 arithmetic (folded norms, channels_last, gathered ROIAlign); low-precision
#: parts are an explicit opt-in (``Cropper.set_precision("bf16", parts=DETECTOR_PARTS)``).
DETECTOR_LOW_PRECISION_PARTS: tuple[str, ...] = ()
DETECTOR_PARTS = ("backbone", "rpn_head", "box_head", "mask_head")


def prepare_detector(model: nn.Module, device: torch.device | str, precision: str,
                     parts: tuple[str, ...] = DETECTOR_LOW_PRECISION_PARTS) -> nn.Module:
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
    heads = fast.roi_heads
    if device.type == "cpu":
        heads.box_head = ConvFCBoxHead(heads.box_head, heads.box_pooler.output_size)
        for pooler in (heads.box_pooler, getattr(heads, "mask_pooler", None)):
            if pooler is not None:
                pooler.kernel = "embedding_bag"
    if dtype is not None:  # anchors, pixel mean and the box predictor stay fp32
        modules = {"backbone": fast.backbone, "rpn_head": fast.proposal_generator.rpn_head,
                   "box_head": heads.box_head, "mask_head": getattr(heads, "mask_head", None)}
        for name in parts:
            if modules[name] is not None:
                modules[name].to(dtype)
    fast.to(memory_format=torch.channels_last)
    for p in fast.parameters():
        p.requires_grad_(False)
    return fast


class ConvFCBoxHead(nn.Module):
    """detectron2's FC box head with fc1 as a ``size``x``size`` convolution over the pooled (R, C, size, size)
    features: the same weights and sum (flatten's C-major order is the conv weight's layout), but on the
    CPU oneDNN's conv takes half the time of the (R, C*size*size) matmul and reads channels_last as it is."""

    def __init__(self, head: nn.Module, size: int):
        super().__init__()
        out_dim, in_dim = head.fc1.weight.shape
        channels = in_dim // (size * size)
        self.fc1 = nn.Conv2d(channels, out_dim, kernel_size=size)
        with torch.no_grad():
            self.fc1.weight.copy_(head.fc1.weight.view(out_dim, channels, size, size))
            self.fc1.bias.copy_(head.fc1.bias)
        self.fc1.to(head.fc1.weight.device, head.fc1.weight.dtype)
        self.fc2 = head.fc2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc1(x.to(self.fc1.weight.dtype)))
        return F.relu(self.fc2(torch.flatten(x, start_dim=1)))


def prepare_classifier(model: nn.Module, device: torch.device | str, precision: str,
                       channels_last: bool = True) -> nn.Module:
    """An inference copy of a torchvision classifier: BatchNorms folded into the convs, weights in
    the precision's dtype, channels_last; for "fp32" the model itself (the exact reference)."""
    dtype = precision_dtype(precision)
    if dtype is None:
        return model
    fast = fold_batch_norms(copy.deepcopy(model).eval().to(torch.device(device)))
    fast = fast.to(dtype)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    for p in fast.parameters():
        p.requires_grad_(False)
    return fast.eval()


class InferenceCopies:
    """Prepared classifier copies per (precision, device), rebuilt when the source weights change
    (training steps bump the parameters' version counters), so a stale copy is never used."""

    def __init__(self) -> None:
        self._copies: dict[tuple[str, str], tuple[tuple, nn.Module]] = {}

    def get(self, model: nn.Module, precision: str, device: torch.device | str) -> nn.Module:
        """``model`` itself for fp32, else its prepared copy for ``precision`` on ``device``."""
        if precision_dtype(precision) is None:
            return model
        key = (precision, str(torch.device(device)))
        stamp = (id(model), *((p.data_ptr(), p._version) for p in model.parameters()))
        cached = self._copies.get(key)
        if cached is None or cached[0] != stamp:
            self._copies[key] = (stamp, prepare_classifier(model, device, precision))
        return self._copies[key][1]


def classify_logits(copies: InferenceCopies, model: nn.Module, batch: torch.Tensor, precision: str,
                    device: torch.device | str) -> torch.Tensor:
    """fp32 logits of ``model`` for an NCHW batch: fp32 runs the model as it is (the reference),
    bf16/fp16 run its prepared copy (folded norms, low-precision weights, channels_last)."""
    net = copies.get(model, precision, device)
    dtype = precision_dtype(precision) or next(model.parameters()).dtype
    batch = batch.to(device, non_blocking=True).to(dtype)
    if batch.dim() == 4 and (net is not model or _is_channels_last(net)):
        batch = batch.contiguous(memory_format=torch.channels_last)
    model.eval()
    with torch.inference_mode():
        return net(batch).float()


def _is_channels_last(model: nn.Module) -> bool:
    for p in model.parameters():
        if p.dim() == 4:
            return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
    return False
