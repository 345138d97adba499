"""Result objects: JSON-ready dicts, filtering, drawing."""
from __future__ import annotations

import json

import numpy as np
import pytest

from vehicle_cls.plotting import PALETTE
from vehicle_cls.results import Detection, Detections, Result, Vehicle, label_vehicle, results_to_jsonl


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


def _street() -> Result:
    det = Detection(box=(1.234, 2.0, 30.0, 40.5), score=np.float32(0.87), class_id=7)
    truck = Vehicle(box=det.box, detection=det, label="truck", score=np.float32(0.6), class_index=np.int64(3),
                    topk=[("truck", np.float32(0.6)), ("bus", 0.3)])
    car = Vehicle(box=(40.0, 10.0, 60.0, 30.0), detection=Detection((40.0, 10.0, 60.0, 30.0), 0.9, 2),
                  label="car", score=0.95, class_index=0, topk=[("car", 0.95)])
    return Result(source="a.jpg", index=4, image_size=(48, 64), vehicles=[truck, car])


def test_result_to_dict_is_json_ready_with_every_vehicle():
    result = _street()
    data = json.loads(result.to_json())  # must not need a custom encoder
    assert list(data) == ["source", "index", "frame", "timestamp", "image_size", "error", "vehicles"]
    assert (data["source"], data["index"], data["image_size"], data["error"]) == ("a.jpg", 4, [48, 64], None)
    truck, car = data["vehicles"]
    assert truck["label"] == "truck" and truck["score"] == pytest.approx(0.6) and truck["topk"][1] == ["bus", 0.3]
    assert truck["box"] == [1.23, 2.0, 30.0, 40.5] and truck["detection"]["class_name"] == "truck"
    assert truck["has_mask"] is False and truck["fallback"] is False and car["label"] == "car"
    assert result.ok and len(result) == 2 and result[1].label == "car" and [v.label for v in result] == ["truck", "car"]
    assert result.best is result[1]  # the highest score


def test_non_finite_numbers_are_null_never_bare_nan():
    result = Result("n.jpg", 0, vehicles=[Vehicle(label="car", score=float("nan"), topk=[("car", float("inf"))])])
    text = result.to_json()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["vehicles"][0]["score"] is None
    with pytest.raises(ValueError, match="not finite"):
        label_vehicle(np.array([np.nan, 0.5]), ["a", "b"])
    v = label_vehicle(np.array([0.25, 0.75]), ["a", "b"], topk=5, box=(1, 2, 3, 4))
    assert (v.label, v.score, v.class_index, v.topk, v.box) == ("b", 0.75, 1, [("b", 0.75), ("a", 0.25)], (1, 2, 3, 4))


def test_failed_result_has_one_line_error_rows_and_jsonl():
    bad = Result.failed("b.jpg", 1, "b.jpg: truncated\nimage file", frame=3, timestamp=0.1)
    assert not bad.ok and bad.error == "b.jpg: truncated image file" and bad.best is None and len(bad) == 0
    lines = results_to_jsonl([bad, _street()]).splitlines()
    assert [json.loads(line)["source"] for line in lines] == ["b.jpg", "a.jpg"]
    (row,) = bad.to_rows()  # a failed input keeps one row in tables
    assert (row["error"], row["vehicle"], row["label"], row["frame"]) == ("b.jpg: truncated image file", None, None, 3)
    rows = _street().to_rows()
    assert [(r["vehicle"], r["label"], r["x1"], r["detector_class"]) for r in rows] == [
        (0, "truck", 1.23, "truck"), (1, "car", 40.0, "car")]


def test_plot_draws_every_vehicle():
    image = np.zeros((48, 64, 3), np.uint8)
    drawn = np.asarray(_street().plot(image, line_width=1))
    assert drawn.shape == image.shape
    assert drawn[35, 1].tolist() == list(PALETTE[0])  # left edge of the first box
    assert drawn[25, 40].tolist() == list(PALETTE[1])  # left edge of the second box
    assert drawn[20, 50].tolist() == [0, 0, 0]  # inside the second box untouched
    assert drawn[47, :].sum() == 0  # bottom row untouched
    big = np.asarray(_street().plot(np.zeros((96, 128, 3), np.uint8), line_width=1))  # boxes scale to the image
    assert big[50, 80].tolist() == list(PALETTE[1])
    failed = np.asarray(Result.failed("y", 0, "broken").plot(image))
    assert (failed[..., 0] == 220).any()  # the red error label


def _keys(fields) -> list[str]:
    return [name for name, _ in fields]


def test_declared_fields_are_exactly_the_keys_of_to_dict_and_to_rows():
    from vehicle_cls.results import DETECTION_FIELDS, RESULT_FIELDS, ROW_FIELDS, VEHICLE_FIELDS

    r = _street()
    d = r.to_dict()
    assert list(d) == _keys(RESULT_FIELDS)
    assert all(list(v) == _keys(VEHICLE_FIELDS) for v in d["vehicles"])
    assert list(d["vehicles"][0]["detection"]) == _keys(DETECTION_FIELDS)
    for res in (r, Result.failed("x.jpg", 3, "bad")):
        assert all(list(row) == _keys(ROW_FIELDS) for row in res.to_rows())


def test_arrow_schema_matches_the_former_hand_written_one_and_holds_the_rows():
    pa = pytest.importorskip("pyarrow")
    from vehicle_cls.results import arrow_schema

    detection = pa.struct([("box", pa.list_(pa.float64())), ("score", pa.float64()), ("class_id", pa.int64()),
                           ("class_name", pa.string())])
    vehicle = pa.struct([
        ("box", pa.list_(pa.float64())), ("detection", detection), ("label", pa.string()), ("score", pa.float64()),
        ("class_index", pa.int64()), ("topk", pa.list_(pa.struct([("label", pa.string()), ("score", pa.float64())]))),
        ("fallback", pa.bool_()), ("has_mask", pa.bool_()),
        ("mask", pa.struct([("size", pa.list_(pa.int64())), ("counts", pa.string())])),
    ])
    assert arrow_schema("image") == pa.schema([
        ("source", pa.string()), ("index", pa.int64()), ("frame", pa.int64()), ("timestamp", pa.float64()),
        ("image_size", pa.list_(pa.int64())), ("error", pa.string()), ("vehicles", pa.list_(vehicle)),
    ])
    rows = [row for res in (_street(), Result.failed("x.jpg", 3, "bad")) for row in res.to_rows()]
    table = pa.Table.from_pylist(rows, schema=arrow_schema("vehicle"))
    assert table.to_pylist() == rows
    with pytest.raises(ValueError, match="rows must be 'image'"):
        arrow_schema("frame")


def _masked() -> tuple[Result, np.ndarray]:
    mask = np.random.default_rng(5).random((37, 53)) > 0.6  # not square, not symmetric: the order shows
    mask[:, :3] = False
    vehicles = [Vehicle(mask=mask, label="car"), Vehicle(label="bus")]
    return Result("m.jpg", 0, image_size=(37, 53), vehicles=vehicles), mask


def test_mask_is_coco_rle_in_json_and_decodes_to_the_same_mask():
    mask_utils = pytest.importorskip("pycocotools.mask")
    from vehicle_cls.cocotools import rle_to_mask

    result, mask = _masked()
    masked, plain = json.loads(result.to_json())["vehicles"]
    rle = masked["mask"]
    assert masked["has_mask"] is True and rle["size"] == [37, 53] and isinstance(rle["counts"], str)
    assert plain["has_mask"] is False and plain["mask"] is None
    decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})  # pycocotools itself
    assert decoded.shape == mask.shape and (decoded.astype(bool) == mask).all()
    assert (rle_to_mask(rle) == mask).all()
    assert int(mask_utils.area({**rle, "counts": rle["counts"].encode()})) == mask.sum()


def test_masks_are_left_out_with_a_warning_when_pycocotools_is_missing(monkeypatch, caplog):
    import sys

    from vehicle_cls import cocotools

    monkeypatch.setitem(sys.modules, "pycocotools", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "pycocotools.mask", None)
    cocotools._warn_masks_left_out.cache_clear()
    result, _ = _masked()
    with caplog.at_level("WARNING", logger="vehicle_cls.cocotools"):
        first = json.loads(result.to_json())["vehicles"][0]
        json.loads(result.to_json())
    assert first["has_mask"] is True and first["mask"] is None  # still valid JSON, and says a mask was there
    warned = [r.getMessage() for r in caplog.records if "masks are left out" in r.getMessage()]
    assert len(warned) == 1 and "pip install vehicle-cls[coco]" in warned[0]  # once, naming the extra
    with pytest.raises(ImportError, match=r"pip install vehicle-cls\[coco\]"):
        cocotools.mask_to_rle(np.ones((2, 2), bool))
    cocotools._warn_masks_left_out.cache_clear()


def test_an_image_row_with_a_mask_fits_the_arrow_schema():
    pa = pytest.importorskip("pyarrow")
    pytest.importorskip("pycocotools")
    from vehicle_cls.results import arrow_schema

    row = _masked()[0].to_dict()
    assert pa.Table.from_pylist([row], schema=arrow_schema("image")).to_pylist() == [row]
