"""The second stage: a torchvision backbone that names the vehicle in a crop, saved as a bundle."""

from vehicle_cls.bundle import BundleError
from vehicle_cls.classifier.backend import ClassifierBackend
from vehicle_cls.classifier.classifier import Classifier
from vehicle_cls.classifier.factory import WeightsUnavailableError, create_model, supported_archs
from vehicle_cls.classifier.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocess,
    crop_resize_on_device,
    preprocess_images,
    preprocess_tensor,
)
from vehicle_cls.classifier.torch_backend import TorchClassifierBackend

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BundleError",
    "Classifier",
    "ClassifierBackend",
    "Preprocess",
    "TorchClassifierBackend",
    "WeightsUnavailableError",
    "create_model",
    "crop_resize_on_device",
    "preprocess_images",
    "preprocess_tensor",
    "supported_archs",
]
