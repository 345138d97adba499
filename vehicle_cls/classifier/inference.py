"""The classify stage, written once: the chosen crops of decoded images -> model inputs (the backend's
``prepare_crops``, its one inference preprocessing) -> probabilities in chunks -> labelled vehicles.

``Pipeline``, ``Classifier.predict`` and ``train.evaluate`` all call it; they differ only in how they
decode and which crops they choose (detector, user boxes, whole images, dataset crops).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vehicle_cls.classifier.backend import ClassifierBackend
from vehicle_cls.crops import DEFAULT_MASK_FILL, WHOLE_IMAGE, CropChoice
from vehicle_cls.results import Vehicle, label_vehicle


@dataclass
class CropJob:
    """One decoded image and the crops chosen in it."""

    image: Any  # RGB uint8 HxWx3 array (a torch backend also takes the device tensor)
    choices: Sequence[CropChoice] = (WHOLE_IMAGE,)
    tensor: torch.Tensor | None = None  # the same pixels as CHW uint8, when the decoder has them
    scale: tuple[float, float] = (1.0, 1.0)  # (x, y) original pixels per decoded pixel


def classify_crops(
    engine: ClassifierBackend,
    jobs: Sequence[CropJob],
    *,
    fill: Sequence[int] = DEFAULT_MASK_FILL,
    precision: str = "fp32",
    batch_size: int | None = None,
) -> list[np.ndarray]:
    """Probabilities (len(job.choices), C) per job: all crops prepared, then classified together
    ``batch_size`` at a time (None: the torch backend sizes it to free CUDA memory)."""
    with torch.inference_mode():
        prepared = [engine.prepare_crops(j.image, j.choices, fill, tensor=j.tensor) for j in jobs if j.choices]
        probs = (
            engine.classify(prepared, precision, batch_size)
            if prepared
            else np.zeros((0, len(engine.classes)), dtype=np.float32)
        )
    out, start = [], 0
    for job in jobs:
        out.append(probs[start : start + len(job.choices)])
        start += len(job.choices)
    return out


def label_crops(probs: np.ndarray, job: CropJob, classes: Sequence[str], topk: int) -> list[Vehicle]:
    """The vehicles of one job, boxes and detections in original pixels; ``ValueError`` (one line)
    when a probability row is not finite, so the caller fails that one input."""
    return [
        label_vehicle(
            row,
            classes,
            topk,
            choice.original_box(job.scale),
            choice.original_detection(job.scale),
            choice.mask,
            choice.fallback,
        )
        for row, choice in zip(probs, job.choices)
    ]
