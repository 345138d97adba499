"""Box and mask heads on the proposals: ROIAlignV2 pooling, FC box head, class-specific decode, mask head."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, roi_align

from vehicle_cls.cropper.boxes import apply_deltas, box_area, clip_boxes
from vehicle_cls.cropper.layers import Conv2d
from vehicle_cls.cropper.roi_align_bag import roi_align_bag

#: how ROIPooler pools: torchvision's kernel (detectron2's exact numbers) or one weighted gather
#: (``roi_align_bag``: the same up to fp32 rounding, ~20x faster on the CPU; the fast path's choice)
POOLING_KERNELS = ("torchvision", "embedding_bag")


def assign_levels(
    boxes: torch.Tensor,
    min_level: int = 2,
    max_level: int = 5,
    canonical_box_size: float = 224.0,
    canonical_level: int = 4,
) -> torch.Tensor:
    """Pyramid level index (0-based from ``min_level``) per box: floor(4 + log2(sqrt(area)/224 + 1e-8))."""
    sizes = torch.sqrt(box_area(boxes))
    levels = torch.floor(canonical_level + torch.log2(sizes / canonical_box_size + 1e-8))
    return torch.clamp(levels, min=min_level, max=max_level).to(torch.int64) - min_level


class ROIPooler(nn.Module):
    """Multi-level ``roi_align(aligned=True)`` (detectron2's ROIAlignV2) over p2..p5."""

    def __init__(
        self,
        output_size: int,
        strides=(4, 8, 16, 32),
        sampling_ratio: int = 0,
        aligned: bool = True,
        kernel: str = "torchvision",
    ):
        super().__init__()
        if kernel not in POOLING_KERNELS:
            raise ValueError(f"kernel must be one of {POOLING_KERNELS}, not {kernel!r}")
        self.kernel = kernel
        self.output_size = output_size
        self.scales = tuple(1.0 / s for s in strides)
        self.min_level = int(-math.log2(self.scales[0]))
        self.max_level = int(-math.log2(self.scales[-1]))
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, features: list[torch.Tensor], boxes: list[torch.Tensor]) -> torch.Tensor:
        """Pool (R, C, S, S) for the boxes of every image, R = total boxes, in input order.

        Boxes stay fp32 and pooling runs in fp32 (bf16/fp16 features are widened first: box
        coordinates in bf16 would be off by pixels). On the CPU, where torchvision's roi_align is
        single-threaded, the boxes are split over ``torch.get_num_threads()`` threads; every box is
        pooled independently, so the result is the same bits as one call.
        """
        all_boxes = torch.cat(boxes, dim=0).float()
        index = torch.cat([torch.full_like(b[:, :1], i, dtype=all_boxes.dtype) for i, b in enumerate(boxes)])
        rois = torch.cat([index, all_boxes], dim=1)
        levels = assign_levels(all_boxes, self.min_level, self.max_level)
        if torch.jit.is_tracing():
            return self._pool_traced(features, rois, levels)
        if self.kernel == "embedding_bag":
            return self._pool_bag(features, rois, levels)
        c, s = features[0].shape[1], self.output_size
        output = torch.zeros((len(rois), c, s, s), dtype=features[0].dtype, device=features[0].device)
        jobs: list[tuple[torch.Tensor, torch.Tensor, float]] = []
        for level, (feat, scale) in enumerate(zip(features, self.scales)):
            inds = torch.nonzero(levels == level, as_tuple=True)[0]
            if len(inds) == 0:
                continue
            feat32 = feat.float().contiguous()  # once per level: roi_align would convert channels_last per call
            jobs.extend((feat32, inds_part, scale) for inds_part in _split(inds, feat.device))
        threads = min(len(jobs), torch.get_num_threads()) if output.device.type == "cpu" else 1

        def pool(job: tuple[torch.Tensor, torch.Tensor, float]) -> tuple[torch.Tensor, torch.Tensor]:
            feat32, inds, scale = job
            return inds, roi_align(feat32, rois[inds], (s, s), scale, self.sampling_ratio, self.aligned)

        if threads > 1:
            with ThreadPoolExecutor(threads, thread_name_prefix="vehicle_cls-roi_align") as ex:
                pooled = list(ex.map(pool, jobs))
        else:
            pooled = [pool(job) for job in jobs]
        for inds, part in pooled:
            output.index_put_((inds,), part.to(output.dtype))
        return output

    def _pool_traced(self, features: list[torch.Tensor], rois: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """The same pooling as a graph (an export): every level pools its boxes, even none, with no threads."""
        c, s = features[0].shape[1], self.output_size
        output = torch.zeros((rois.shape[0], c, s, s), dtype=torch.float32, device=rois.device)
        for level, (feat, scale) in enumerate(zip(features, self.scales)):
            inds = torch.nonzero(levels == level, as_tuple=True)[0]
            part = roi_align(feat.float(), rois[inds], (s, s), scale, self.sampling_ratio, self.aligned)
            output = output.index_put((inds,), part)
        return output.to(features[0].dtype)

    def _pool_bag(self, features: list[torch.Tensor], rois: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """The same pooling through ``roi_align_bag`` (fp32, channels_last in and out)."""
        c, s = features[0].shape[1], self.output_size
        output = torch.zeros((len(rois), s, s, c), dtype=features[0].dtype, device=features[0].device)
        for level, (feat, scale) in enumerate(zip(features, self.scales)):
            inds = torch.nonzero(levels == level, as_tuple=True)[0]
            if len(inds) == 0:
                continue
            feat32 = feat.float().contiguous(memory_format=torch.channels_last)
            part = roi_align_bag(feat32, rois[inds], s, scale, self.sampling_ratio, self.aligned)
            output.index_put_((inds,), part.permute(0, 2, 3, 1).to(output.dtype))
        return output.permute(0, 3, 1, 2)


def _split(inds: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
    """Chunks of ``inds`` for the roi_align threads (one chunk off the CPU)."""
    if device.type != "cpu":
        return [inds]
    parts = max(1, min(torch.get_num_threads(), len(inds) // 32))
    return list(inds.tensor_split(parts))


class FastRCNNConvFCHead(nn.Module):
    """flatten -> fc1 1024 + ReLU -> fc2 1024 + ReLU."""

    def __init__(self, in_dim: int = 256 * 7 * 7, fc_dim: int = 1024):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, fc_dim)
        self.fc2 = nn.Linear(fc_dim, fc_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc1(torch.flatten(x, start_dim=1).to(self.fc1.weight.dtype)))
        return F.relu(self.fc2(x))


class FastRCNNOutputLayers(nn.Module):
    """``cls_score`` (K+1, background last) and class-specific ``bbox_pred`` (4K)."""

    def __init__(self, in_dim: int = 1024, num_classes: int = 80):
        super().__init__()
        self.cls_score = nn.Linear(in_dim, num_classes + 1)
        self.bbox_pred = nn.Linear(in_dim, num_classes * 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.cls_score.weight.dtype)  # a bf16 box head feeds the fp32 predictor of the fast path
        return self.cls_score(x), self.bbox_pred(x)


class MaskRCNNConvUpsampleHead(nn.Module):
    """4x (3x3 conv 256 + ReLU), 2x2/2 deconv + ReLU, 1x1 predictor -> one 28x28 logit map per class."""

    mask_fcn1: Conv2d  # added by add_module (mask_fcn{k}, the checkpoint's names); typed for forward

    def __init__(self, channels: int = 256, num_classes: int = 80, num_conv: int = 4):
        super().__init__()
        self.num_conv = num_conv
        for k in range(1, num_conv + 1):
            self.add_module(f"mask_fcn{k}", Conv2d(channels, channels, kernel_size=3, padding=1, activation=F.relu))
        self.deconv = nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2)
        self.predictor = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.mask_fcn1.weight.dtype)
        for k in range(1, self.num_conv + 1):
            x = getattr(self, f"mask_fcn{k}")(x)
        return self.predictor(F.relu(self.deconv(x)))


class StandardROIHeads(nn.Module):
    """Box head + predictor (and mask head): test-time inference only."""

    def __init__(
        self,
        num_classes: int = 80,
        mask_on: bool = False,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_image: int = 100,
        in_features=("p2", "p3", "p4", "p5"),
        strides=(4, 8, 16, 32),
    ):
        super().__init__()
        self.in_features = tuple(in_features)
        self.box_pooler = ROIPooler(7, strides)
        self.box_head = FastRCNNConvFCHead(256 * 7 * 7, 1024)
        self.box_predictor = FastRCNNOutputLayers(1024, num_classes)
        self.mask_on = mask_on
        if mask_on:
            self.mask_pooler = ROIPooler(14, strides)
            self.mask_head = MaskRCNNConvUpsampleHead(256, num_classes)
        self.box_weights = (10.0, 10.0, 5.0, 5.0)
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_image = detections_per_image

    def forward(
        self, features: dict[str, torch.Tensor], proposals: list[torch.Tensor], image_sizes: list[tuple[int, int]]
    ) -> list[dict[str, torch.Tensor]]:
        """Per image: ``boxes`` (resized pixels), ``scores``, ``classes`` and, with masks, ``mask_probs`` (N,28,28)."""
        feats = [features[f] for f in self.in_features]
        x = self.box_head(self.box_pooler(feats, proposals))  # no proposals: every step runs on 0 rows
        logits, deltas = self.box_predictor(x)
        boxes = apply_deltas(deltas, torch.cat(proposals, dim=0), self.box_weights)
        probs = F.softmax(logits.float(), dim=-1)
        if len(proposals) == 1:  # one image (always so in an export): no split by a data-dependent count
            results = [self._inference_single(boxes, probs, image_sizes[0])]
        else:
            counts = [len(p) for p in proposals]
            results = [
                self._inference_single(b, p, size)
                for b, p, size in zip(boxes.split(counts), probs.split(counts), image_sizes)
            ]
        if self.mask_on:
            self._predict_masks(feats, results)
        return results

    def _inference_single(
        self, boxes: torch.Tensor, scores: torch.Tensor, image_size: tuple[int, int]
    ) -> dict[str, torch.Tensor]:
        """fast_rcnn_inference_single_image: drop background, threshold, per-class NMS, top-k."""
        valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores).all(dim=1)
        boxes, scores = boxes[valid], scores[valid]  # a mask, not a branch: the same numbers, and it exports
        scores = scores[:, :-1]
        num_reg = boxes.shape[1] // 4
        boxes = clip_boxes(boxes.reshape(-1, 4), image_size[0], image_size[1]).view(-1, num_reg, 4)
        mask = scores > self.score_thresh
        inds = mask.nonzero()
        boxes = boxes[inds[:, 0], 0] if num_reg == 1 else boxes[mask]
        scores = scores[mask]
        keep = batched_nms(boxes.float(), scores, inds[:, 1], self.nms_thresh)
        if self.detections_per_image >= 0:
            keep = keep[: self.detections_per_image]
        return {"boxes": boxes[keep], "scores": scores[keep], "classes": inds[keep, 1]}

    def _predict_masks(self, feats: list[torch.Tensor], results: list[dict[str, torch.Tensor]]) -> None:
        """Add ``mask_probs`` (N, 28, 28): sigmoid of the predicted class's mask logits."""
        logits = self.mask_head(self.mask_pooler(feats, [r["boxes"] for r in results]))  # runs on 0 rows too
        classes = torch.cat([r["classes"] for r in results])
        probs = logits[torch.arange(logits.shape[0], device=logits.device), classes].float().sigmoid()
        if len(results) == 1:
            results[0]["mask_probs"] = probs
            return
        for r, p in zip(results, probs.split([len(r["boxes"]) for r in results])):
            r["mask_probs"] = p
