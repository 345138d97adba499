"""keras.applications-style ``preprocess_input`` on numpy pixels, the input check, and softmax for
models that output logits."""

from __future__ import annotations

from typing import Any

import numpy as np

from vehicle_cls.classifier.keras.settings import PREPROCESS_MODES

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # keras.applications "caffe" mode, BGR order, 0-255
TORCH_MEAN_RGB = (0.485, 0.456, 0.406)  # keras.applications "torch" mode, RGB order, 0-1
TORCH_STD_RGB = (0.229, 0.224, 0.225)


def preprocess_array(batch: np.ndarray, mode: str) -> np.ndarray:
    """Apply a keras.applications-style ``preprocess_input`` to float RGB 0-255 NHWC pixels."""
    x = np.asarray(batch, dtype=np.float32)
    if mode == "caffe":
        return x[..., ::-1] - np.asarray(CAFFE_MEAN_BGR, dtype=np.float32)
    if mode == "tf":
        return x / 127.5 - 1.0
    if mode == "torch":
        return (x / 255.0 - np.asarray(TORCH_MEAN_RGB, dtype=np.float32)) / np.asarray(TORCH_STD_RGB, dtype=np.float32)
    if mode == "none":
        return x
    raise ValueError(f"unknown keras preprocess mode {mode!r}; expected one of {PREPROCESS_MODES}")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def check_image(image: Any, index: int) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        desc = f"shape={getattr(image, 'shape', None)} dtype={getattr(image, 'dtype', type(image).__name__)}"
        raise ValueError(f"image {index}: expected an RGB uint8 HxWx3 array, got {desc}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image {index}: empty image {image.shape}")
    return image
