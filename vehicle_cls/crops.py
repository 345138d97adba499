"""The crop choice, written once: what to classify in an image (a box, a mask, or the whole image),
the box arithmetic around it and the CPU cut.

The choose stage (``cropper.policy``, user boxes in ``Pipeline``) makes ``CropChoice`` values and the
classify stage (both classifier backends, the crop cache) reads them; neither imports the other.
numpy only, so the crop cache and the classifier can use it without the detector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from vehicle_cls.results import Box, Detection

#: RGB of the pixels blanked outside an instance mask: the ImageNet mean, which normalises to ~0.
DEFAULT_MASK_FILL: tuple[int, int, int] = (124, 116, 104)


@dataclass(frozen=True)
class CropChoice:
    """One crop to classify: ``box`` in the pixels of the image it is cut from (None: the whole image),
    the detection behind it, whether it is the no-vehicle fallback, and its instance mask.

    ``given_box``: a user's box in original pixels, reported as given when the image was decoded
    reduced (rescaling ``box`` back could differ in the last bit).
    """

    box: Box | None
    detection: Detection | None = None
    fallback: bool = False
    mask: np.ndarray | None = None  # (H, W) bool over the full image, in mask mode
    given_box: Box | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready box, detection and fallback flag (the mask is left out)."""
        return {
            "box": None if self.box is None else [float(v) for v in self.box],
            "detection": None if self.detection is None else self.detection.to_dict(),
            "fallback": self.fallback,
        }

    def original_box(self, scale: tuple[float, float]) -> Box | None:
        """The box to report, in original pixels (``scale``: (x, y) original pixels per decoded pixel)."""
        return self.given_box or scale_box(self.box, scale)

    def original_detection(self, scale: tuple[float, float]) -> Detection | None:
        """The detection with its box in original pixels."""
        if self.detection is None or scale == (1.0, 1.0):
            return self.detection
        box = scale_box(self.detection.box, scale)
        assert box is not None  # a detection always has a box
        return replace(self.detection, box=box)


WHOLE_IMAGE = CropChoice(None)  # classify the whole image


def clamp_box(box: Any, image_size: tuple[int, int]) -> Box:
    """``box`` (x1, y1, x2, y2) clamped to a (height, width) image: each x into [0, w], each y into [0, h]."""
    h, w = image_size
    x1, y1, x2, y2 = box
    return (min(max(x1, 0.0), w), min(max(y1, 0.0), h), min(max(x2, 0.0), w), min(max(y2, 0.0), h))


def scale_box(box: Box | None, scale: tuple[float, float]) -> Box | None:
    """``box`` from decoded to original pixels: x times ``scale[0]``, y times ``scale[1]`` (None stays None)."""
    if box is None or scale == (1.0, 1.0):
        return box
    sx, sy = scale
    return (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)


def unscale_box(box: Box, scale: tuple[float, float]) -> Box:
    """``box`` from original to decoded pixels (the inverse of ``scale_box``)."""
    if scale == (1.0, 1.0):
        return box
    sx, sy = scale
    return (box[0] / sx, box[1] / sy, box[2] / sx, box[3] / sy)


def box_areas(boxes: np.ndarray) -> np.ndarray:
    """Areas of (N, 4) xyxy boxes; a box with x2 < x1 or y2 < y1 has area 0."""
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def box_ious(a: Any, b: Any) -> np.ndarray:
    """(N, M) intersection over union of (N, 4) and (M, 4) xyxy boxes (0 where a union is empty)."""
    x = np.asarray(a, dtype=np.float64).reshape(-1, 4)[:, None]
    y = np.asarray(b, dtype=np.float64).reshape(-1, 4)[None]
    iw = np.clip(np.minimum(x[..., 2], y[..., 2]) - np.maximum(x[..., 0], y[..., 0]), 0, None)
    ih = np.clip(np.minimum(x[..., 3], y[..., 3]) - np.maximum(x[..., 1], y[..., 1]), 0, None)
    inter = iw * ih
    union = box_areas(x[:, 0])[:, None] + box_areas(y[0])[None] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def crop_bounds(box: Box, image_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Integer pixel bounds covering ``box``: floor of the start, ceil of the end, inside the image, >= 1 px."""
    h, w = image_size
    x1 = min(max(math.floor(box[0]), 0), w - 1)
    y1 = min(max(math.floor(box[1]), 0), h - 1)
    x2 = max(min(math.ceil(box[2]), w), x1 + 1)
    y2 = max(min(math.ceil(box[3]), h), y1 + 1)
    return x1, y1, x2, y2


def cut(image: np.ndarray, choice: CropChoice, fill: tuple[int, int, int] | Any = DEFAULT_MASK_FILL) -> np.ndarray:
    """Cut ``choice`` out of an HxWx3 uint8 image on the CPU (a new array), blanking the pixels outside
    its mask (mask mode only attaches one) with the RGB ``fill``."""
    out = image
    if choice.mask is not None:
        if choice.mask.shape != image.shape[:2]:
            raise ValueError(f"mask shape {choice.mask.shape} does not match image {image.shape[:2]}")
        out = image.copy()
        out[~choice.mask] = np.asarray(tuple(fill), dtype=image.dtype)
    if choice.box is None:
        return np.ascontiguousarray(out) if out is not image else image.copy()
    x1, y1, x2, y2 = crop_bounds(choice.box, image.shape[:2])
    return np.ascontiguousarray(out[y1:y2, x1:x2])
