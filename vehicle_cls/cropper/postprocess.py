"""Back to original pixels: scale, clip, drop empty boxes; paste 28x28 mask probabilities with grid_sample."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from vehicle_cls.cropper.boxes import clip_boxes, nonempty

# bound the (chunk, H, W, 2) sampling grid of the batched paste to about this many floats
_PASTE_FLOATS = 1 << 25


def paste_masks(
    mask_probs: torch.Tensor,
    boxes: torch.Tensor,
    height: int,
    width: int,
    threshold: float = 0.5,
    per_box: bool | None = None,
) -> torch.Tensor:
    """(N, M, M) probabilities inside (N, 4) boxes -> (N, H, W) bool, sampled at pixel centres.

    Same arithmetic as detectron2's ``_do_paste_mask`` (grid_sample, align_corners=False). On the
    CPU each mask is sampled only over its box (plus one pixel), as detectron2 does; on an
    accelerator the masks are sampled over the whole image in batches. With ``threshold >= 0.5``
    both give the same pixels: outside its box a pasted mask is below 0.5. ``per_box`` forces one way.
    """
    n = mask_probs.shape[0]
    out = torch.zeros((n, height, width), dtype=torch.bool, device=mask_probs.device)
    if n == 0 or height == 0 or width == 0:
        return out
    boxes = boxes.float()
    probs = mask_probs[:, None].float()
    if per_box is None:
        per_box = mask_probs.device.type == "cpu"
    if per_box:
        x0 = (boxes[:, 0].floor() - 1).clamp(min=0).to(torch.int64).tolist()
        y0 = (boxes[:, 1].floor() - 1).clamp(min=0).to(torch.int64).tolist()
        x1 = (boxes[:, 2].ceil() + 1).clamp(max=width).to(torch.int64).tolist()
        y1 = (boxes[:, 3].ceil() + 1).clamp(max=height).to(torch.int64).tolist()
        for i in range(n):  # sum of box areas instead of N x H x W samples
            if x1[i] <= x0[i] or y1[i] <= y0[i]:
                continue
            region = _sample(probs[i : i + 1], boxes[i : i + 1], y0[i], y1[i], x0[i], x1[i])
            out[i, y0[i] : y1[i], x0[i] : x1[i]] = region[0] >= threshold
        return out
    chunk = max(1, _PASTE_FLOATS // (2 * height * width))
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        out[sl] = _sample(probs[sl], boxes[sl], 0, height, 0, width) >= threshold
    return out


def _sample(probs: torch.Tensor, boxes: torch.Tensor, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
    """Bilinear samples of (k, 1, M, M) masks at the pixel centres of rows y0:y1, columns x0:x1."""
    img_y = torch.arange(y0, y1, device=boxes.device, dtype=torch.float32) + 0.5
    img_x = torch.arange(x0, x1, device=boxes.device, dtype=torch.float32) + 0.5
    bx0, by0, bx1, by1 = torch.split(boxes, 1, dim=1)
    gy = (img_y - by0) / (by1 - by0) * 2 - 1  # (k, h)
    gx = (img_x - bx0) / (bx1 - bx0) * 2 - 1  # (k, w)
    k, h, w = len(boxes), len(img_y), len(img_x)
    grid = torch.stack([gx[:, None, :].expand(k, h, w), gy[:, :, None].expand(k, h, w)], dim=3)
    return F.grid_sample(probs, grid, align_corners=False)[:, 0]


def to_original(
    result: dict[str, torch.Tensor], resized_size: tuple[Any, Any], original_size: tuple[Any, Any]
) -> dict[str, torch.Tensor]:
    """Boxes to original pixels, clipped, empty ones dropped (with their scores, classes, ``mask_probs``).

    Sizes are ints, or 0-dim float64 tensors in an export (the scale is then computed in float64 as
    Python does, and rounded to float32 like the Python scalar)."""
    out_h, out_w = original_size
    scale_x, scale_y = out_w / resized_size[1], out_h / resized_size[0]
    boxes = result["boxes"].clone()
    boxes[:, 0::2] *= scale_x
    boxes[:, 1::2] *= scale_y
    boxes = clip_boxes(boxes, out_h, out_w)
    keep = nonempty(boxes)
    return {"boxes": boxes[keep], **{k: v[keep] for k, v in result.items() if k != "boxes"}}


def postprocess(
    result: dict[str, torch.Tensor],
    resized_size: tuple[int, int],
    original_size: tuple[int, int],
    mask_threshold: float = 0.5,
) -> dict[str, torch.Tensor]:
    """detector_postprocess: boxes to original pixels, clipped, empty ones dropped; masks pasted."""
    out = to_original(result, resized_size, original_size)
    if "mask_probs" in out:
        out["masks"] = paste_masks(
            out.pop("mask_probs"), out["boxes"], original_size[0], original_size[1], mask_threshold
        )
    return out
