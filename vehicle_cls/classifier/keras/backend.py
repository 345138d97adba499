"""Run classifiers trained the Keras way (``.keras`` or legacy ``.h5``) behind the bundle interface.

The course project this library grows from trained ``keras.applications.ResNet50(include_top=False,
pooling="avg")`` + ``preprocess_input`` (caffe style) + Dropout + Dense(N, softmax). ``KerasBackend``
loads such a model (or any Keras image classifier), applies the preprocessing it was trained with,
and saves/loads it as a bundle directory (``model.keras`` + ``config.json`` in ``vehicle_cls.bundle``'s layout
with ``"backend": "keras"`` and a ``"keras"`` section: model_file, preprocess, input_size, resize,
interpolation, output) that ``Classifier.load`` dispatches to. TensorFlow is imported lazily.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vehicle_cls.bundle import BundlePart, read_config, read_config_if_any, write_bundle
from vehicle_cls.classifier.keras.loading import (
    final_activation,
    import_keras,
    load_keras_model,
    model_input_size,
    model_output_units,
)
from vehicle_cls.classifier.keras.preprocessing import check_image, preprocess_array, softmax
from vehicle_cls.classifier.keras.settings import (
    CONFIG_FILE,
    MODEL_FILE,
    KerasPreprocessMode,
    KerasResize,
    KerasSettings,
)
from vehicle_cls.crops import DEFAULT_MASK_FILL, CropChoice, cut
from vehicle_cls.runtime import Capabilities, check_precision


class KerasBackend:
    """A Keras image classifier with its class names and the preprocessing it was trained with."""

    name = "keras"
    fork_safe = False  # TensorFlow must not be used in forked DataLoader workers
    # Keras runs in its model's own dtype policy (reported as fp32); crops are cut on the CPU, no torch.compile
    capabilities = Capabilities(precisions=("fp32",), masks=True)

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
        fixed = model_input_size(model)
        if input_size is None:
            input_size = fixed or 224
        elif fixed is not None and int(input_size) != fixed:
            raise ValueError(f"{os.fspath(path)}: input_size={input_size} but the model takes {fixed}x{fixed} images")
        settings = KerasSettings(
            preprocess=preprocess,
            input_size=int(input_size),
            resize=resize,
            interpolation=interpolation,
            output=output,
        )
        return cls(model, classes, settings, device=device, source=os.fspath(path))

    @classmethod
    def load(
        cls, directory: str | os.PathLike[str], device: Any = "cpu", config: dict[str, Any] | None = None
    ) -> KerasBackend:
        """Load a bundle directory written by ``save`` (``config.json`` with ``"backend": "keras"``;
        ``config``: its content when already read)."""
        directory = Path(directory)
        config = config if config is not None else read_config(directory)
        if config.get("backend") != "keras":
            raise ValueError(f"{directory / CONFIG_FILE}: backend is {config.get('backend')!r}, not 'keras'")
        if "classes" not in config or "keras" not in config:
            raise ValueError(f"{directory / CONFIG_FILE}: a keras bundle needs 'classes' and 'keras' entries")
        settings = KerasSettings.from_dict(config["keras"], source=str(directory / CONFIG_FILE))
        model_path = directory / settings.model_file
        model = load_keras_model(model_path)
        fixed = model_input_size(model)
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
        """Write a bundle of this model alone, keeping the other fields of a ``config.json`` already
        there (its cropper section and training summary unless given), in one directory swap."""
        previous = read_config_if_any(directory)
        training = training if training is not None else previous.get("training")
        cropper = cropper if cropper is not None else previous.get("cropper")
        return write_bundle(
            directory,
            self.bundle_part(),
            cropper=None if cropper is None else BundlePart(cropper),
            training=training,
            base=previous,
        )

    def bundle_part(self) -> BundlePart:
        """Our share of a bundle: classes, the ``"keras"`` settings section and ``model.keras``."""
        self.settings.model_file = MODEL_FILE
        entries = {
            "backend": "keras",
            "arch": "keras",
            "classes": list(self.classes),
            "dropout": None,
            "preprocess": None,
            "weights": MODEL_FILE,
            "keras": self.settings.to_dict(),
        }
        return BundlePart(entries, {MODEL_FILE: lambda path: self.model.save(os.fspath(path))})

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
            image = check_image(image, i)
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

    # the Classifier backend interface (same as TorchClassifierBackend) ----------------------------------
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
        (Keras runs in its own precision: ``capabilities`` declares fp32 only)."""
        import torch

        check_precision(precision, self.capabilities, "the keras classifier")
        x = np.asarray(batch.numpy() if hasattr(batch, "numpy") else batch, dtype=np.float32)
        if len(x) == 0:
            return torch.zeros((0, self.num_classes))
        with self._device_scope():
            y = np.asarray(self.model.predict_on_batch(x), dtype=np.float32)
        return torch.from_numpy(self._to_probabilities(y.reshape(len(x), -1)))

    def prepare_crops(
        self,
        image: np.ndarray,
        choices: Sequence[CropChoice],
        mask_fill: Sequence[int] = DEFAULT_MASK_FILL,
        tensor: Any = None,
    ) -> list[np.ndarray]:
        """The chosen crops of one RGB image, cut on the CPU (mask mode blanks with ``mask_fill``);
        resizing and ``preprocess_input`` happen in ``classify``."""
        return [cut(image, c, tuple(mask_fill)) for c in choices]

    def classify(
        self, prepared: Sequence[list[np.ndarray]], precision: str = "fp32", batch_size: int | None = 32
    ) -> np.ndarray:
        """Probabilities (M, C) for the crops of several ``prepare_crops`` calls, in order (None: 32 at a time)."""
        check_precision(precision, self.capabilities, "the keras classifier")
        crops = [crop for group in prepared for crop in group]
        return self.predict_proba(crops, batch_size=32 if batch_size is None else batch_size)

    # helpers ---------------------------------------------------------------------------------
    def _check_model(self) -> None:
        units = model_output_units(self.model)
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
