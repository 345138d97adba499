"""The detector's COCO box AP (``train.box_ap`` and ``vehicle-cls eval --detector``) against a COCO file the
tests write, with a stand-in detector whose boxes are known: equal to the ground truth, shifted by a known
IoU, or wrong in a known way whose AP is computed here by hand."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from dataset_files import coco_ann, make_coco

from vehicle_cls.cropper import CropPolicy
from vehicle_cls.data import CocoDataset
from vehicle_cls.results import Detections
from vehicle_cls.testing.stand_ins import StandInCropper

pytest.importorskip("pycocotools")

CAR, BUS, TRUCK = 2, 5, 7  # the detector's contiguous COCO ids


class KnownBoxes(StandInCropper):
    """A detector that answers each image (by file name) with the given (box, score, class) rows."""

    def __init__(self, answers: dict[str, list[tuple]], classes=("car", "truck", "bus")):
        self.answers = answers
        self.policy = CropPolicy(classes=classes)
        self.calls: list[list[str]] = []

    def detect(self, images, batch_size=None):
        self.calls.append([Path(p).name for p in images])
        out = []
        for path in images:
            rows = self.answers.get(Path(path).name)
            if rows == "unreadable":
                out.append(Detections.failed(f"{path}: cannot identify image file"))
                continue
            rows = rows or []
            out.append(Detections([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]))
        return out


def _xyxy(bbox):
    x, y, w, h = bbox
    return [x, y, x + w, y + h]


def _street(tmp_path):
    """a.png: a car and a truck; b.png: a bus; c.png: a car and a crowd of cars (never a box to find)."""
    anns = [coco_ann(1, 1, 3, [2, 3, 20, 10]), coco_ann(2, 1, 8, [30, 20, 30, 25]), coco_ann(3, 2, 6, [5, 5, 40, 30]),
            coco_ann(4, 3, 3, [10, 8, 12, 9]), coco_ann(5, 3, 3, [30, 20, 30, 25], iscrowd=1)]
    return CocoDataset(make_coco(tmp_path, anns)), anns


def _perfect(anns):
    """Each non-crowd box of ``anns`` found exactly, with the detector class of its category."""
    cls_of = {3: CAR, 6: BUS, 8: TRUCK}
    answers: dict[str, list] = {}
    for a in anns:
        if not a.get("iscrowd"):
            name = "abc"[a["image_id"] - 1] + ".png"
            answers.setdefault(name, []).append((_xyxy(a["bbox"]), 0.9, cls_of[a["category_id"]]))
    return answers


def test_boxes_equal_to_the_ground_truth_score_one(tmp_path):
    from vehicle_cls.train.box_ap import box_ap

    ds, anns = _street(tmp_path)
    result = box_ap(KnownBoxes(_perfect(anns)), ds)
    assert (result.ap, result.ap50, result.ap75) == pytest.approx((1.0, 1.0, 1.0))
    assert not result.class_agnostic and result.categories == ["car", "bus", "truck"]
    assert (result.num_images, result.num_boxes, result.num_detections, result.skipped) == (3, 4, 4, [])


def test_one_box_at_a_known_iou_scores_the_thresholds_it_passes(tmp_path):
    """IoU 0.62 passes the IoU thresholds 0.50, 0.55, 0.60 of COCO's ten: AP 3/10, AP50 1, AP75 0."""
    from vehicle_cls.train.box_ap import box_ap

    ds = CocoDataset(make_coco(tmp_path, [coco_ann(1, 1, 3, [0, 0, 40, 20])]))
    x2 = 40 * 0.62  # [0, 0, 24.8, 20] inside the 40x20 box: IoU = 24.8 / 40 = 0.62
    result = box_ap(KnownBoxes({"a.png": [([0, 0, x2, 20], 0.8, CAR)]}), ds)
    assert (result.ap, result.ap50, result.ap75) == pytest.approx((0.3, 1.0, 0.0))
    exact = box_ap(KnownBoxes({"a.png": [([0, 0, 40, 20], 0.8, CAR)]}), ds)
    assert exact.ap == pytest.approx(1.0)  # the same dataset, the right box: so the 0.3 above is the IoU's doing


def test_a_higher_scored_false_positive_and_a_miss_give_the_hand_computed_ap(tmp_path):
    """Two cars; detections ranked: a false positive (0.9), then car 1 exactly (0.8); car 2 is missed.
    Precision/recall after each: (0, 0), (1/2, 1/2). COCO's 101-point interpolated precision is 1/2 at the
    recall points 0, 0.01, ..., 0.50 (51 of them) and 0 above: AP = 51 * 0.5 / 101 at every IoU threshold."""
    from vehicle_cls.train.box_ap import box_ap

    ds = CocoDataset(make_coco(tmp_path, [coco_ann(1, 1, 3, [2, 3, 20, 10]), coco_ann(2, 2, 3, [5, 5, 30, 20])]))
    answers = {"a.png": [([40, 30, 60, 45], 0.9, CAR), ([2, 3, 22, 13], 0.8, CAR)]}
    result = box_ap(KnownBoxes(answers), ds)
    expected = 51 * 0.5 / 101
    assert (result.ap, result.ap50, result.ap75) == pytest.approx((expected, expected, expected))
    assert result.num_boxes == 2 and result.num_detections == 2


def test_classes_pair_by_name_or_class_agnostic(tmp_path):
    """The truck detected as a car. By name: car, a hit (0.9) then a false positive (0.8) after recall 1 is
    reached: AP 1; truck, nothing found: AP 0; the mean 0.5. Class-agnostic every box is found: 1."""
    from vehicle_cls.train.box_ap import box_ap

    anns = [coco_ann(1, 1, 3, [2, 3, 20, 10]), coco_ann(2, 2, 8, [5, 5, 30, 20])]
    ds = CocoDataset(make_coco(tmp_path, anns, categories=[{"id": 3, "name": "car"}, {"id": 8, "name": "truck"}]))
    answers = {"a.png": [(_xyxy(anns[0]["bbox"]), 0.9, CAR)], "b.png": [(_xyxy(anns[1]["bbox"]), 0.8, CAR)]}
    by_name = box_ap(KnownBoxes(answers), ds)
    assert by_name.ap == pytest.approx(0.5) and by_name.categories == ["car", "truck"]
    agnostic = box_ap(KnownBoxes(answers), ds, class_agnostic=True)
    assert agnostic.ap == pytest.approx(1.0) and agnostic.categories == ["vehicle"] and agnostic.class_agnostic
    only_cars = box_ap(KnownBoxes(answers), ds, classes=["truck"])  # car detections are not scored
    assert only_cars.ap == 0.0 and only_cars.num_detections == 0 and only_cars.categories == ["truck"]


def test_a_make_model_dataset_is_scored_class_agnostic(tmp_path):
    from vehicle_cls.train.box_ap import box_ap

    cats = [{"id": 1, "name": "BMW M3 Coupe 2012"}, {"id": 2, "name": "Ram C/V Cargo Van Minivan 2012"}]
    anns = [coco_ann(1, 1, 1, [2, 3, 20, 10]), coco_ann(2, 2, 2, [5, 5, 30, 20])]
    ds = CocoDataset(make_coco(tmp_path, anns, categories=cats))
    answers = {"a.png": [(_xyxy(anns[0]["bbox"]), 0.9, CAR)], "b.png": [(_xyxy(anns[1]["bbox"]), 0.7, TRUCK),
                                                                   ([0, 0, 3, 3], 0.5, 0)]}  # a person: not scored
    result = box_ap(KnownBoxes(answers), ds)
    assert result.class_agnostic and result.ap == pytest.approx(1.0) and result.num_detections == 2
    with pytest.raises(ValueError, match="no category is named like a detector class"):
        box_ap(KnownBoxes(answers), ds, class_agnostic=False)


def test_unreadable_images_and_images_with_a_malformed_annotation_are_left_out(tmp_path):
    from vehicle_cls.train.box_ap import box_ap

    anns = [coco_ann(1, 1, 3, [2, 3, 20, 10]), coco_ann(2, 2, 3, [5, 5, 30, 20]), coco_ann(3, 3, 3, [1, 1, 9, 9]),
            coco_ann(4, 3, 3, [2, 3, 0, 10])]  # c.png's second box is malformed: its ground truth is incomplete
    ds = CocoDataset(make_coco(tmp_path, anns))
    assert len(ds.problems) == 1 and ds.incomplete_images == {3}
    detector = KnownBoxes({"a.png": [(_xyxy(anns[0]["bbox"]), 0.9, CAR)], "b.png": "unreadable"})
    result = box_ap(detector, ds)
    assert result.ap == pytest.approx(1.0) and result.num_images == 1 and result.num_boxes == 1  # only a.png is scored
    assert [(Path(p).name, why.split(": ")[-1]) for p, why in result.skipped] == [
        ("c.png", "has a malformed annotation (see the dataset's problems)"), ("b.png", "cannot identify image file")]
    assert detector.calls == [["a.png", "b.png"]]  # the incomplete image is not even detected
    json.dumps(result.to_dict())
    nothing = box_ap(KnownBoxes({}), ds)  # no detection at all: AP 0, not an error
    assert (nothing.ap, nothing.ap50, nothing.num_detections, nothing.num_boxes) == (0.0, 0.0, 0, 2)
    with pytest.raises(ValueError, match="no image with boxes could be detected; first: .*a.png: cannot identify"):
        box_ap(KnownBoxes({"a.png": "unreadable", "b.png": "unreadable"}), ds)  # no silent "AP 0"


def test_eval_detector_cli_writes_box_ap_json(tmp_path, cli, monkeypatch, capsys):
    from vehicle_cls.cli import EXIT_OK, EXIT_SOME_INPUTS_FAILED
    from vehicle_cls.cropper import Cropper

    data = tmp_path / "data"
    ds, anns = _street(data)
    checkpoint = tmp_path / "model_final.pkl"
    checkpoint.write_bytes(b"stand-in")
    built = {}

    def from_checkpoint(cls, path, **kwargs):
        built.update(path=str(path), **kwargs)
        return KnownBoxes(_perfect(anns), classes=kwargs["policy"].classes)

    monkeypatch.setattr(Cropper, "from_checkpoint", classmethod(from_checkpoint))
    code = cli("eval", "--detector", checkpoint, "--data", data / "annotations.json", "--out", tmp_path / "report",
               "--device", "cpu", "--classes", "car", "bus", "--min-size-test", "320")
    assert code == EXIT_OK
    assert built["path"] == str(checkpoint) and built["min_size_test"] == 320 and built["device"] == "cpu"
    metrics = json.loads((tmp_path / "report" / "box_ap.json").read_text())
    assert (metrics["ap"], metrics["ap50"]) == pytest.approx((1.0, 1.0)) and metrics["categories"] == ["car", "bus"]
    assert metrics["num_boxes"] == 3 and metrics["problems"] == []  # the truck is not scored
    assert "box AP 100.00%, AP50 100.00%, AP75 100.00%" in capsys.readouterr().out

    bad = make_coco(tmp_path / "bad", [coco_ann(1, 1, 3, [2, 3, 20, 10]), coco_ann(2, 2, 3, [1, 1, -1, 5])])
    code = cli("eval", "--detector", checkpoint, "--data", bad, "--out", tmp_path / "report2", "--match", "agnostic")
    assert code == EXIT_SOME_INPUTS_FAILED  # a malformed annotation: written, but not a clean pass
    metrics = json.loads((tmp_path / "report2" / "box_ap.json").read_text())
    assert metrics["class_agnostic"] and "annotation id 2: bbox has a non-positive size" in metrics["problems"][0]
    assert cli("eval", "--detector", "--out", tmp_path / "report3") == 1  # --data is needed
    assert "--detector needs --data" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="--detector .*missing.pkl: no such checkpoint file"):
        cli("eval", "--detector", tmp_path / "missing.pkl", "--data", bad, "--out", tmp_path / "report4")


def test_pycocotools_reads_the_same_files_independently(tmp_path):
    """The wiring check: COCOeval run here by hand on the written JSON and the detections as a results
    file gives box_ap's numbers for a mixed case (a miss, a false positive, an offset box)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from vehicle_cls.train.box_ap import box_ap

    ds, anns = _street(tmp_path)
    answers = {"a.png": [([2, 3, 22, 13], 0.95, CAR), ([33, 22, 62, 47], 0.6, TRUCK), ([0, 30, 10, 40], 0.7, TRUCK)],
               "c.png": [([11, 9, 22, 17], 0.8, CAR), ([31, 21, 59, 44], 0.9, CAR)]}  # the last: inside the crowd
    ours = box_ap(KnownBoxes(answers), ds)
    results = [{"image_id": {"a.png": 1, "c.png": 3}[name], "category_id": {CAR: 3, TRUCK: 8}[c],
                "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s}
               for name, rows in answers.items() for b, s, c in rows]
    (tmp_path / "results.json").write_text(json.dumps(results))
    gt = COCO(str(tmp_path / "annotations.json"))
    evaluator = COCOeval(gt, gt.loadRes(str(tmp_path / "results.json")), "bbox")
    evaluator.params.catIds = [3, 6, 8]
    evaluator.evaluate(), evaluator.accumulate(), evaluator.summarize()
    assert 0 < ours.ap < 1 and [ours.ap, ours.ap50, ours.ap75] == pytest.approx(list(evaluator.stats[:3]))
    assert np.isfinite(evaluator.stats[:3]).all()
