"""How images become a Keras model's input and its output becomes probabilities: the ``"keras"``
section of a Keras bundle's ``config.json`` (``KerasSettings``) and the names it may hold."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from vehicle_cls.bundle import CONFIG_NAME
from vehicle_cls.fromdict import strict_from_dict

KerasPreprocessMode = Literal["caffe", "tf", "torch", "none"]
KerasResize = Literal["squash", "center_crop", "letterbox"]

MODEL_FILE = "model.keras"
CONFIG_FILE = CONFIG_NAME
PREPROCESS_MODES = ("caffe", "tf", "torch", "none")
RESIZE_MODES = ("squash", "center_crop", "letterbox")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "area", "lanczos3", "lanczos5")
OUTPUT_KINDS = ("auto", "probabilities", "logits")


@dataclass
class KerasSettings:
    """How images become the Keras model's input: the part of ``config.json["keras"]`` we own."""

    model_file: str = MODEL_FILE
    preprocess: KerasPreprocessMode = "caffe"  # keras.applications.imagenet_utils modes, or "none"
    input_size: int = 224
    resize: KerasResize = "squash"  # squash; center_crop = crop to square then resize; letterbox = pad
    interpolation: str = "bilinear"  # keras.ops.image.resize method (what image_dataset_from_directory uses)
    output: str = "auto"  # "auto": softmax only when the final activation is not softmax

    def __post_init__(self) -> None:
        if self.preprocess not in PREPROCESS_MODES:
            raise ValueError(f"keras preprocess must be one of {PREPROCESS_MODES}, got {self.preprocess!r}")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"keras resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"keras interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if self.output not in OUTPUT_KINDS:
            raise ValueError(f"keras output must be one of {OUTPUT_KINDS}, got {self.output!r}")
        if isinstance(self.input_size, bool) or not 0 < int(self.input_size) == self.input_size <= 4096:
            raise ValueError(f"keras input_size must be a whole number of pixels in 1..4096, got {self.input_size!r}")
        self.input_size = int(self.input_size)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "", prefix: str = "keras.") -> KerasSettings:
        """Inverse of ``to_dict``; an unknown key is an error naming ``source`` and the key (like every
        other section of ``config.json``: a misspelt setting must not silently fall back to a default)."""
        return strict_from_dict(cls, d, source=source, prefix=prefix)
