"""``Classifier``: a torchvision backbone with a new head, its class names and its preprocessing.

Saved and loaded as a bundle directory (see ``bundle.py``); ``Classifier.load`` also opens Keras
bundles (``"backend": "keras"``) through ``keras_backend`` so that ``predict`` works for both.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vehicle_cls.classifier import bundle
from vehicle_cls.classifier.factory import create_model, get_head, head_path
from vehicle_cls.classifier.preprocess import Preprocess, preprocess_images
from vehicle_cls.fastpath import InferenceCopies, classify_logits
from vehicle_cls.results import Prediction

logger = logging.getLogger(__name__)

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Classifier:
    """Class probabilities for vehicle crops; build with ``create`` or ``load``, never by hand."""

    def __init__(
        self,
        model: nn.Module | None,
        arch: str,
        classes: Sequence[str],
        preprocess: Preprocess | None = None,
        device: str | torch.device = "cpu",
        dropout: float = 0.2,
        training: dict[str, Any] | None = None,
        cropper_config: dict[str, Any] | None = None,
        keras: Any = None,
    ):
        if (model is None) == (keras is None):
            raise ValueError("Classifier needs exactly one of a torch model or a Keras backend")
        self.classes: list[str] = list(classes)
        if not self.classes or len(set(self.classes)) != len(self.classes):
            raise ValueError("classes must be a non-empty list of distinct names")
        self.arch = arch
        self.dropout = float(dropout)
        self.preprocess = preprocess if preprocess is not None or keras is not None else Preprocess()
        self.training = training  # summary written by the trainer, kept across save/load
        self.cropper_config = cropper_config  # cropper settings stored in the bundle (or None)
        self.keras = keras
        self.model = model
        self._fast = InferenceCopies()  # bf16/fp16 inference copies of ``model`` (vehicle_cls.fastpath)
        self.device = torch.device(device)
        if model is not None:
            n_out = get_head(model, arch).out_features
            if n_out != len(self.classes):
                raise ValueError(f"head has {n_out} outputs but {len(self.classes)} classes were given")
            self.model = model.to(self.device).eval()

    @property
    def backend(self) -> str:
        return "keras" if self.keras is not None else "torch"

    def __repr__(self) -> str:
        return (f"Classifier(arch={self.arch!r}, backend={self.backend!r}, classes={len(self.classes)}, "
                f"preprocess={self.preprocess}, device={str(self.device)!r})")

    @classmethod
    def create(
        cls,
        arch: str = "resnet50",
        classes: Sequence[str] = (),
        weights: str | None = None,
        dropout: float = 0.2,
        preprocess: Preprocess | None = None,
        device: str | torch.device = "cpu",
        progress: bool = True,
    ) -> Classifier:
        """A new classifier: ``arch`` from torchvision (``weights="imagenet"`` or None) + new head."""
        classes = list(classes)
        if not classes:
            raise ValueError("Classifier.create needs the class names (classes=[...])")
        model = create_model(arch, len(classes), weights=weights, dropout=dropout, progress=progress)
        return cls(model, arch, classes, preprocess or Preprocess(), device, dropout)

    def to(self, device: str | torch.device) -> Classifier:
        """Move the model to ``device`` (in place) and return self."""
        self.device = torch.device(device)
        if self.model is not None:
            self.model.to(self.device)
        if self.keras is not None:
            self.keras.to(str(self.device))
        return self

    # ---- bundle -----------------------------------------------------------------------------
    def save(
        self,
        directory: str | os.PathLike,
        training: dict[str, Any] | None = None,
        cropper: dict[str, Any] | None = None,
    ) -> Path:
        """Write ``directory/model.safetensors`` + ``config.json`` (all that ``load`` needs)."""
        training = training if training is not None else self.training
        cropper = cropper if cropper is not None else self.cropper_config
        directory = Path(directory)
        if self.keras is not None:
            return Path(self.keras.save(directory, training=training, cropper=cropper))
        assert self.preprocess is not None and self.model is not None
        config = bundle.make_config(
            backend="torch", arch=self.arch, classes=self.classes, dropout=self.dropout,
            preprocess=self.preprocess.to_dict(), cropper=cropper, training=training,
        )
        model = getattr(self.model, "_orig_mod", self.model)  # torch.compile wrapper -> plain names
        return bundle.write_torch_bundle(directory, model.state_dict(), config)

    @classmethod
    def load(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> Classifier:
        """Open a bundle (torch or Keras); refuses weights that do not fit ``config.json``."""
        config = bundle.read_config(directory)
        backend = config.get("backend", "torch")
        if backend == "keras":
            return cls._load_keras(directory, config, device)
        if backend != "torch":
            raise bundle.BundleError(f"{directory}: unknown backend {backend!r} (expected 'torch' or 'keras')")
        arch, classes = config["arch"], config["classes"]
        try:
            preprocess = Preprocess.from_dict(config["preprocess"])
            model = create_model(arch, len(classes), weights=None, dropout=config.get("dropout") or 0.0)
        except (ValueError, TypeError) as exc:
            raise bundle.BundleError(f"{Path(directory) / bundle.CONFIG_NAME}: {exc}") from None
        state = bundle.read_weights(directory)
        bundle.check_weights_fit(
            model.state_dict(), state, head_weight_key=_head_weight_key(model, arch),
            num_classes=len(classes), arch=arch, where=str(directory),
        )
        model.load_state_dict(state, strict=True)
        return cls(model, arch, classes, preprocess, device, config.get("dropout") or 0.0,
                   training=config.get("training"), cropper_config=config.get("cropper"))

    @classmethod
    def _load_keras(cls, directory: str | os.PathLike, config: dict, device: str | torch.device) -> Classifier:
        try:
            from vehicle_cls.classifier.keras_backend import KerasBackend
        except ImportError as exc:
            raise ImportError(
                f"{directory} is a Keras bundle; it needs TensorFlow: pip install vehicle-cls[keras] ({exc})"
            ) from exc
        backend = KerasBackend.load(directory, device=str(device))
        return cls(None, config.get("arch") or "keras", config["classes"], None, device,
                   config.get("dropout") or 0.0, training=config.get("training"),
                   cropper_config=config.get("cropper"), keras=backend)

    # ---- inference --------------------------------------------------------------------------
    def predict_proba(self, batch: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
        """Softmax probabilities (N, C) float32 for a preprocessed NCHW batch (torch backend)."""
        if self.model is None:
            raise TypeError("predict_proba(tensor) needs the torch backend; use predict_proba_images")
        if precision not in AUTOCAST_DTYPES:
            raise ValueError(f"precision must be one of {sorted(AUTOCAST_DTYPES)}, not {precision!r}")
        return classify_logits(self._fast, self.model, batch, precision, self.device).softmax(dim=1)

    def predict_proba_images(self, images: Sequence[np.ndarray], precision: str = "fp32") -> np.ndarray:
        """Softmax probabilities (N, C) for RGB uint8 HxWx3 images (either backend)."""
        if self.keras is not None:
            return np.asarray(self.keras.predict_proba(list(images)), dtype=np.float32)
        assert self.preprocess is not None
        with torch.inference_mode():
            batch = preprocess_images(list(images), self.preprocess, self.device)
        return self.predict_proba(batch, precision).cpu().numpy()

    def predict(self, images: Any, topk: int = 5, batch_size: int = 32, **kwargs: Any) -> list[Prediction]:
        """One ``Prediction`` per image (whole images, no cropper); bad inputs get ``error`` set."""
        from vehicle_cls.pipeline import Pipeline

        pipe = Pipeline(None, self, device=self.device, batch_size=batch_size, **kwargs)
        return pipe(images, topk=topk)


def _head_weight_key(model: nn.Module, arch: str) -> str:
    path = head_path(arch)
    head = model.get_submodule(path)
    return f"{path}.{len(head) - 1}.weight" if isinstance(head, nn.Sequential) else f"{path}.weight"

