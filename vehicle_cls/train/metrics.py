"""Classification metrics from labels and scores: top-k, per-class accuracy, confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def topk_correct(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Boolean per sample: the true label is among the ``k`` highest scores (k capped at #classes)."""
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return (top == labels[:, None]).any(axis=1)


def validation_row(loss_sum: float, correct1: float, correct5: float, count: float, skipped: float) -> dict[str, float]:
    """The history row of a validation pass from its sums (both trainers log the same keys); only the
    skip count when no image could be scored."""
    if count == 0:
        return {"val_skipped": int(skipped)}
    return {
        "val_loss": loss_sum / count,
        "val_top1": correct1 / count,
        "val_top5": correct5 / count,
        "val_skipped": int(skipped),
    }


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """``cm[true, predicted]`` counts, (C, C) int64."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)), 1)
    return cm


@dataclass
class ClassificationMetrics:
    """Summary of one evaluation; ``per_class_accuracy`` is None for classes with no samples."""

    num_samples: int
    top1: float
    top5: float
    mean_class_accuracy: float
    per_class_accuracy: list[float | None]
    per_class_count: list[int]
    confusion: np.ndarray
    classes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_samples": self.num_samples,
            "top1": self.top1,
            "top5": self.top5,
            "mean_class_accuracy": self.mean_class_accuracy,
            "per_class": [
                {"class": c, "count": n, "accuracy": a}
                for c, n, a in zip(self.classes, self.per_class_count, self.per_class_accuracy)
            ],
            "confusion": self.confusion.tolist(),
            "classes": list(self.classes),
        }


def compute_metrics(scores: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> ClassificationMetrics:
    """All metrics from (N, C) scores (logits or probabilities) and (N,) integer labels."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    num_classes = len(classes)
    if scores.ndim != 2 or scores.shape[1] != num_classes or len(scores) != len(labels):
        raise ValueError(f"scores {scores.shape} do not match {len(labels)} labels and {num_classes} classes")
    n = len(labels)
    preds = scores.argmax(axis=1) if n else np.zeros(0, dtype=np.int64)
    cm = confusion_matrix(labels, preds, num_classes)
    counts = cm.sum(axis=1)
    per_class = [float(cm[i, i] / counts[i]) if counts[i] else None for i in range(num_classes)]
    present = [a for a in per_class if a is not None]
    return ClassificationMetrics(
        num_samples=n,
        top1=float(np.trace(cm) / n) if n else 0.0,
        top5=float(topk_correct(scores, labels, 5).mean()) if n else 0.0,
        mean_class_accuracy=float(np.mean(present)) if present else 0.0,
        per_class_accuracy=per_class,
        per_class_count=[int(c) for c in counts],
        confusion=cm,
        classes=list(classes),
    )
