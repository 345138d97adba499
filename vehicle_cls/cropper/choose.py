"""Detect -> choose, written once: the pipeline, ``Cropper.crop`` and the crop cache all call
``detect_and_choose`` and differ only in what they do with the chosen crops."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vehicle_cls.crops import CropChoice
from vehicle_cls.errors import one_line

logger = logging.getLogger(__name__)


@dataclass
class Chosen:
    """The crops chosen in one image, or why there are none (``error``, one line)."""

    choices: list[CropChoice] = field(default_factory=list)
    error: str | None = None


def detect_and_choose(
    cropper: Any,
    images: Sequence[np.ndarray],
    policy: Any = None,
    batch_size: int | None = None,
    isolate: bool = True,
) -> list[Chosen]:
    """Run ``cropper.detect`` on decoded RGB images and ``policy.choose`` (default ``cropper.policy``)
    on each result, one ``Chosen`` per image in order.

    ``isolate``: a detector exception is retried image by image so that it becomes the error of
    the image that caused it (the others keep their crops); ``False`` lets it propagate (the crop
    cache stops and resumes later). A policy error is always confined to its image.
    """
    images = list(images)
    if not images:
        return []
    policy = policy if policy is not None else cropper.policy
    try:
        detections = cropper.detect(images, batch_size=batch_size)
        if len(detections) != len(images):
            raise RuntimeError(f"cropper returned {len(detections)} results for {len(images)} images")
    except Exception as exc:
        if not isolate:
            raise
        if len(images) == 1:
            logger.debug("cropper failed", exc_info=True)
            return [Chosen(error=f"detector failed ({type(exc).__name__}: {one_line(exc)})")]
        return [c for image in images for c in detect_and_choose(cropper, [image], policy, 1, isolate)]
    out = []
    for det in detections:
        if det.error:
            out.append(Chosen(error=det.error))
            continue
        try:
            out.append(Chosen(list(policy.choose(det))))
        except Exception as exc:
            out.append(Chosen(error=f"crop policy failed ({type(exc).__name__}: {one_line(exc)})"))
    return out
