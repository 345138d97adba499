"""``StandInCropper``: the members ``Pipeline`` uses from a cropper besides ``detect`` and ``policy``, for
test and example croppers without a network (they run any precision, take CPU images, predict no masks)."""

from __future__ import annotations

from typing import Any

from vehicle_cls.runtime import Capabilities


class StandInCropper:
    """Base for a cropper stand-in: subclasses give ``detect(images, batch_size=None)`` and ``policy``."""

    capabilities = Capabilities(precisions=("fp32", "bf16", "fp16"))
    precision = "fp32"

    def set_precision(self, precision: str) -> None:
        self.precision = precision

    def to_config(self) -> dict[str, Any]:
        return {"config": f"{type(self).__name__} (test stand-in)"}
