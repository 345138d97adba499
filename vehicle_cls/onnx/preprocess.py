"""numpy/PIL twins of the torch preprocessing, for the torch-free runtime: detectron2's
ResizeShortestEdge (``cropper.transforms``) and the classifier's resize modes (``classifier.preprocess``).

They repeat those modules' arithmetic because those import torch; tests/export/test_onnx_export.py checks
that each twin gives the torch function's output.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def resized_shape(height: int, width: int, short_edge: int, max_size: int) -> tuple[int, int]:
    """``cropper.transforms.resized_shape``: (new_h, new_w) as ResizeShortestEdge computes it."""
    size = short_edge * 1.0
    scale = size / min(height, width)
    newh, neww = (size, scale * width) if height < width else (scale * height, size)
    if max(newh, neww) > max_size:
        scale = max_size * 1.0 / max(newh, neww)
        newh, neww = newh * scale, neww * scale
    return int(newh + 0.5), int(neww + 0.5)


def detector_input(image_rgb: np.ndarray, short_edge: int, max_size: int) -> np.ndarray:
    """RGB uint8 HxWx3 -> (1, 3, h, w) float32 BGR resized with PIL bilinear (``preprocess_image``)."""
    h, w = image_rgb.shape[:2]
    new_h, new_w = resized_shape(h, w, short_edge, max_size)
    pil = Image.fromarray(np.ascontiguousarray(image_rgb[:, :, ::-1]))
    resized = np.asarray(pil.resize((new_w, new_h), Image.Resampling.BILINEAR))
    return np.ascontiguousarray(resized.transpose(2, 0, 1), dtype=np.float32)[None]


def classifier_resized_size(height: float, width: float, cfg: dict[str, Any]) -> tuple[int, int]:
    """``classifier.preprocess.resized_size`` on a preprocessing dict."""
    s = cfg["input_size"]
    if cfg["resize"] == "squash":
        return s, s
    if cfg["resize"] == "center_crop":
        short_target = int(math.floor(s / cfg["crop_fraction"]))
        short, long = (height, width) if height <= width else (width, height)
        long_target = int(short_target * long / short)
        return (short_target, long_target) if height <= width else (long_target, short_target)
    scale = s / max(height, width)
    return max(1, min(s, int(round(height * scale)))), max(1, min(s, int(round(width * scale))))


def _offsets(nh: int, nw: int, cfg: dict[str, Any]) -> tuple[int, int]:
    s = cfg["input_size"]
    if cfg["resize"] == "center_crop":
        return int(round((nh - s) / 2.0)), int(round((nw - s) / 2.0))
    if cfg["resize"] == "letterbox":
        return (s - nh) // 2, (s - nw) // 2
    return 0, 0


def normalize(pixels: np.ndarray, cfg: dict[str, Any]) -> np.ndarray:
    """(..., 3, h, w) float pixels 0..255 -> (x - 255 mean) / (255 std), float32."""
    mean = np.asarray(cfg["mean"], np.float32).reshape(3, 1, 1) * np.float32(255.0)
    std = np.asarray(cfg["std"], np.float32).reshape(3, 1, 1) * np.float32(255.0)
    return ((pixels.astype(np.float32) - mean) / std).astype(np.float32)


def whole_image(image_rgb: np.ndarray, cfg: dict[str, Any]) -> np.ndarray:
    """``preprocess_tensor``: the whole RGB image -> (3, S, S) float32 (PIL's float resize: the
    antialiased kernels torch's ``interpolate(antialias=True)`` reproduces)."""
    h, w = image_rgb.shape[:2]
    nh, nw = classifier_resized_size(h, w, cfg)
    img = image_rgb.transpose(2, 0, 1).astype(np.float32)
    if (nh, nw) != (h, w):
        img = np.stack(
            [np.asarray(Image.fromarray(c, mode="F").resize((nw, nh), _RESAMPLE[cfg["interpolation"]])) for c in img]
        ).clip(0.0, 255.0)
    s = cfg["input_size"]
    top, left = _offsets(nh, nw, cfg)
    if cfg["resize"] == "center_crop":
        img = img[:, top : top + s, left : left + s]
    out = normalize(img, cfg)
    if cfg["resize"] == "letterbox":
        canvas = np.zeros((3, s, s), np.float32)
        canvas[:, top : top + nh, left : left + nw] = out
        out = canvas
    return np.ascontiguousarray(out)


def crop_rois(
    boxes: list[tuple[float, float, float, float]], cfg: dict[str, Any]
) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """``crop_resize_on_device``'s ROIAlign windows: (K, 5) rois [0, x1, y1, x2, y2] that sample each
    box resized per ``cfg``, and per box the (top, left, h, w) of the valid letterbox area."""
    s = cfg["input_size"]
    rois, valid = [], []
    for x1, y1, x2, y2 in boxes:
        x1, y1 = float(np.float32(x1)), float(np.float32(y1))  # torch reads the boxes as float32
        x2, y2 = float(np.float32(x2)), float(np.float32(y2))
        w, h = max(x2 - x1, 1e-3), max(y2 - y1, 1e-3)
        nh, nw = classifier_resized_size(h, w, cfg)
        top, left = _offsets(nh, nw, cfg)
        sx, sy = w / nw, h / nh
        if cfg["resize"] == "letterbox":
            rois.append((0.0, x1 - left * sx, y1 - top * sy, x1 + (s - left) * sx, y1 + (s - top) * sy))
        else:
            rois.append((0.0, x1 + left * sx, y1 + top * sy, x1 + (left + s) * sx, y1 + (top + s) * sy))
        valid.append((top, left, nh, nw))
    return np.asarray(rois, np.float32).reshape(-1, 5), valid


def letterbox_mask(out: np.ndarray, valid: list[tuple[int, int, int, int]], cfg: dict[str, Any]) -> np.ndarray:
    """Zero the pixels of letterboxed crops outside their image area (the mean colour)."""
    if cfg["resize"] != "letterbox":
        return out
    keep = np.zeros((len(out), 1, out.shape[-2], out.shape[-1]), np.float32)
    for i, (top, left, nh, nw) in enumerate(valid):
        keep[i, :, top : top + nh, left : left + nw] = 1.0
    return out * keep


def paste_masks(mask_probs: np.ndarray, boxes: np.ndarray, height: int, width: int, threshold: float) -> np.ndarray:
    """``cropper.postprocess.paste_masks`` (per box, grid_sample bilinear, zeros outside, align_corners=False)."""
    out = np.zeros((len(boxes), height, width), dtype=bool)
    for i, (probs, box) in enumerate(zip(mask_probs.astype(np.float32), boxes.astype(np.float32))):
        x0 = int(max(math.floor(box[0]) - 1, 0))
        y0 = int(max(math.floor(box[1]) - 1, 0))
        x1 = int(min(math.ceil(box[2]) + 1, width))
        y1 = int(min(math.ceil(box[3]) + 1, height))
        if x1 <= x0 or y1 <= y0:
            continue
        gx = (np.arange(x0, x1, dtype=np.float32) + np.float32(0.5) - box[0]) / (box[2] - box[0]) * 2 - 1
        gy = (np.arange(y0, y1, dtype=np.float32) + np.float32(0.5) - box[1]) / (box[3] - box[1]) * 2 - 1
        m = probs.shape[0]
        ix = ((gx + 1) * m - 1) / 2  # grid_sample's unnormalize, align_corners=False
        iy = ((gy + 1) * m - 1) / 2
        out[i, y0:y1, x0:x1] = _bilinear_zeros(probs, iy, ix) >= threshold
    return out


def _bilinear_zeros(img: np.ndarray, iy: np.ndarray, ix: np.ndarray) -> np.ndarray:
    """Bilinear samples of a 2-D array on the grid iy x ix, zero outside (grid_sample padding="zeros")."""
    h, w = img.shape
    y0, x0 = np.floor(iy).astype(np.int64), np.floor(ix).astype(np.int64)
    wy1, wx1 = (iy - y0).astype(np.float32), (ix - x0).astype(np.float32)
    padded = np.zeros((h + 2, w + 2), np.float32)
    padded[1:-1, 1:-1] = img
    yy0, yy1 = np.clip(y0 + 1, 0, h + 1), np.clip(y0 + 2, 0, h + 1)
    xx0, xx1 = np.clip(x0 + 1, 0, w + 1), np.clip(x0 + 2, 0, w + 1)
    top = padded[yy0][:, xx0] * (1 - wx1) + padded[yy0][:, xx1] * wx1
    bottom = padded[yy1][:, xx0] * (1 - wx1) + padded[yy1][:, xx1] * wx1
    return top * (1 - wy1)[:, None] + bottom * wy1[:, None]
