"""Metrics against hand-computed values."""
from __future__ import annotations

import numpy as np
import pytest

from vehicle_cls.train.metrics import compute_metrics, confusion_matrix, topk_correct

CLASSES = ["bike", "car", "truck"]
LABELS = np.array([0, 0, 1, 1, 2, 2, 2])
# predictions (argmax):  0  1  1  1  2  0  2
SCORES = np.array([
    [0.7, 0.2, 0.1],
    [0.3, 0.6, 0.1],   # bike -> car (bike is 2nd)
    [0.1, 0.8, 0.1],
    [0.2, 0.5, 0.3],
    [0.1, 0.1, 0.8],
    [0.5, 0.1, 0.4],   # truck -> bike (truck 2nd)
    [0.3, 0.3, 0.4],
])


def test_confusion_matrix_by_hand():
    cm = confusion_matrix(LABELS, SCORES.argmax(1), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 2]]


def test_topk_by_hand():
    assert topk_correct(SCORES, LABELS, 1).tolist() == [True, False, True, True, True, False, True]
    assert topk_correct(SCORES, LABELS, 2).all()
    assert topk_correct(np.array([[0.1, 0.2, 0.7]]), np.array([0]), 2).tolist() == [False]


def test_compute_metrics_by_hand():
    m = compute_metrics(SCORES, LABELS, CLASSES)
    assert m.num_samples == 7
    assert m.top1 == pytest.approx(5 / 7)
    assert m.top5 == 1.0  # only 3 classes
    assert m.per_class_accuracy == pytest.approx([1 / 2, 2 / 2, 2 / 3])
    assert m.mean_class_accuracy == pytest.approx((0.5 + 1 + 2 / 3) / 3)
    assert m.per_class_count == [2, 2, 3]
    d = m.to_dict()
    assert d["per_class"][2] == {"class": "truck", "count": 3, "accuracy": pytest.approx(2 / 3)}


def test_absent_class_and_top5_with_many_classes():
    scores = np.eye(7)[[0, 1, 2]] + 0.01 * np.arange(7)  # predicted 0,1,2; class 6 scores next highest
    m = compute_metrics(scores, np.array([0, 6, 5]), [str(i) for i in range(7)])
    assert m.top1 == pytest.approx(1 / 3)
    # sample 1: order 1, 6, 5, 4, 3 -> label 6 in top-5; sample 2: order 2, 6, 5, 4, 3 -> label 5 in
    assert m.top5 == 1.0
    assert m.per_class_accuracy[3] is None and m.per_class_count[3] == 0
    assert m.mean_class_accuracy == pytest.approx(1 / 3)  # classes 0 (1.0), 5 (0.0), 6 (0.0)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="do not match"):
        compute_metrics(SCORES[:, :2], LABELS, CLASSES)
