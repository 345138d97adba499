"""The cropper: detectron2's COCO R101-FPN (pure torch or detectron2) + the crop policy.

Names are imported lazily, so ``vehicle_cls.cropper.policy`` (numpy only) loads without torch: the
ONNX runtime (``vehicle_cls.onnx``) chooses crops with the same ``CropPolicy``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vehicle_cls.lazy import lazy_attribute

_PUBLIC = {
    "DETECTOR_CONFIGS": "vehicle_cls.zoo",
    "CheckpointError": "vehicle_cls.cropper.checkpoint",
    "CropChoice": "vehicle_cls.crops",
    "CropPolicy": "vehicle_cls.cropper.policy",
    "Cropper": "vehicle_cls.cropper.cropper",
    "Detection": "vehicle_cls.results",
    "Detections": "vehicle_cls.results",
    "InferenceSettings": "vehicle_cls.cropper.rcnn",
    "cut": "vehicle_cls.crops",
}

__all__ = [
    "DETECTOR_CONFIGS",
    "CheckpointError",
    "CropChoice",
    "CropPolicy",
    "Cropper",
    "Detection",
    "Detections",
    "InferenceSettings",
    "cut",
]

if TYPE_CHECKING:  # pragma: no cover
    from vehicle_cls.cropper.checkpoint import CheckpointError
    from vehicle_cls.cropper.cropper import Cropper
    from vehicle_cls.cropper.policy import CropPolicy
    from vehicle_cls.cropper.rcnn import InferenceSettings
    from vehicle_cls.crops import CropChoice, cut
    from vehicle_cls.results import Detection, Detections
    from vehicle_cls.zoo import DETECTOR_CONFIGS


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _PUBLIC, name)


def __dir__() -> list[str]:
    return __all__
