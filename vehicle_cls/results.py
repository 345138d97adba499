"""Result objects: detector output (``Detections``, ``Detection``) and the per-input ``Result``, and the
output schema (``RESULT_FIELDS``, ``ROW_FIELDS``, ``arrow_schema``). Drawing lives in ``plotting``.

A ``Result`` is the answer for one input image (one video frame): every ``Vehicle`` found in it,
or the one-line reason it failed. Plain arrays and plain Python values, so results are easy to
filter, serialize (strict JSON, never a bare NaN) and draw.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from vehicle_cls.cocotools import mask_json
from vehicle_cls.errors import one_line
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
        """JSON-ready values, as ``Vehicle.to_dict`` nests them.

        Returns:
            box (rounded), score, class_id and class_name; no mask array.
        """
        return {
            "box": [_num(v, 2) for v in self.box],
            "score": _num(self.score),
            "class_id": int(self.class_id),
            "class_name": self.class_name,
        }


@dataclass
class Detections:
    """All detections for one image as arrays (N rows), like torchvision's output dicts.

    Raises:
        ValueError: boxes, scores, classes (and masks) do not have the same length.
    """

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
        """No detections because the input failed; ``error`` says why (one line).

        Args:
            error: the reason (folded to one line).

        Returns:
            Empty detections with ``error`` set.
        """
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64), error=one_line(error))

    @classmethod
    def empty(cls, image_size: tuple[int, int] | None = None, with_masks: bool = False) -> Detections:
        """No detections in a readable image (nothing found), with the arrays a model would give.

        Args:
            image_size: (height, width) of the image.
            with_masks: give an empty (0, H, W) mask array (a mask model), not None.

        Returns:
            Empty detections without an error.
        """
        masks = np.zeros((0, *image_size), dtype=bool) if with_masks and image_size else None
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64), masks, image_size)

    def to_list(self) -> list[Detection]:
        """One ``Detection`` per row, for code that handles objects one at a time.

        Returns:
            The detections, in row order (each with its mask, if any).
        """
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
        """JSON-ready values: every detection as ``Detection.to_dict`` gives it, and the error.

        Returns:
            ``{"detections": [Detection.to_dict(), ...], "error": ...}``.
        """
        return {"detections": [d.to_dict() for d in self.to_list()], "error": self.error}


@dataclass
class Vehicle:
    """One vehicle found in an image (or the whole image, without cropper or as the fallback).

    Attributes:
        box: the crop box ``(x1, y1, x2, y2)`` in original pixels; None is the whole image.
        detection: the detector's class, id and score behind ``box`` (None without a detector).
        mask: bool HxW instance mask (Mask R-CNN) of the decoded image, smaller than ``image_size`` when a
            large JPEG was decoded reduced; None for a box-only detector.
        label: the classifier's best class name.
        score: the softmax probability of ``label``.
        class_index: the index of ``label`` in the classifier's classes.
        topk: the best ``(label, probability)`` pairs, best first.
        fallback: True when nothing was detected and the whole image was classified.
    """

    box: Box | None = None
    detection: Detection | None = None
    mask: np.ndarray | None = field(default=None, repr=False, compare=False)
    label: str | None = None
    score: float | None = None
    class_index: int | None = None
    topk: list[tuple[str, float]] = field(default_factory=list)
    fallback: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (floats rounded, tuples as lists); the mask as COCO RLE.

        Returns:
            box, detection, label, score, class_index, topk (``[label, score]`` pairs), fallback, has_mask
            and mask (``{"size": [h, w], "counts": str}``, COCO RLE via ``cocotools.mask_json``; None without
            a mask or without pycocotools) (``results.VEHICLE_FIELDS``).
        """
        return {
            "box": None if self.box is None else [_num(v, 2) for v in self.box],
            "detection": None if self.detection is None else self.detection.to_dict(),
            "label": None if self.label is None else str(self.label),
            "score": _num(self.score),
            "class_index": None if self.class_index is None else int(self.class_index),
            "topk": [[str(name), _num(p)] for name, p in self.topk],
            "fallback": bool(self.fallback),
            "has_mask": self.mask is not None,
            "mask": mask_json(self.mask),
        }


@dataclass
class Result:
    """The answer for one input image (one video frame): every vehicle found, or why it failed.

    Attributes:
        source: the input's name (path, URL, ``NamedInput`` name or a description of an array).
        index: the position in the expanded input stream (folders, globs and videos flattened).
        frame: the video frame index (None for an image).
        timestamp: the video frame time in seconds (None for an image).
        image_size: ``(height, width)`` of the image in original pixels.
        vehicles: every vehicle found, in the cropper's order (iterate the result itself).
        error: a one-line reason when the input failed (then ``vehicles`` is empty), else None.
        image: the decoded RGB image, kept only with ``keep_images=True`` (for ``plot``).
    """

    source: str
    index: int
    frame: int | None = None
    timestamp: float | None = None
    image_size: tuple[int, int] | None = None
    vehicles: list[Vehicle] = field(default_factory=list)
    error: str | None = None
    image: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """True when the input was processed (``error`` is None)."""
        return self.error is None

    @property
    def best(self) -> Vehicle | None:
        """The highest-scoring vehicle (the only one in single-crop mode), or None."""
        scored = [v for v in self.vehicles if v.score is not None]
        if scored:
            return max(scored, key=lambda v: v.score)  # type: ignore[arg-type, return-value]
        return self.vehicles[0] if self.vehicles else None

    def __len__(self) -> int:
        return len(self.vehicles)

    def __getitem__(self, index: int) -> Vehicle:
        return self.vehicles[index]

    def __iter__(self) -> Iterator[Vehicle]:
        return iter(self.vehicles)

    @classmethod
    def failed(
        cls, source: str, index: int, error: str, frame: int | None = None, timestamp: float | None = None
    ) -> Result:
        """A result for an input that could not be processed; ``error`` is made one line.

        Args:
            source: the input's name (path, URL or description).
            index: its position in the expanded input stream.
            error: why it failed.
            frame: the video frame index, for a frame.
            timestamp: the video frame time in seconds, for a frame.

        Returns:
            The result, with no vehicles.
        """
        return cls(source=source, index=index, frame=frame, timestamp=timestamp, error=one_line(error))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values: the input's fields and one dict per vehicle (``Vehicle.to_dict``).

        Returns:
            source, index, frame, timestamp, image_size, error and vehicles (``results.RESULT_FIELDS``).
        """
        return {
            "source": self.source,
            "index": int(self.index),
            "frame": None if self.frame is None else int(self.frame),
            "timestamp": _num(self.timestamp),
            "image_size": None if self.image_size is None else [int(v) for v in self.image_size],
            "error": self.error,
            "vehicles": [v.to_dict() for v in self.vehicles],
        }

    def to_json(self) -> str:
        """Strict JSON on one line (a non-finite number is written as null, never as bare NaN).

        Returns:
            ``json.dumps(self.to_dict())``, one JSON Lines line without its newline.
        """
        return json.dumps(self.to_dict(), allow_nan=False)

    def to_rows(self) -> list[dict[str, Any]]:
        """Flat rows for tables (CSV, DataFrame, Parquet): one per vehicle, or one with empty
        vehicle fields for a failed input or one where nothing was found, so no input is lost.

        Returns:
            The rows, each with the columns of ``results.ROW_FIELDS``.

        Example:
            ```python
            import pandas as pd
            table = pd.DataFrame([row for r in pipe("folder/") for row in r.to_rows()])
            ```
        """
        h, w = self.image_size if self.image_size is not None else (None, None)
        base = {
            "source": self.source,
            "index": int(self.index),
            "frame": None if self.frame is None else int(self.frame),
            "timestamp": _num(self.timestamp),
            "image_height": h,
            "image_width": w,
            "error": self.error,
        }
        rows = []
        for i, v in enumerate(self.vehicles or [None]):
            box = v.box if v is not None and v.box is not None else (None,) * 4
            det = v.detection if v is not None else None
            rows.append(
                {
                    **base,
                    "vehicle": None if v is None else i,
                    "label": None if v is None else v.label,
                    "score": None if v is None else _num(v.score),
                    "class_index": None if v is None or v.class_index is None else int(v.class_index),
                    "x1": _num(box[0], 2),
                    "y1": _num(box[1], 2),
                    "x2": _num(box[2], 2),
                    "y2": _num(box[3], 2),
                    "detector_class": None if det is None else det.class_name,
                    "detector_score": None if det is None else _num(det.score),
                    "fallback": None if v is None else bool(v.fallback),
                }
            )
        return rows

    def plot(self, image: Any = None, line_width: int | None = None, masks: bool = True) -> Image.Image:
        """Every vehicle (box, mask, label and score) drawn on an image, to look at a result.

        A failed input shows its error in red.

        Args:
            image: what to draw on (anything ``load_image`` accepts; None: the image kept with
                ``keep_images=True``, else the source file).
            line_width: box line width in pixels (None: scaled to the image).
            masks: draw instance masks where the vehicles have them.

        Returns:
            A new RGB PIL image.

        Raises:
            ImageError: the image cannot be read (e.g. no image was kept and the source is not a file).
        """
        from vehicle_cls.io.images import load_image
        from vehicle_cls.plotting import draw_result

        if image is None:
            image = self.image if self.image is not None else self.source
        return draw_result(Image.fromarray(load_image(image)), self, line_width, masks)


def label_vehicle(
    probs: np.ndarray,
    classes: Sequence[str],
    topk: int = 5,
    box: Box | None = None,
    detection: Detection | None = None,
    mask: np.ndarray | None = None,
    fallback: bool = False,
) -> Vehicle:
    """A ``Vehicle`` from one probability row: label, score and the ``topk`` best classes.

    Raises ``ValueError`` (one line) when the row is not finite, e.g. a model with NaN weights, so
    the caller can mark that one input as failed instead of writing NaN scores.
    """
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    if not np.isfinite(probs).all():
        raise ValueError("the classifier output is not finite (NaN or inf); check the model weights")
    k = max(1, min(int(topk), len(probs)))
    order = np.argsort(-probs, kind="stable")[:k]
    best = int(order[0])
    return Vehicle(
        box=None if box is None else tuple(float(v) for v in box),  # type: ignore[arg-type]
        detection=detection,
        mask=mask,
        label=str(classes[best]),
        score=float(probs[best]),
        class_index=best,
        topk=[(str(classes[int(i)]), float(probs[int(i)])) for i in order],
        fallback=bool(fallback),
    )


# --- the output schema, written once: the typed fields of to_dict() and to_rows() -----------------
#: A field is (name, type); a type is "string", "int64", "float64", "bool", ("list", type) or
#: ("struct", fields). Tables (Parquet through Ray, ``arrow_schema``) are built from these.
DETECTION_FIELDS: tuple = (
    ("box", ("list", "float64")),
    ("score", "float64"),
    ("class_id", "int64"),
    ("class_name", "string"),
)
VEHICLE_FIELDS: tuple = (
    ("box", ("list", "float64")),
    ("detection", ("struct", DETECTION_FIELDS)),
    ("label", "string"),
    ("score", "float64"),
    ("class_index", "int64"),
    ("topk", ("list", ("struct", (("label", "string"), ("score", "float64"))))),  # [label, score] pairs in JSON
    ("fallback", "bool"),
    ("has_mask", "bool"),
    # COCO compressed RLE of the mask's own (decoded image) size; null without a mask or without pycocotools
    ("mask", ("struct", (("size", ("list", "int64")), ("counts", "string")))),
)
RESULT_FIELDS: tuple = (  # Result.to_dict(), one row per input
    ("source", "string"),
    ("index", "int64"),
    ("frame", "int64"),
    ("timestamp", "float64"),
    ("image_size", ("list", "int64")),
    ("error", "string"),
    ("vehicles", ("list", ("struct", VEHICLE_FIELDS))),
)
# Result.to_rows(), one flat row per vehicle: no mask (an RLE string is no table cell to read; JSON carries it)
ROW_FIELDS: tuple = (
    ("source", "string"),
    ("index", "int64"),
    ("frame", "int64"),
    ("timestamp", "float64"),
    ("image_height", "int64"),
    ("image_width", "int64"),
    ("error", "string"),
    ("vehicle", "int64"),
    ("label", "string"),
    ("score", "float64"),
    ("class_index", "int64"),
    ("x1", "float64"),
    ("y1", "float64"),
    ("x2", "float64"),
    ("y2", "float64"),
    ("detector_class", "string"),
    ("detector_score", "float64"),
    ("fallback", "bool"),
)
ROW_KINDS = ("image", "vehicle")


def output_fields(rows: str = "image") -> tuple:
    """``RESULT_FIELDS`` for ``rows="image"`` (``to_dict``), ``ROW_FIELDS`` for ``rows="vehicle"`` (``to_rows``)."""
    if rows not in ROW_KINDS:
        raise ValueError(f"rows must be 'image' (one row per input) or 'vehicle' (one row per vehicle), not {rows!r}")
    return RESULT_FIELDS if rows == "image" else ROW_FIELDS


def arrow_schema(rows: str = "image") -> Any:
    """The pyarrow schema of ``output_fields(rows)`` (pyarrow is imported here, on first use)."""
    import pyarrow as pa

    def arrow(tp: Any) -> Any:
        if isinstance(tp, str):
            return getattr(pa, {"bool": "bool_"}.get(tp, tp))()
        kind, inner = tp
        if kind == "list":
            return pa.list_(arrow(inner))
        return pa.struct([(name, arrow(t)) for name, t in inner])

    return pa.schema([(name, arrow(tp)) for name, tp in output_fields(rows)])


def _num(value: Any, digits: int = 6) -> float | None:
    """A rounded float for JSON, or None for None / NaN / inf (strict JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return round(value, digits) if math.isfinite(value) else None


def results_to_jsonl(results: Sequence[Result]) -> str:
    """One strict JSON object per line, in order."""
    return "".join(r.to_json() + "\n" for r in results)
