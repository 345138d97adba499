"""vehicle_cls: find the vehicle in a photo (Detectron2 R101-FPN) and classify it (ResNet50).

Public names are imported lazily so that ``import vehicle_cls`` stays cheap and never pulls in
optional heavy dependencies (tensorflow, boto3, ray, detectron2).
"""

from __future__ import annotations

import importlib
import importlib.abc
import logging
import sys
from typing import TYPE_CHECKING, Any

from vehicle_cls.lazy import lazy_attribute


def _version() -> str:
    """The installed distribution's version (pyproject.toml is the one place it is written)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vehicle-cls")
    except PackageNotFoundError:  # a source tree on sys.path that was never installed
        return "0+unknown"


__version__ = _version()

_PUBLIC = {
    "Pipeline": "vehicle_cls.pipeline",
    "Cropper": "vehicle_cls.cropper",
    "CropPolicy": "vehicle_cls.cropper",
    "Classifier": "vehicle_cls.classifier",
    "Result": "vehicle_cls.results",
    "Vehicle": "vehicle_cls.results",
    "Detection": "vehicle_cls.results",
    "Detections": "vehicle_cls.results",
    "ImageError": "vehicle_cls.io.images",
    "load_image": "vehicle_cls.io.images",
    "from_bgr": "vehicle_cls.io.images",
}

__all__ = sorted(_PUBLIC) + ["__version__"]

if TYPE_CHECKING:  # pragma: no cover
    # re-exported for type checkers (``X as X``); at run time __getattr__ imports them lazily
    from vehicle_cls.classifier import Classifier as Classifier
    from vehicle_cls.cropper import Cropper as Cropper
    from vehicle_cls.cropper import CropPolicy as CropPolicy
    from vehicle_cls.io.images import ImageError as ImageError
    from vehicle_cls.io.images import from_bgr as from_bgr
    from vehicle_cls.io.images import load_image as load_image
    from vehicle_cls.pipeline import Pipeline as Pipeline
    from vehicle_cls.results import Detection as Detection
    from vehicle_cls.results import Detections as Detections
    from vehicle_cls.results import Result as Result
    from vehicle_cls.results import Vehicle as Vehicle


class _NoTritonAfterTensorflow(importlib.abc.MetaPathFinder):
    """Refuse to load triton once TensorFlow is loaded: that order segfaults the process (torch 2.14 /
    triton 3.8 / tensorflow 2.21 on Linux; torchvision loads triton). torch then runs without triton
    (no torch.compile on GPU in this process) instead of crashing. Loading triton first (import
    torchvision or vehicle_cls.classifier.keras.loading before tensorflow) keeps it and is safe."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if "tensorflow" in sys.modules and "triton" not in sys.modules:
            sys.modules["triton"] = None  # type: ignore[assignment]  # "not installed" for import and find_spec
            logging.getLogger(__name__).warning(
                "tensorflow was imported before torchvision; triton is disabled in this process "
                "(loading it after tensorflow crashes). Import torchvision before tensorflow to keep it."
            )
        return None


if not any(isinstance(f, _NoTritonAfterTensorflow) for f in sys.meta_path):
    sys.meta_path.insert(0, _NoTritonAfterTensorflow())


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _PUBLIC, name)


def __dir__() -> list[str]:
    return __all__
