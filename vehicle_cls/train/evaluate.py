"""Evaluate a classifier bundle on a labelled dataset: probabilities, metrics, the failures.

Images are decoded (and cut) by DataLoader workers, whole (``crop="none"``), cut to their annotation
box (``"gt"``) or replaced by their cached detector crop (a ``CropCache``), then classified by the
classify stage ``Pipeline`` uses (``classifier.inference``: the backend's ``prepare_crops`` +
``classify``, torch or Keras alike); a sample that cannot be read is reported and skipped, never
ending the pass.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from vehicle_cls.classifier.inference import CropJob, classify_crops
from vehicle_cls.data import Sample, relabel
from vehicle_cls.progress import progress_bar
from vehicle_cls.train.metrics import ClassificationMetrics, compute_metrics

logger = logging.getLogger(__name__)


@dataclass
class EvalResult:
    """Per-sample probabilities (rows follow ``sources``) and the metrics computed from them."""

    name: str
    classes: list[str]
    sources: list[str]
    labels: np.ndarray  # (N,) int64, indices into ``classes`` (the model's classes)
    probs: np.ndarray  # (N, C) float32 softmax
    metrics: ClassificationMetrics
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    info: dict[str, Any] = field(default_factory=dict)  # model dir, dataset, split, crop, ...

    @property
    def preds(self) -> np.ndarray:
        return self.probs.argmax(axis=1) if len(self.probs) else np.zeros(0, dtype=np.int64)

    def worst_mistakes(self, n: int = 16) -> list[dict[str, Any]]:
        """The ``n`` most confident wrong predictions (highest probability on a wrong class), for a report.

        Args:
            n: how many to give at most.

        Returns:
            Most confident first, each with source, true, predicted, probability and true_probability.
        """
        preds = self.preds
        wrong = np.flatnonzero(preds != self.labels)
        conf = self.probs[wrong, preds[wrong]] if len(wrong) else np.zeros(0)
        order = wrong[np.argsort(-conf, kind="stable")][:n]
        return [
            {
                "source": self.sources[i],
                "true": self.classes[self.labels[i]],
                "predicted": self.classes[preds[i]],
                "probability": float(self.probs[i, preds[i]]),
                "true_probability": float(self.probs[i, self.labels[i]]),
            }
            for i in order
        ]


def evaluate(
    classifier: Any,
    samples: Sequence[Sample],
    *,
    dataset_classes: Sequence[str] | None = None,
    crop: Any = "none",
    batch_size: int = 64,
    num_workers: int = 0,
    precision: str = "fp32",  # not runtime.DEFAULT_PRECISION: a score is the reference model's number
    name: str = "eval",
    info: dict[str, Any] | None = None,
    progress: bool = False,
) -> EvalResult:
    """Score ``classifier`` on labelled ``samples``: probabilities, metrics and the images that failed.

    A sample that cannot be read is listed in ``EvalResult.failed`` and skipped, never ending the pass.

    Args:
        classifier: a ``Classifier`` (torch or Keras backend).
        samples: the labelled samples (e.g. a dataset split; its ``classes`` name the labels).
        dataset_classes: the class names the labels index (None: ``samples.classes``, else the model's);
            relabelled into the model's classes by name.
        crop: "none" (whole images), "gt" (the annotation boxes), or a crop cache (a ``CropCache`` or its
            folder: the cached detector crops).
        batch_size: images per forward pass.
        num_workers: DataLoader worker processes that decode (0: in this process; forced to 0 where the
            backend cannot fork, e.g. TensorFlow).
        precision: "fp32" (default: a score is the reference model's number), "bf16", "fp16" or "auto".
        name: the name in logs, the progress bar and the report.
        info: extra provenance kept in ``EvalResult.info`` (model directory, dataset, split, ...).
        progress: show a progress bar.

    Returns:
        The per-sample probabilities and labels, the metrics and the failures.

    Raises:
        ValueError: a bad ``batch_size`` or ``precision`` (``OptionError``), a precision the classifier
            does not run, or a dataset class the model does not know.
        DatasetError: a crop cache whose settings file is unreadable.

    Example:
        ```python
        from vehicle_cls.data import open_dataset
        result = evaluate(Classifier.load("run/best"), open_dataset("data/test"), crop="gt")
        print(result.metrics.top1)
        ```
    """
    from vehicle_cls.data.torch_dataset import SampleDataset
    from vehicle_cls.options import InferenceOptions

    batch_size = InferenceOptions(batch_size=batch_size, precision=precision).batch_size
    precision = classifier.resolve_precision(precision)

    classes = list(classifier.classes)
    samples = relabel(samples, dataset_classes or getattr(samples, "classes", None) or classes, classes)
    if isinstance(crop, str) and crop not in ("none", "gt"):
        from vehicle_cls.data import CropCache

        crop = CropCache(crop)
    ds = SampleDataset(samples, None, crop, box_format=getattr(samples, "box_format", "devkit"), input_format="numpy")
    if not getattr(classifier.backend, "fork_safe", True):
        num_workers = 0  # e.g. TensorFlow is loaded: do not fork workers from this process
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=_collate_images)
    probs, labels, indices, failed = [], [], [], []
    bar = progress_bar(len(loader), progress, name, "batch", leave=False)
    for images, y, idx, bad in loader:
        failed += [(f.path, f.reason) for f in bad]
        if images:
            rows = classify_crops(
                classifier.backend, [CropJob(im) for im in images], precision=precision, batch_size=batch_size
            )
            probs.append(np.concatenate(rows).astype(np.float32))
            labels.append(np.asarray(y, dtype=np.int64))
            indices.append(np.asarray(idx, dtype=np.int64))
        bar.update(1)
    bar.close()
    probs_a = np.concatenate(probs) if probs else np.zeros((0, len(classes)), dtype=np.float32)
    labels_a = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
    idx_a = np.concatenate(indices) if indices else np.zeros(0, dtype=np.int64)
    sources = [samples[int(i)].path for i in idx_a]
    if failed:
        logger.warning("%s: %d of %d images could not be read and were skipped", name, len(failed), len(samples))
    metrics = compute_metrics(probs_a, labels_a, classes)
    return EvalResult(
        name,
        classes,
        sources,
        labels_a.astype(np.int64),
        probs_a.astype(np.float32),
        metrics,
        failed,
        dict(info or {}, crop=crop if isinstance(crop, str) else str(getattr(crop, "root", crop))),
    )


def _collate_images(items: list[tuple[Any, int, int]]) -> tuple[list[np.ndarray], list[int], list[int], list[Any]]:
    """A loader batch as lists (the images differ in size): images, labels, indices, failed samples."""
    from vehicle_cls.data.torch_dataset import FailedSample

    good = [it for it in items if not isinstance(it[0], FailedSample)]
    failed = [it[0] for it in items if isinstance(it[0], FailedSample)]
    return [it[0] for it in good], [int(it[1]) for it in good], [int(it[2]) for it in good], failed
