"""The cropper: detectron2's COCO R101-FPN (pure torch or detectron2) + the crop policy."""
from vehicle_cls.cropper.checkpoint import CheckpointError
from vehicle_cls.cropper.cropper import Cropper
from vehicle_cls.cropper.policy import CropPolicy
from vehicle_cls.cropper.rcnn import InferenceSettings
from vehicle_cls.crops import CropChoice, cut
from vehicle_cls.results import Detection, Detections
from vehicle_cls.zoo import DETECTOR_CONFIGS

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
