"""Result objects: JSON-ready dicts, filtering, drawing."""
from __future__ import annotations

import json

import numpy as np
import pytest

from vehicle_cls.results import Detection, Detections, Prediction, predictions_to_jsonl


def _detections() -> Detections:
    return Detections(
        boxes=[[10, 10, 50, 40], [0, 0, 5, 5], [20, 5, 90, 60]],
        scores=[0.9, 0.3, 0.7],
        classes=[2, 0, 7],
        image_size=(64, 96),
    )


def test_detections_filtering_keeps_shapes():
    det = _detections()
    assert len(det) == 3
    vehicles = det[np.isin(det.classes, [2, 7])]
    assert vehicles.classes.tolist() == [2, 7]
    assert vehicles.boxes.shape == (2, 4) and vehicles.image_size == (64, 96)
    one = det[2]
    assert one.boxes.shape == (1, 4) and one.scores.tolist() == pytest.approx([0.7])
    assert len(Detections.empty((64, 96))) == 0
    with pytest.raises(ValueError, match="same length"):
        Detections(boxes=np.zeros((2, 4)), scores=[1.0], classes=[2, 2])


def test_detection_list_and_dict():
    first = _detections().to_list()[0]
    assert first.class_name == "car" and first.area == 40 * 30
    assert first.to_dict() == {"box": [10.0, 10.0, 50.0, 40.0], "score": 0.9, "class_id": 2, "class_name": "car"}


def test_prediction_to_dict_is_json_ready():
    det = Detection(box=(1.234, 2.0, 30.0, 40.5), score=np.float32(0.87), class_id=7)
    pred = Prediction(
        source="a.jpg", label="truck", score=np.float32(0.6), class_index=np.int64(3),
        topk=[("truck", np.float32(0.6)), ("bus", 0.3)], box=det.box, detection=det, image_size=(48, 64),
    )
    data = json.loads(json.dumps(pred.to_dict()))  # must not need a custom encoder
    assert data["label"] == "truck" and data["score"] == pytest.approx(0.6)
    assert data["topk"][1] == ["bus", 0.3]
    assert data["box"] == [1.23, 2.0, 30.0, 40.5]
    assert data["detection"]["class_name"] == "truck"
    assert data["error"] is None and pred.ok


def test_failed_prediction_has_one_line_error_and_jsonl():
    bad = Prediction.failed("b.jpg", "b.jpg: truncated\nimage file")
    assert not bad.ok and bad.error == "b.jpg: truncated image file" and bad.label is None
    lines = predictions_to_jsonl([bad, Prediction(source="c.jpg", label="car", score=1.0)]).splitlines()
    assert [json.loads(line)["source"] for line in lines] == ["b.jpg", "c.jpg"]


def test_plot_draws_box_in_green():
    image = np.zeros((60, 80, 3), np.uint8)
    pred = Prediction(source="x", label="car", score=0.9, box=(20.0, 30.0, 70.0, 55.0))
    drawn = np.asarray(pred.plot(image, line_width=1))
    assert drawn.shape == image.shape
    assert drawn[45, 20].tolist() == [40, 200, 60]  # left edge of the box
    assert drawn[45, 45].tolist() == [0, 0, 0]  # inside untouched
    assert (drawn[59, :].sum() == 0)  # bottom row untouched
    failed = np.asarray(Prediction.failed("y", "broken").plot(image))
    assert (failed[..., 0] == 220).any()  # the red error label
