"""Region proposal network: detectron2's anchors (unrounded, fixed strides), head and proposal filter."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms

from vehicle_cls.cropper.boxes import apply_deltas, clip_boxes, nonempty
from vehicle_cls.cropper.layers import Conv2d


def cell_anchors(size: float, aspect_ratios=(0.5, 1.0, 2.0)) -> torch.Tensor:
    """(A, 4) anchors centred at 0: ``w = sqrt(size^2 / a)``, ``h = a * w``, not rounded."""
    anchors = []
    area = size**2.0
    for a in aspect_ratios:
        w = math.sqrt(area / a)
        h = a * w
        anchors.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return torch.tensor(anchors)


def grid_anchors(base: torch.Tensor, grid_h: int, grid_w: int, stride: int, offset: float = 0.0) -> torch.Tensor:
    """(H*W*A, 4) anchors for one level, centres at ``(x*stride, y*stride)``, in (H, W, A) order."""
    device = base.device
    shifts_x = torch.arange(offset * stride, grid_w * stride, step=stride, dtype=torch.float32, device=device)
    shifts_y = torch.arange(offset * stride, grid_h * stride, step=stride, dtype=torch.float32, device=device)
    shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
    shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
    shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
    return (shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4)


def topk_size(n: int | torch.Tensor, k: int) -> int | torch.Tensor:
    """``min(n, k)``; while tracing ``n`` is a 0-dim tensor (a dynamic size) and so is the result."""
    return torch.clamp(n, max=k) if isinstance(n, torch.Tensor) else min(n, k)


class AnchorGenerator(nn.Module):
    """One anchor size per level (32..512), three aspect ratios; cached per grid size and device."""

    def __init__(
        self,
        sizes=(32, 64, 128, 256, 512),
        strides=(4, 8, 16, 32, 64),
        aspect_ratios=(0.5, 1.0, 2.0),
        offset: float = 0.0,
    ):
        super().__init__()
        self.strides = tuple(strides)
        self.offset = offset
        self.num_anchors = len(aspect_ratios)
        for i, size in enumerate(sizes):
            self.register_buffer(f"cell_anchors_{i}", cell_anchors(size, aspect_ratios), persistent=False)
        self._cache: dict = {}

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for i, (feat, stride) in enumerate(zip(features, self.strides)):
            base = getattr(self, f"cell_anchors_{i}")
            if torch.jit.is_tracing():  # an export: the grid size is an input of the graph, never a cached constant
                out.append(grid_anchors(base, feat.shape[-2], feat.shape[-1], stride, self.offset))
                continue
            key = (i, feat.shape[-2], feat.shape[-1], str(base.device))
            anchors = self._cache.get(key)
            if anchors is None:
                anchors = grid_anchors(base, feat.shape[-2], feat.shape[-1], stride, self.offset)
                if len(self._cache) > 64:
                    self._cache.clear()
                self._cache[key] = anchors
            out.append(anchors)
        return out


class StandardRPNHead(nn.Module):
    """Shared 3x3 conv + ReLU, then 1x1 objectness (A) and 1x1 deltas (A*4) on every level."""

    def __init__(self, in_channels: int = 256, num_anchors: int = 3, box_dim: int = 4):
        super().__init__()
        self.conv = Conv2d(in_channels, in_channels, kernel_size=3, stride=1, padding=1, activation=F.relu)
        self.objectness_logits = nn.Conv2d(in_channels, num_anchors, kernel_size=1)
        self.anchor_deltas = nn.Conv2d(in_channels, num_anchors * box_dim, kernel_size=1)

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        logits, deltas = [], []
        for x in features:
            t = self.conv(x.to(self.conv.weight.dtype))  # the fast path may run this head in another dtype
            logits.append(self.objectness_logits(t))
            deltas.append(self.anchor_deltas(t))
        return logits, deltas


class RPN(nn.Module):
    """Proposals per image: per-level top-k by logit, clip, keep w>0 and h>0, NMS per level, top-k."""

    def __init__(
        self,
        in_features=("p2", "p3", "p4", "p5", "p6"),
        strides=(4, 8, 16, 32, 64),
        pre_nms_topk: int = 1000,
        post_nms_topk: int = 1000,
        nms_thresh: float = 0.7,
        min_box_size: float = 0.0,
    ):
        super().__init__()
        self.in_features = tuple(in_features)
        self.anchor_generator = AnchorGenerator(strides=strides)
        self.rpn_head = StandardRPNHead(256, self.anchor_generator.num_anchors)
        self.pre_nms_topk = pre_nms_topk
        self.post_nms_topk = post_nms_topk
        self.nms_thresh = nms_thresh
        self.min_box_size = min_box_size

    def forward(
        self, features: dict[str, torch.Tensor], image_sizes: list[tuple[int, int]]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Return, per image, (boxes (R, 4) float32 in resized pixels, objectness logits (R,))."""
        feats = [features[f] for f in self.in_features]
        anchors = self.anchor_generator(feats)
        logits, deltas = self.rpn_head(feats)
        n = feats[0].shape[0]
        # (N, A, H, W) -> (N, H*W*A); (N, A*4, H, W) -> (N, H*W*A, 4)
        logits = [x.permute(0, 2, 3, 1).flatten(1).float() for x in logits]
        deltas = [
            x.view(x.shape[0], -1, 4, x.shape[-2], x.shape[-1]).permute(0, 3, 4, 1, 2).flatten(1, -2) for x in deltas
        ]
        device = feats[0].device
        batch_idx = torch.arange(n, device=device)
        top_scores, top_boxes, level_ids = [], [], []
        for level, (anchors_l, deltas_l, logits_l) in enumerate(zip(anchors, deltas, logits)):
            boxes_l = apply_deltas(deltas_l.reshape(-1, 4), anchors_l.unsqueeze(0).expand(n, -1, -1).reshape(-1, 4))
            boxes_l = boxes_l.view(n, -1, 4)
            scores_k, idx = logits_l.topk(topk_size(logits_l.shape[1], self.pre_nms_topk), dim=1)
            top_scores.append(scores_k)
            top_boxes.append(boxes_l[batch_idx[:, None], idx])
            level_ids.append(torch.full_like(idx[0], level))
        scores_all = torch.cat(top_scores, dim=1)
        boxes_all = torch.cat(top_boxes, dim=1)
        levels_all = torch.cat(level_ids, dim=0)
        results = []
        for i, (h, w) in enumerate(image_sizes):
            boxes, scores, lvl = boxes_all[i], scores_all[i], levels_all
            # masks, not branches on their values: the same numbers, and a graph that exports
            valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores)
            boxes, scores, lvl = boxes[valid], scores[valid], lvl[valid]
            boxes = clip_boxes(boxes, h, w)
            keep = nonempty(boxes, self.min_box_size)
            boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
            keep = batched_nms(boxes.float(), scores, lvl, self.nms_thresh)[: self.post_nms_topk]
            results.append((boxes[keep], scores[keep]))
        return results
