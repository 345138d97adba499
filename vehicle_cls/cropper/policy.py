"""Which detected box becomes the crop: class filter, score threshold, largest / best / all, margin, square, mask.

The choices are ``crops.CropChoice`` values; cutting them is ``crops.cut``."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from vehicle_cls.crops import DEFAULT_MASK_FILL, CropChoice, box_areas, box_ious, clamp_box
from vehicle_cls.fromdict import check_keys, field_names
from vehicle_cls.labels import DEFAULT_VEHICLE_CLASSES, coco_class_ids
from vehicle_cls.results import Box, Detection, Detections

SELECT_MODES = ("largest", "score", "all")


@dataclass
class CropPolicy:
    """How detections become crops (defaults follow the course project: car/truck/bus, score 0.5, largest).

    Raises:
        ValueError: an unknown class name, a negative or non-finite ``margin``, an unknown ``select``
            mode, or a ``mask_fill`` that is not an RGB triple.
    """

    classes: tuple[str | int, ...] = DEFAULT_VEHICLE_CLASSES
    min_score: float = 0.5
    select: Literal["largest", "score", "all"] = "largest"
    margin: float = 0.0  # fraction of the box width/height added on each side
    square: bool = False  # grow the shorter side to a square (shifted inside the image when it fits)
    fallback: bool = True  # whole image when no vehicle is found (recorded as CropChoice.fallback)
    mask: bool = False  # blank everything outside the instance mask (needs the mask model)
    mask_fill: tuple[int, int, int] = DEFAULT_MASK_FILL  # RGB of the blanked pixels (ImageNet mean)

    def __post_init__(self) -> None:
        if isinstance(self.classes, (str, int)):
            self.classes = (self.classes,)
        self.classes = tuple(self.classes)
        coco_class_ids(self.classes)  # validates the names
        self.mask_fill = tuple(int(v) for v in self.mask_fill)  # type: ignore[assignment]
        if self.margin < 0 or not math.isfinite(self.margin):
            raise ValueError(f"CropPolicy.margin must be a finite fraction >= 0, not {self.margin!r}")
        if self.select not in SELECT_MODES:
            raise ValueError(f"CropPolicy.select must be one of {SELECT_MODES}, not {self.select!r}")
        if len(self.mask_fill) != 3:
            raise ValueError(f"CropPolicy.mask_fill must be an RGB triple, not {self.mask_fill!r}")

    @property
    def class_ids(self) -> tuple[int, ...]:
        """Contiguous COCO ids of ``classes``."""
        return coco_class_ids(self.classes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (what a bundle or crop cache records).

        Returns:
            Every field by name, tuples as lists.
        """
        d = asdict(self)
        d["classes"] = list(self.classes)
        d["mask_fill"] = list(self.mask_fill)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "", prefix: str = "policy.") -> CropPolicy:
        """Inverse of :meth:`to_dict`; an unknown key is an error naming ``source`` and the key.

        Args:
            d: the fields (a subset: the others keep their defaults).
            source: where ``d`` came from (a file name), for the error message.
            prefix: the keys' dotted prefix in that source, for the error message.

        Returns:
            The policy.

        Raises:
            ValueError: an unknown key (with a did-you-mean) or a bad value.
        """
        check_keys(d, field_names(cls), source=source, prefix=prefix)
        d = dict(d)
        for key in ("classes", "mask_fill"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)

    def select_detections(self, det: Detections) -> Detections:
        """The detections that count as vehicles: wanted class and score >= ``min_score``.

        Args:
            det: one image's detections.

        Returns:
            The kept rows, in their order.
        """
        keep = np.isin(det.classes, np.asarray(self.class_ids, dtype=np.int64)) & (det.scores >= self.min_score)
        return det[np.flatnonzero(keep)]

    def choose(self, det: Detections) -> list[CropChoice]:
        """Turn one image's detections into crop choices (one, or one per vehicle with ``select='all'``).

        Args:
            det: one image's detections, with ``image_size`` (and ``masks`` when ``mask`` is set).

        Returns:
            The crop choices, boxes grown by ``margin`` (and squared) and clamped to the image; the
            whole image (``fallback=True``) when no vehicle is found and ``fallback`` is set, else none.

        Raises:
            ValueError: ``det`` has no ``image_size``, or ``mask`` is set and ``det`` has no masks.
        """
        size = self._image_size(det)
        vehicles = self.select_detections(det)
        if len(vehicles) == 0:
            return [CropChoice(None, fallback=True)] if self.fallback else []
        if self.select == "all":
            order = np.arange(len(vehicles))
        elif self.select == "score":
            order = np.array([int(np.argmax(vehicles.scores))])  # first of equal scores
        else:
            areas = box_areas(vehicles.boxes)
            order = np.array([int(np.argmax(areas))])  # first (highest score) of equal areas
        items = vehicles.to_list()
        return [self._choice(items[i], size) for i in order]

    def match(self, det: Detections, box: Box, min_iou: float = 0.5) -> list[CropChoice]:
        """The crop of the vehicle detection that is one annotated vehicle: the one overlapping ``box`` most.

        For photos with several labelled vehicles, where the policy's one choice per image would give every
        label the same crop. Margin, square and mask apply as in :meth:`choose`.

        Args:
            det: one image's detections, with ``image_size`` (and ``masks`` when ``mask`` is set).
            box: the annotated vehicle, xyxy with 0-based pixel edges.
            min_iou: the least intersection over union that counts as the same vehicle.

        Returns:
            One choice: the best-overlapping vehicle detection, or, when none reaches ``min_iou``, the
            annotated box itself (``fallback=True``: the detector missed that vehicle).

        Raises:
            ValueError: ``det`` has no ``image_size``, or ``mask`` is set and ``det`` has no masks.
        """
        size = self._image_size(det)
        vehicles = self.select_detections(det)
        ious = box_ious(vehicles.boxes, [box])[:, 0]
        if len(ious) == 0 or ious.max() < min_iou:
            return [CropChoice(clamp_box(box, size), None, True)]
        found = vehicles.to_list()[int(np.argmax(ious))]  # first of equal overlaps (highest score)
        return [self._choice(found, size)]

    def _image_size(self, det: Detections) -> tuple[int, int]:
        """The image size to clamp crops to, after checking what choosing needs (masks when ``mask`` is set)."""
        if det.image_size is None:
            raise ValueError("Detections.image_size is needed to clamp crop boxes")
        if self.mask and len(det) and det.masks is None:
            raise ValueError("CropPolicy(mask=True) needs instance masks: use the mask_rcnn_R_101_FPN_3x cropper")
        return det.image_size

    def _choice(self, found: Detection, image_size: tuple[int, int]) -> CropChoice:
        """The crop of one chosen detection: its box grown by ``margin`` (and squared), its mask in mask mode."""
        box = expand_box(found.box, image_size, self.margin, self.square)
        return CropChoice(box, found, False, found.mask if self.mask else None)


def expand_box(box: Box, image_size: tuple[int, int], margin: float = 0.0, square: bool = False) -> Box:
    """Add ``margin`` x width/height on each side, optionally make it square, then clamp to the image.

    A square box is grown about the centre; when it is no larger than the image it is shifted to lie
    inside the image (so it stays square), otherwise it is clamped.
    """
    h, w = image_size
    x1, y1, x2, y2 = (float(v) for v in box)
    bw, bh = x2 - x1, y2 - y1
    x1, x2 = x1 - margin * bw, x2 + margin * bw
    y1, y2 = y1 - margin * bh, y2 + margin * bh
    if square:
        side = max(x2 - x1, y2 - y1)
        x1, x2 = _fit_interval((x1 + x2) / 2 - side / 2, side, w)
        y1, y2 = _fit_interval((y1 + y2) / 2 - side / 2, side, h)
    return clamp_box((x1, y1, x2, y2), image_size)


def _fit_interval(start: float, length: float, limit: float) -> tuple[float, float]:
    """Shift [start, start+length] inside [0, limit] when it fits; else leave it (it gets clamped)."""
    if length <= limit:
        start = min(max(start, 0.0), limit - length)
    return start, start + length
