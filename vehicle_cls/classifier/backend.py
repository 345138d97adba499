"""The one interface every classifier backend implements (``TorchClassifierBackend``, ``KerasBackend``).

A backend owns its model, its class names and its preprocessing; callers (``Classifier``,
``Pipeline``, evaluation) only use the members below and learn what it can do from ``capabilities``
(precisions, device images, compile, memory-sized batches), never from its name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from vehicle_cls.bundle import BundlePart
from vehicle_cls.crops import CropChoice
from vehicle_cls.runtime import Capabilities


@runtime_checkable
class ClassifierBackend(Protocol):
    """What ``Classifier`` needs from a backend."""

    name: str  # "torch" | "keras": the bundle's "backend" entry
    classes: list[str]
    fork_safe: bool  # False: its ``transform`` must not run in forked DataLoader workers

    @property
    def capabilities(self) -> Capabilities:
        """What it runs: precisions, whether it takes device images, compiles, sizes batches to memory."""

    def to(self, device: Any) -> ClassifierBackend:
        """Run on ``device``; returns self."""

    def use_channels_last(self) -> None:
        """Prefer the channels-last memory layout where it helps (a no-op where it does not apply)."""

    def bundle_part(self) -> BundlePart:
        """Our share of a bundle: ``config.json`` entries (backend, classes, ...) and weights files."""

    def transform(self, image: Any) -> Any:
        """One RGB image -> its model input as a tensor that ``predict_batch`` takes stacked."""

    def predict_batch(self, batch: Any, precision: str = "fp32") -> Any:
        """Probabilities (N, C) as a float32 torch tensor for a stack of ``transform`` outputs
        (``precision``: resolved, one of ``capabilities.precisions``)."""

    def prepare_crops(
        self, image: np.ndarray, choices: Sequence[CropChoice], mask_fill: Sequence[int] = ..., tensor: Any = None
    ) -> Any:
        """Model inputs for the chosen crops (box, mask) of one RGB image."""

    def classify(self, prepared: Sequence[Any], precision: str = "fp32", batch_size: int | None = ...) -> np.ndarray:
        """Probabilities (M, C) for the crops of several ``prepare_crops`` results, in order
        (``batch_size`` None: the backend's choice, e.g. the torch one sizes it to free CUDA memory)."""
