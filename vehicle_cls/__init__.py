"""vehicle_cls: find the vehicle in a photo (Detectron2 R101-FPN) and classify it (ResNet50).

Public names are imported lazily so that ``import vehicle_cls`` stays cheap and never pulls in
optional heavy dependencies (tensorflow, boto3, ray, detectron2).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_PUBLIC = {
    "Pipeline": "vehicle_cls.pipeline",
    "Cropper": "vehicle_cls.cropper",
    "CropPolicy": "vehicle_cls.cropper",
    "Classifier": "vehicle_cls.classifier",
    "Result": "vehicle_cls.results",
    "Vehicle": "vehicle_cls.results",
    "Detection": "vehicle_cls.results",
    "Detections": "vehicle_cls.results",
    "ImageError": "vehicle_cls.images",
    "load_image": "vehicle_cls.images",
}

__all__ = sorted(_PUBLIC) + ["__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from vehicle_cls.classifier import Classifier
    from vehicle_cls.cropper import Cropper, CropPolicy
    from vehicle_cls.images import ImageError, load_image
    from vehicle_cls.pipeline import Pipeline
    from vehicle_cls.results import Detection, Detections, Result, Vehicle


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'vehicle_cls' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
