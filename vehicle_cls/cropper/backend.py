"""The one interface every detector backend implements (``TorchDetectorBackend``, ``Detectron2DetectorBackend``).

A backend owns its network, weights and test settings; ``Cropper`` and ``Pipeline`` only use the members
below and learn what it can do from ``capabilities``, never from its name or its attributes.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from vehicle_cls.cropper.rcnn import InferenceSettings
from vehicle_cls.results import Detections
from vehicle_cls.runtime import Capabilities


@runtime_checkable
class DetectorBackend(Protocol):
    """What ``Cropper`` needs from a detector backend."""

    name: str  # "torch" | "detectron2": the bundle's cropper "backend" entry
    config: str
    settings: InferenceSettings
    device: torch.device
    precision: str  # the precision it runs now
    channels_last: bool

    @property
    def capabilities(self) -> Capabilities:
        """Precisions it runs, whether it uses device images where they lie, whether it predicts masks."""

    def set_precision(self, precision: str, parts: tuple[str, ...] | None = None) -> None:
        """Run in ``precision`` (already resolved, one of ``capabilities.precisions``) from now on; ``parts``:
        which parts of the network run in it (None: the backend's default; only the torch backend has parts)."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The weights, with detectron2's names."""

    def __call__(self, images: list[Any]) -> list[Detections]:
        """One forward pass: ``Detections`` (original pixels) per RGB uint8 HxWx3 image (an array, or a
        tensor where ``capabilities.device_images``)."""
