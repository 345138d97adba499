"""Run classifiers trained the Keras way (``.keras`` or legacy ``.h5``) behind the bundle interface.

The course project this library grows from trained ``keras.applications.ResNet50(include_top=False,
pooling="avg")`` + ``preprocess_input`` (caffe style) + Dropout + Dense(N, softmax). ``KerasBackend``
loads such a model (or any Keras image classifier), applies the preprocessing it was trained with,
and saves/loads it as a bundle directory (``model.keras`` + ``config.json`` in ``bundle.py``'s layout
with ``"backend": "keras"`` and a ``"keras"`` section: model_file, preprocess, input_size, resize,
interpolation, output) that ``Classifier.load`` dispatches to. TensorFlow is imported lazily.
"""
from __future__ import annotations

import json
import logging
import os
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vehicle_cls.classifier import bundle
from vehicle_cls.errors import one_line
from vehicle_cls.fileio import atomic_directory
from vehicle_cls.fromdict import strict_from_dict

logger = logging.getLogger(__name__)

KerasPreprocessMode = Literal["caffe", "tf", "torch", "none"]
KerasResize = Literal["squash", "center_crop", "letterbox"]

MODEL_FILE = "model.keras"
CONFIG_FILE = bundle.CONFIG_NAME
PREPROCESS_MODES = ("caffe", "tf", "torch", "none")
RESIZE_MODES = ("squash", "center_crop", "letterbox")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "area", "lanczos3", "lanczos5")
OUTPUT_KINDS = ("auto", "probabilities", "logits")

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # keras.applications "caffe" mode, BGR order, 0-255
TORCH_MEAN_RGB = (0.485, 0.456, 0.406)  # keras.applications "torch" mode, RGB order, 0-1
TORCH_STD_RGB = (0.229, 0.224, 0.225)

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
        raise ImportError(
            f"Keras models need TensorFlow, which is not installed ({exc}); run: {INSTALL_HINT}"
        ) from exc
    return keras


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
        if int(self.input_size) <= 0:
            raise ValueError(f"keras input_size must be positive, got {self.input_size!r}")
        self.input_size = int(self.input_size)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "", prefix: str = "keras.") -> KerasSettings:
        """Inverse of ``to_dict``; an unknown key is an error naming ``source`` and the key (like every
        other section of ``config.json``: a misspelt setting must not silently fall back to a default)."""
        return strict_from_dict(cls, d, source=source, prefix=prefix)


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


class KerasBackend:
    """A Keras image classifier with its class names and the preprocessing it was trained with."""

    name = "keras"
    fork_safe = False  # TensorFlow must not be used in forked DataLoader workers

    def __init__(
        self,
        model: Any,
        classes: Sequence[str],
        settings: KerasSettings | None = None,
        device: str = "cpu",
        source: str = "<keras model>",
    ):
        self.model = model
        self.classes = [str(c) for c in classes]
        self.settings = settings or KerasSettings()
        self.device = device
        self.source = source
        self.config: dict[str, Any] | None = None  # the bundle's config.json, when loaded from one
        self._check_model()
        activation = final_activation(model)
        if self.settings.output == "probabilities":
            self._outputs_probabilities: bool | None = True
        elif self.settings.output == "logits":
            self._outputs_probabilities = False
        elif activation == "softmax":
            self._outputs_probabilities = True
        elif activation == "linear":
            self._outputs_probabilities = False
        elif activation is None:
            self._outputs_probabilities = None  # unknown structure: decided per row from the values
        else:
            raise ValueError(
                f"{source}: the model's final activation is {activation!r}; only softmax or linear (logits) "
                "outputs are supported for single-label classification (set output='probabilities' to override)"
            )

    # construction ---------------------------------------------------------------------------
    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        classes: Sequence[str],
        preprocess: KerasPreprocessMode = "caffe",
        input_size: int | None = None,
        resize: KerasResize = "squash",
        *,
        interpolation: str = "bilinear",
        output: str = "auto",
        device: str = "cpu",
    ) -> KerasBackend:
        """Load a ``.keras`` / ``.h5`` model; ``input_size`` defaults to the model's own (else 224)."""
        model = load_keras_model(path)
        fixed = _model_input_size(model)
        if input_size is None:
            input_size = fixed or 224
        elif fixed is not None and int(input_size) != fixed:
            raise ValueError(
                f"{os.fspath(path)}: input_size={input_size} but the model takes {fixed}x{fixed} images"
            )
        settings = KerasSettings(
            preprocess=preprocess, input_size=int(input_size), resize=resize,
            interpolation=interpolation, output=output,
        )
        return cls(model, classes, settings, device=device, source=os.fspath(path))

    @classmethod
    def load(cls, directory: str | os.PathLike[str], device: Any = "cpu") -> KerasBackend:
        """Load a bundle directory written by ``save`` (``config.json`` with ``"backend": "keras"``)."""
        directory = Path(directory)
        config = bundle.read_config(directory)
        if config.get("backend") != "keras":
            raise ValueError(f"{directory / CONFIG_FILE}: backend is {config.get('backend')!r}, not 'keras'")
        if "classes" not in config or "keras" not in config:
            raise ValueError(f"{directory / CONFIG_FILE}: a keras bundle needs 'classes' and 'keras' entries")
        settings = KerasSettings.from_dict(config["keras"], source=str(directory / CONFIG_FILE))
        model_path = directory / settings.model_file
        model = load_keras_model(model_path)
        fixed = _model_input_size(model)
        if fixed is not None and fixed != settings.input_size:
            raise ValueError(
                f"{directory / CONFIG_FILE}: input_size={settings.input_size} but {model_path.name} "
                f"takes {fixed}x{fixed} images"
            )
        backend = cls(model, config["classes"], settings, device=str(device), source=os.fspath(model_path))
        backend.config = config
        return backend

    def save(
        self,
        directory: str | os.PathLike[str],
        training: dict[str, Any] | None = None,
        cropper: dict[str, Any] | None = None,
    ) -> Path:
        """Write ``model.keras`` and our fields of ``config.json`` (other fields already there are kept),
        swapped in as one directory like a torch bundle, so a kill never mixes two saves."""
        directory = Path(directory)
        self.settings.model_file = MODEL_FILE
        previous = _read_json_or_empty(directory / CONFIG_FILE)
        config = {**previous, **self.to_config(
            training=training if training is not None else previous.get("training"),
            cropper=cropper if cropper is not None else previous.get("cropper"),
        )}
        with atomic_directory(directory) as tmp:
            self.model.save(os.fspath(tmp / MODEL_FILE))
            (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        return directory

    def to_config(
        self, training: dict[str, Any] | None = None, cropper: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The bundle's ``config.json`` (``bundle.make_config`` layout) with our ``"keras"`` section."""
        return bundle.make_config(
            backend="keras", arch="keras", classes=list(self.classes), preprocess=None,  # type: ignore[arg-type]
            cropper=cropper, training=training,
            extra={"weights": self.settings.model_file, "keras": self.settings.to_dict()},
        )

    # inference -------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_size(self) -> int:
        return self.settings.input_size

    def to(self, device: Any) -> KerasBackend:
        """Run on ``device`` ("cpu", "cuda", "cuda:1", "gpu"); returns self, like ``nn.Module.to``."""
        self.device = str(device)
        return self

    def preprocess_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Resize each RGB uint8 HWC image to the model input and apply the training preprocessing."""
        keras = import_keras()
        size = (self.settings.input_size, self.settings.input_size)
        out = np.empty((len(images), *size, 3), dtype=np.float32)
        for i, image in enumerate(images):
            image = _check_image(image, i)
            resized = keras.ops.image.resize(
                image.astype(np.float32),
                size,
                interpolation=self.settings.interpolation,
                antialias=False,
                crop_to_aspect_ratio=self.settings.resize == "center_crop",
                pad_to_aspect_ratio=self.settings.resize == "letterbox",
                fill_mode="constant",
                fill_value=0.0,
                data_format="channels_last",
            )
            out[i] = keras.ops.convert_to_numpy(resized)
        return preprocess_array(out, self.settings.preprocess)

    def predict_proba(self, images: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """Class probabilities (N, C) for RGB uint8 HWC images, in input order."""
        if len(images) == 0:
            return np.zeros((0, self.num_classes), dtype=np.float32)
        rows = []
        with self._device_scope():
            for start in range(0, len(images), batch_size):
                x = self.preprocess_images(images[start : start + batch_size])
                y = np.asarray(self.model.predict_on_batch(x), dtype=np.float32)
                rows.append(self._to_probabilities(y.reshape(len(x), -1)))
        return np.concatenate(rows, axis=0)

    # the Classifier backend interface (same as TorchBackend) ----------------------------------
    def use_channels_last(self) -> None:
        """Nothing to do: memory layout is Keras' business."""

    def transform(self, image: Any) -> Any:
        """One image (RGB uint8 HxWx3 array or PIL image) -> its preprocessed NHWC model input row,
        as a float32 torch tensor (so DataLoaders can stack it)."""
        import torch

        from vehicle_cls.io.images import load_image

        return torch.from_numpy(self.preprocess_images([load_image(image)])[0])

    def predict_batch(self, batch: Any, precision: str = "fp32") -> Any:
        """Probabilities (N, C) as a float32 torch tensor for a stack of ``transform`` outputs
        (Keras runs in its own precision; ``precision`` is accepted for the common interface)."""
        import torch

        x = np.asarray(batch.numpy() if hasattr(batch, "numpy") else batch, dtype=np.float32)
        if len(x) == 0:
            return torch.zeros((0, self.num_classes))
        with self._device_scope():
            y = np.asarray(self.model.predict_on_batch(x), dtype=np.float32)
        return torch.from_numpy(self._to_probabilities(y.reshape(len(x), -1)))

    def prepare_crops(self, image: np.ndarray, choices: Sequence[Any], mask_fill: Sequence[int] = (124, 116, 104),
                      tensor: Any = None) -> list[np.ndarray]:
        """The chosen crops of one RGB image, cut on the CPU (mask mode blanks with ``mask_fill``);
        resizing and ``preprocess_input`` happen in ``classify``."""
        from vehicle_cls.cropper.policy import CropPolicy, apply_crop

        policy = CropPolicy(mask_fill=tuple(mask_fill))
        return [apply_crop(image, c, policy) for c in choices]

    def classify(self, prepared: Sequence[list[np.ndarray]], precision: str = "fp32", batch_size: int = 32) -> np.ndarray:
        """Probabilities (M, C) for the crops of several ``prepare_crops`` calls, in order."""
        crops = [crop for group in prepared for crop in group]
        return self.predict_proba(crops, batch_size=batch_size)

    # helpers ---------------------------------------------------------------------------------
    def _check_model(self) -> None:
        units = _model_output_units(self.model)
        if units is not None and units != len(self.classes):
            raise ValueError(
                f"{self.source}: the model has {units} output units but {len(self.classes)} class names were given"
            )

    def _to_probabilities(self, y: np.ndarray) -> np.ndarray:
        if self._outputs_probabilities is True:
            return y
        if self._outputs_probabilities is False:
            return softmax(y)
        already = (y >= 0).all(axis=1) & (np.abs(y.sum(axis=1) - 1.0) < 1e-3)
        return np.where(already[:, None], y, softmax(y))

    def _device_scope(self) -> Any:
        import contextlib

        keras = import_keras()
        if keras.backend.backend() != "tensorflow":
            return contextlib.nullcontext()
        import tensorflow as tf

        device = self.device.lower()
        if device == "cpu":
            return tf.device("/CPU:0")
        if device.startswith(("cuda", "gpu")):
            index = device.split(":", 1)[1] if ":" in device else "0"
            return tf.device(f"/GPU:{index}")
        return tf.device(self.device)

    def __repr__(self) -> str:
        return (
            f"KerasBackend(source={self.source!r}, classes={self.num_classes}, "
            f"preprocess={self.settings.preprocess!r}, input_size={self.settings.input_size}, "
            f"resize={self.settings.resize!r}, device={self.device!r})"
        )


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


def _read_json_or_empty(path: Path) -> dict[str, Any]:
    """An existing ``config.json`` whose other fields (cropper, training) a save must keep."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); remove it or choose another directory") from exc
    return data if isinstance(data, dict) else {}


def _is_hdf5(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == b"\x89HDF\r\n\x1a\n"


def _model_output_units(model: Any) -> int | None:
    shape = _first_shape(getattr(model, "output_shape", None))
    if shape is None or len(shape) < 2 or shape[-1] is None:
        return None
    return int(shape[-1])


def _model_input_size(model: Any) -> int | None:
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


def _check_image(image: Any, index: int) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        desc = f"shape={getattr(image, 'shape', None)} dtype={getattr(image, 'dtype', type(image).__name__)}"
        raise ValueError(f"image {index}: expected an RGB uint8 HxWx3 array, got {desc}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image {index}: empty image {image.shape}")
    return image
