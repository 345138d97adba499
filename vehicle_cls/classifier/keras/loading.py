"""Importing Keras and reading models: ``import_keras`` (TensorFlow, imported lazily, after triton),
``load_keras_model`` with one-line errors naming the file, and what a loaded model says about its
input size, output units and final activation."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

from vehicle_cls.errors import one_line

INSTALL_HINT = "pip install vehicle-cls[keras]"


def import_keras() -> Any:
    """Import Keras (through TensorFlow) or fail with the extra to install.

    torchvision is imported first on purpose: it loads triton (where installed), and loading
    triton *after* TensorFlow 2.21 crashes the process (segfault), e.g. when a Pipeline later
    crops with torchvision.ops. Loading TensorFlow after triton is safe.
    """
    import torchvision  # noqa: F401  (order matters: before tensorflow)

    try:
        import tensorflow  # noqa: F401  (the keras extra is tensorflow; Keras 3 ships with it)
        import keras  # isort: skip
    except ImportError as exc:
        raise ImportError(f"Keras models need TensorFlow, which is not installed ({exc}); run: {INSTALL_HINT}") from exc
    return keras


def final_activation(model: Any) -> str | None:
    """Name of the activation that produces the model's output ("softmax", "linear", ...), or None."""
    layer = model.layers[-1] if getattr(model, "layers", None) else None
    while layer is not None:
        kind = type(layer).__name__
        if kind == "Softmax":
            return "softmax"
        activation = getattr(layer, "activation", None)
        if activation is not None:
            name = getattr(activation, "__name__", None) or str(activation)
            return str(name).lower()
        sublayers = getattr(layer, "layers", None)  # a nested Sequential/Functional model
        if sublayers:
            layer = sublayers[-1]
            continue
        if kind in ("Dropout", "Identity", "Flatten", "Reshape"):  # pass-through layers: look one further
            layer = _previous_layer(model, layer)
            continue
        return None
    return None


def _previous_layer(model: Any, layer: Any) -> Any:
    layers = list(getattr(model, "layers", []))
    try:
        index = layers.index(layer)
    except ValueError:
        return None
    return layers[index - 1] if index > 0 else None


def load_keras_model(path: str | os.PathLike[str]) -> Any:
    """``keras.models.load_model`` without compiling, with one-line errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: Keras model file not found")
    suffix = path.suffix.lower()
    if suffix == ".keras" and not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a Keras model (a .keras file is a zip archive; this one is not)")
    if suffix in (".h5", ".hdf5") and not _is_hdf5(path):
        raise ValueError(f"{path}: not a Keras model (not an HDF5 file)")
    if suffix not in (".keras", ".h5", ".hdf5"):
        raise ValueError(f"{path}: unsupported Keras model file; expected .keras or .h5")
    keras = import_keras()
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # keras raises many types for damaged files
        reason = one_line(exc)[:300]
        raise ValueError(f"{path}: could not load the Keras model: {type(exc).__name__}: {reason}") from exc


def _is_hdf5(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == b"\x89HDF\r\n\x1a\n"


def model_output_units(model: Any) -> int | None:
    shape = _first_shape(getattr(model, "output_shape", None))
    if shape is None or len(shape) < 2 or shape[-1] is None:
        return None
    return int(shape[-1])


def model_input_size(model: Any) -> int | None:
    """The fixed square input size of an NHWC model, or None when it takes any size."""
    shape = _first_shape(getattr(model, "input_shape", None))
    if shape is None or len(shape) != 4:
        return None
    height, width = shape[1], shape[2]
    if height is None or width is None:
        return None
    if height != width:
        raise ValueError(f"model input is {height}x{width}; only square inputs are supported")
    return int(height)


def _first_shape(shape: Any) -> tuple | None:
    if shape is None:
        return None
    if isinstance(shape, list) and shape and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    return tuple(shape)
