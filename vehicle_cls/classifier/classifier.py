"""``Classifier``: class probabilities for vehicle crops, with a torch or a Keras backend behind it.

Saved and loaded as a bundle directory (see ``bundle.py``); ``Classifier.load`` opens torch and
Keras bundles (``"backend": "keras"``) alike, and every method works the same for both.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vehicle_cls.bundle import BundleError, BundlePart, read_config, write_bundle
from vehicle_cls.classifier.backend import ClassifierBackend
from vehicle_cls.classifier.factory import create_model
from vehicle_cls.classifier.inference import CropJob, classify_crops, label_crops
from vehicle_cls.classifier.preprocess import Preprocess
from vehicle_cls.classifier.torch_backend import DEFAULT_BATCH_SIZE, TorchClassifierBackend
from vehicle_cls.options import InferenceOptions
from vehicle_cls.results import Result
from vehicle_cls.runtime import DEFAULT_PRECISION, resolve_device, resolve_precision

logger = logging.getLogger(__name__)


class Classifier:
    """Class probabilities for vehicle crops; build with ``create`` or ``load`` (or wrap a model).

    Example:
        ```python
        clf = Classifier.load("run/best")            # a bundle written by training or save
        for result in clf.predict(["car.jpg", "truck.jpg"], topk=3):
            print(result.source, result.best.label, result.best.score)
        ```
    """

    def __init__(
        self,
        model: nn.Module | ClassifierBackend,
        arch: str | None = None,
        classes: Sequence[str] = (),
        preprocess: Preprocess | None = None,
        device: str | torch.device = "cpu",
        dropout: float = 0.2,
        training: dict[str, Any] | None = None,
    ):
        """Wrap a model (or a backend) so that torch and Keras classifiers share one API.

        Args:
            model: a torch ``nn.Module`` (with ``arch``, ``classes``, ``preprocess``) or a backend
                object such as ``KerasBackend`` (which carries its own classes and preprocessing).
            arch: the torchvision architecture name (None: "custom"); torch models only.
            classes: the class names, one per output; torch models only.
            preprocess: how images become model input (None: ``Preprocess()``); torch models only.
            device: where the model runs ("cpu", "cuda", "auto", a ``torch.device``).
            dropout: the head's dropout, recorded in the bundle; torch models only.
            training: the trainer's summary, kept across ``save`` / ``load``.

        Raises:
            ValueError: ``classes`` empty or with duplicate names (a torch model).
            TypeError: ``model`` is neither an ``nn.Module`` nor a classifier backend.
        """
        if isinstance(model, nn.Module):
            classes = list(classes)
            if not classes or len(set(classes)) != len(classes):
                raise ValueError("classes must be a non-empty list of distinct names")
            backend: ClassifierBackend = TorchClassifierBackend(
                model, arch or "custom", classes, preprocess, dropout, device
            )
        elif isinstance(model, ClassifierBackend):
            backend = model.to(resolve_device(device))
        else:
            raise TypeError(f"Classifier needs a torch nn.Module or a classifier backend, not {type(model).__name__}")
        self.backend = backend  # the backend object, as ``Cropper.backend``; ``backend.name`` says which
        self.training = training  # summary written by the trainer, kept across save/load

    # ---- what the backend holds ---------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        return self.backend.classes

    @property
    def arch(self) -> str:
        return getattr(self.backend, "arch", self.backend.name)

    @property
    def dropout(self) -> float:
        return float(getattr(self.backend, "dropout", 0.0))

    @property
    def preprocess(self) -> Any:
        """The torch backend's ``Preprocess`` (a Keras backend keeps its own settings)."""
        return getattr(self.backend, "preprocess", None)

    @property
    def model(self) -> Any:
        return self.backend.model  # type: ignore[attr-defined]

    @model.setter
    def model(self, model: Any) -> None:
        self.backend.model = model  # type: ignore[attr-defined]

    @property
    def device(self) -> torch.device:
        return torch.device(str(self.backend.device))  # type: ignore[attr-defined]

    def resolve_precision(self, precision: str = DEFAULT_PRECISION) -> str:
        """``precision`` as this classifier runs it on its device ("auto": the fastest its backend supports).

        Args:
            precision: "auto", "fp32", "bf16" or "fp16".

        Returns:
            The precision that will run: "fp32", "bf16" or "fp16".

        Raises:
            ValueError: an unknown precision, fp16 without CUDA, or one the backend does not run.
        """
        return resolve_precision(
            precision, self.device, capabilities=self.backend.capabilities, what=f"the {self.backend.name} classifier"
        )

    def __repr__(self) -> str:
        return f"Classifier(arch={self.arch!r}, classes={len(self.classes)}, backend={self.backend!r})"

    @classmethod
    def create(
        cls,
        arch: str = "resnet50",
        classes: Sequence[str] = (),
        weights: str | None = None,
        dropout: float = 0.2,
        preprocess: Preprocess | None = None,
        device: str | torch.device = "auto",
        progress: bool = True,
    ) -> Classifier:
        """A new classifier to train: ``arch`` from torchvision (``weights="imagenet"`` or None) + a new head.

        Args:
            arch: a torchvision classification model name (``supported_archs()`` lists them).
            classes: the class names, one per output (required).
            weights: "imagenet" (torchvision's pretrained backbone, downloaded once) or None (random).
            dropout: dropout before the new head.
            preprocess: how images become model input (None: ``Preprocess()``, ImageNet statistics).
            device: where the model runs ("auto": CUDA when available, else CPU).
            progress: show the weights download's progress bar.

        Returns:
            The classifier, with an untrained head.

        Raises:
            ValueError: no ``classes``, an unsupported ``arch``, or unknown ``weights``.
            WeightsUnavailableError: the ImageNet weights cannot be downloaded or read.
            RuntimeError: a CUDA device was asked for and CUDA is not available.

        Example:
            ```python
            clf = Classifier.create("resnet50", classes=["sedan", "suv", "truck"], weights="imagenet")
            ```
        """
        classes = list(classes)
        if not classes:
            raise ValueError("Classifier.create needs the class names (classes=[...])")
        model = create_model(arch, len(classes), weights=weights, dropout=dropout, progress=progress)
        return cls(model, arch, classes, preprocess or Preprocess(), resolve_device(device), dropout)

    def to(self, device: str | torch.device) -> Classifier:
        """Move the model to ``device`` (in place) and return self, for chaining.

        Args:
            device: "cpu", "cuda", "cuda:1", "auto" or a ``torch.device``.

        Returns:
            This classifier.

        Raises:
            RuntimeError: a CUDA device was asked for and CUDA is not available.
        """
        self.backend.to(resolve_device(device))
        return self

    # ---- bundle -----------------------------------------------------------------------------
    def save(
        self,
        directory: str | os.PathLike,
        training: dict[str, Any] | None = None,
        cropper: BundlePart | Mapping[str, Any] | None = None,
    ) -> Path:
        """Write the bundle: weights + ``config.json`` (all that ``load`` needs), in one directory swap.

        Args:
            directory: the bundle directory (created, or replaced whole).
            training: the trainer's summary to record (None: the one this classifier carries).
            cropper: the cropper's part that ``Pipeline.save`` passes (its section and files); a bare
                section is recorded as it is; None: null, a classifier alone has no cropper.

        Returns:
            ``directory``, as a ``Path``.

        Raises:
            ValueError: the cropper's part writes a file the classifier's part also writes.
            OSError: the directory cannot be written (``NotADirectoryError``: it is a file).
        """
        training = training if training is not None else self.training
        if cropper is not None and not isinstance(cropper, BundlePart):
            cropper = BundlePart(dict(cropper))
        return write_bundle(directory, self.backend.bundle_part(), cropper=cropper, training=training)

    @classmethod
    def load(
        cls, directory: str | os.PathLike, device: str | torch.device = "auto", config: dict[str, Any] | None = None
    ) -> Classifier:
        """Open a bundle (torch or Keras alike), refusing weights that do not fit its ``config.json``.

        Args:
            directory: the bundle directory (``save``, or training's ``best/``).
            device: where the model runs ("auto": CUDA when available, else CPU).
            config: the bundle's ``config.json`` when already read by ``bundle.read_config``.

        Returns:
            The classifier (its cropper section, if any, is for ``Pipeline.load``).

        Raises:
            BundleError: not a bundle, a malformed ``config.json``, an unknown backend, or weights that
                do not fit it.
            ImportError: a Keras bundle without TensorFlow installed.
            RuntimeError: a CUDA device was asked for and CUDA is not available.
        """
        config = config if config is not None else read_config(directory)
        name = config.get("backend", "torch")
        device = resolve_device(device)
        if name == "torch":
            backend: ClassifierBackend = TorchClassifierBackend.load(directory, device, config)
        elif name == "keras":
            try:
                from vehicle_cls.classifier.keras.backend import KerasBackend
            except ImportError as exc:
                raise ImportError(
                    f"{directory} is a Keras bundle; it needs TensorFlow: pip install vehicle-cls[keras] ({exc})"
                ) from exc
            backend = KerasBackend.load(directory, device=str(device), config=config)
        else:
            raise BundleError(f"{directory}: unknown backend {name!r} (expected 'torch' or 'keras')")
        return cls(backend, device=device, training=config.get("training"))

    # ---- inference --------------------------------------------------------------------------
    # predict_proba and predict_proba_images default to fp32, not DEFAULT_PRECISION: they give the reference
    # probabilities that evaluate scores and that the fast path's agreement is measured against
    def predict_proba(self, batch: Any, precision: str = "fp32") -> torch.Tensor:
        """Softmax probabilities (N, C) float32 for a batch of ``transform`` outputs, for training loops
        and DataLoaders that prepare their own batches.

        Args:
            batch: the stacked ``transform`` outputs (for the torch backend: a preprocessed NCHW tensor).
            precision: "fp32" (default: the reference probabilities), "bf16", "fp16" or "auto".

        Returns:
            The (N, C) probabilities, columns in ``classes`` order.

        Raises:
            ValueError: a precision this classifier does not run on its device.
        """
        return self.backend.predict_batch(batch, self.resolve_precision(precision))

    def transform(self, image: Any) -> Any:
        """One image -> the model input ``predict_proba`` takes (stacked); for DataLoaders.

        Args:
            image: an RGB uint8 HxWx3 array (or what the backend's transform accepts).

        Returns:
            The model input for that image (for the torch backend: a CHW float tensor).
        """
        return self.backend.transform(image)

    def predict_proba_images(
        self, images: Sequence[np.ndarray], precision: str = "fp32", batch_size: int = DEFAULT_BATCH_SIZE
    ) -> np.ndarray:
        """Softmax probabilities (N, C) for whole RGB uint8 HxWx3 images, ``batch_size`` at a time.

        Args:
            images: RGB uint8 HxWx3 arrays.
            precision: "fp32" (default: the reference probabilities), "bf16", "fp16" or "auto".
            batch_size: images per forward pass.

        Returns:
            The (N, C) float32 probabilities, rows in ``images`` order, columns in ``classes`` order.

        Raises:
            ValueError: a bad ``batch_size`` or ``precision`` (``OptionError``), or a precision this
                classifier does not run.
        """
        opts = InferenceOptions(batch_size=batch_size, precision=precision)
        probs = classify_crops(
            self.backend,
            [CropJob(im) for im in images],
            precision=self.resolve_precision(opts.precision),
            batch_size=opts.batch_size,
        )
        return np.concatenate(probs) if probs else np.zeros((0, len(self.classes)), dtype=np.float32)

    def predict(
        self, images: Any, topk: int = 5, batch_size: int = 32, precision: str = DEFAULT_PRECISION
    ) -> list[Result]:
        """Classify whole images (no cropper; ``Pipeline`` adds one): one ``Result`` per image.

        An input that cannot be read gets ``Result.error`` set; the others go on.

        Args:
            images: one image (anything ``load_image`` accepts) or a list of them.
            topk: classes listed per image.
            batch_size: images per forward pass.
            precision: "auto" (default: the fast path where it keeps agreement), "fp32", "bf16" or "fp16".

        Returns:
            One result per image, in order, each with one ``Vehicle`` (the whole image).

        Raises:
            ValueError: a bad ``topk``, ``batch_size`` or ``precision`` (checked as ``InferenceOptions``
                fields: ``OptionError``), or a precision this classifier does not run.
        """
        from vehicle_cls.io.inputs import is_single_source

        opts = InferenceOptions(batch_size=batch_size, topk=topk, precision=precision)
        precision = self.resolve_precision(opts.precision)
        sources = [images] if is_single_source(images) else list(images)
        results: list[Result] = []
        for start in range(0, len(sources), opts.batch_size):
            results += self._predict_chunk(sources[start : start + opts.batch_size], start, opts.topk, precision)
        return results

    def _predict_chunk(self, sources: list[Any], offset: int, topk: int, precision: str) -> list[Result]:
        from vehicle_cls.io.images import ImageError, describe_source, load_image

        results: list[Result] = []
        jobs: dict[int, CropJob] = {}
        for i, source in enumerate(sources, start=offset):
            try:
                image = load_image(source)
            except ImageError as exc:
                results.append(Result.failed(describe_source(source), i, str(exc)))
                continue
            jobs[len(results)] = CropJob(image)  # the whole image, as Pipeline without a cropper
            results.append(Result(describe_source(source), i, image_size=(int(image.shape[0]), int(image.shape[1]))))
        probs = classify_crops(self.backend, list(jobs.values()), precision=precision, batch_size=max(1, len(jobs)))
        for (pos, job), rows in zip(jobs.items(), probs):
            try:
                results[pos].vehicles = label_crops(rows, job, self.classes, topk)
            except ValueError as exc:  # e.g. NaN probabilities: this input fails, the others go on
                results[pos].error = f"{results[pos].source}: {exc}"
        return results
