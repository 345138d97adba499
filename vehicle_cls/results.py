"""Result objects: detector output (``Detections``, ``Detection``) and the final ``Prediction``.

Plain arrays and plain Python values, so results are easy to filter, serialize and draw.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vehicle_cls.labels import coco_class_name

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Detection:
    """One detected object: box (x1, y1, x2, y2) in original pixels, detector class and score."""

    box: Box
    score: float
    class_id: int  # detectron2's contiguous COCO id (car 2, bus 5, truck 7)
    mask: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def class_name(self) -> str:
        return coco_class_name(self.class_id)

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": [round(float(v), 2) for v in self.box],
            "score": round(float(self.score), 6),
            "class_id": int(self.class_id),
            "class_name": self.class_name,
        }


@dataclass
class Detections:
    """All detections for one image as arrays (N rows), like torchvision's output dicts."""

    boxes: np.ndarray  # (N, 4) float32 xyxy in original pixels
    scores: np.ndarray  # (N,) float32
    classes: np.ndarray  # (N,) int64 contiguous COCO ids
    masks: np.ndarray | None = None  # (N, H, W) bool, or None for a box-only model
    image_size: tuple[int, int] | None = None  # (height, width) of the original image
    error: str | None = None  # one-line reason when the image could not be decoded (then no rows)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.classes = np.asarray(self.classes, dtype=np.int64).reshape(-1)
        n = len(self.boxes)
        if len(self.scores) != n or len(self.classes) != n or (self.masks is not None and len(self.masks) != n):
            raise ValueError("Detections: boxes, scores, classes and masks must have the same length")

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index: Any) -> Detections:
        """Filter with an index array, a slice or a boolean mask (keeps arrays 2-D)."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Detections(
            self.boxes[index],
            self.scores[index],
            self.classes[index],
            None if self.masks is None else self.masks[index],
            self.image_size,
            self.error,
        )

    @classmethod
    def failed(cls, error: str) -> Detections:
        """No detections because the input failed; ``error`` says why (one line)."""
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64), error=" ".join(str(error).split()))

    @classmethod
    def empty(cls, image_size: tuple[int, int] | None = None, with_masks: bool = False) -> Detections:
        masks = np.zeros((0, *image_size), dtype=bool) if with_masks and image_size else None
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64), masks, image_size)

    def to_list(self) -> list[Detection]:
        return [
            Detection(
                tuple(float(v) for v in self.boxes[i]),  # type: ignore[arg-type]
                float(self.scores[i]),
                int(self.classes[i]),
                None if self.masks is None else self.masks[i],
            )
            for i in range(len(self))
        ]

    def to_dict(self) -> dict[str, Any]:
        return {"detections": [d.to_dict() for d in self.to_list()], "error": self.error}


@dataclass
class Prediction:
    """The answer for one input: what vehicle it is, where it was found, or why it failed."""

    source: str
    label: str | None = None
    score: float | None = None  # softmax probability of ``label``
    class_index: int | None = None
    topk: list[tuple[str, float]] = field(default_factory=list)
    box: Box | None = None  # crop box in original pixels; None when the whole image was classified
    detection: Detection | None = None  # the detector's box/class/score behind ``box``
    fallback: bool = False  # True when the cropper found no vehicle and the whole image was used
    image_size: tuple[int, int] | None = None  # (height, width)
    error: str | None = None  # one-line reason when the input failed; the other fields are empty
    frame: int | None = None  # frame index for video inputs
    image: np.ndarray | None = field(default=None, repr=False, compare=False)  # kept on request, for plot()

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def failed(cls, source: str, error: str, frame: int | None = None) -> Prediction:
        return cls(source=source, error=" ".join(str(error).split()), frame=frame)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (floats rounded, tuples as lists)."""
        return {
            "source": self.source,
            "frame": None if self.frame is None else int(self.frame),
            "label": None if self.label is None else str(self.label),
            "score": None if self.score is None else round(float(self.score), 6),
            "class_index": None if self.class_index is None else int(self.class_index),
            "topk": [[str(name), round(float(p), 6)] for name, p in self.topk],
            "box": None if self.box is None else [round(float(v), 2) for v in self.box],
            "detection": None if self.detection is None else self.detection.to_dict(),
            "fallback": self.fallback,
            "image_size": None if self.image_size is None else [int(v) for v in self.image_size],
            "error": self.error,
        }

    def plot(self, image: Any = None, line_width: int | None = None) -> Image.Image:
        """Draw the crop box and the label on ``image`` (or the kept image / the source path)."""
        from vehicle_cls.images import load_image

        if image is None:
            image = self.image if self.image is not None else self.source
        pil = Image.fromarray(load_image(image))
        return draw_prediction(pil, self, line_width)


def draw_prediction(pil: Image.Image, pred: Prediction, line_width: int | None = None) -> Image.Image:
    """Annotate a copy of ``pil`` with the prediction's box (green) and label (or error, red)."""
    pil = pil.convert("RGB").copy()
    draw = ImageDraw.Draw(pil)
    width = line_width or max(1, round(min(pil.size) / 150))
    font = _font(max(10, min(pil.size) // 20))
    color = (40, 200, 60) if pred.ok else (220, 40, 40)
    if pred.box is not None:
        draw.rectangle([float(v) for v in pred.box], outline=color, width=width)
    text = f"{pred.label} {pred.score:.2f}" if pred.ok and pred.label is not None else (pred.error or "")
    if pred.fallback:
        text += " (whole image)"
    x, y = (pred.box[0], pred.box[1]) if pred.box is not None else (0.0, 0.0)
    left, top, right, bottom = draw.textbbox((x, y), text, font=font)
    y = max(0.0, y - (bottom - top) - 2)
    left, top, right, bottom = draw.textbbox((x, y), text, font=font)
    draw.rectangle([left - 1, top - 1, right + 1, bottom + 1], fill=color)
    draw.text((x, y), text, fill=(255, 255, 255), font=font)
    return pil


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size bitmap font
        return ImageFont.load_default()


def predictions_to_jsonl(predictions: Sequence[Prediction]) -> str:
    """One JSON object per line, in order."""
    import json

    return "".join(json.dumps(p.to_dict()) + "\n" for p in predictions)
