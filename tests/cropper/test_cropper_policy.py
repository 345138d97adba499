"""CropPolicy on hand-made detections: every expected box below is computed by hand."""
from __future__ import annotations

import copy
import json
import pickle

import numpy as np
import pytest

from vehicle_cls.cropper.policy import CropPolicy, expand_box
from vehicle_cls.crops import CropChoice, box_ious, crop_bounds, cut
from vehicle_cls.results import Detections

CAR, BUS, TRUCK, PERSON, MOTORCYCLE = 2, 5, 7, 0, 3
H, W = 100, 200  # image (height, width)


def dets(rows, masks=None) -> Detections:
    """rows: (x1, y1, x2, y2, score, class)."""
    a = np.asarray(rows, dtype=np.float64).reshape(-1, 6)
    return Detections(a[:, :4], a[:, 4], a[:, 5].astype(np.int64), masks, (H, W))


# a small high-score car, a large lower-score truck, a huge person, a low-score huge bus
SCENE = dets([
    (10, 10, 30, 30, 0.95, CAR),  # area 400
    (50, 20, 150, 80, 0.70, TRUCK),  # area 6000
    (0, 0, 200, 100, 0.99, PERSON),  # not a vehicle class by default
    (0, 0, 190, 95, 0.30, BUS),  # below min_score 0.5
])


def test_largest_vs_highest_score():
    largest = CropPolicy().choose(SCENE)
    assert len(largest) == 1 and not largest[0].fallback
    assert largest[0].box == (50.0, 20.0, 150.0, 80.0)
    assert largest[0].detection.class_id == TRUCK and largest[0].detection.score == pytest.approx(0.70)
    best = CropPolicy(select="score").choose(SCENE)
    assert best[0].box == (10.0, 10.0, 30.0, 30.0) and best[0].detection.class_id == CAR


def test_select_mode_round_trips_and_is_validated():
    policy = CropPolicy(select="score")
    assert policy.select == "score" and json.loads(json.dumps(policy.to_dict()))["select"] == "score"
    assert policy.choose(SCENE)[0].box == (10.0, 10.0, 30.0, 30.0)
    for clone in (copy.deepcopy(policy), pickle.loads(pickle.dumps(policy)), CropPolicy.from_dict(policy.to_dict())):
        assert clone == policy and clone.choose(SCENE)[0].box == (10.0, 10.0, 30.0, 30.0)
    with pytest.raises(ValueError, match="select"):
        CropPolicy(select="biggest")


def test_min_score_and_class_filter():
    # min_score 0.2 lets the bus (area 18050) in: it becomes the largest
    assert CropPolicy(min_score=0.2).choose(SCENE)[0].detection.class_id == BUS
    # only cars: the small car
    assert CropPolicy(classes=("car",)).choose(SCENE)[0].box == (10.0, 10.0, 30.0, 30.0)
    # ids work as well as names; person is not a vehicle unless asked for
    assert CropPolicy(classes=(PERSON,)).choose(SCENE)[0].detection.class_id == PERSON
    # score exactly at the threshold is kept (>=)
    assert CropPolicy(min_score=0.95, select="score").choose(SCENE)[0].detection.class_id == CAR
    with pytest.raises(ValueError, match="unknown COCO class 'spaceship'"):
        CropPolicy(classes=("spaceship",))


def test_margin_clamped_at_border():
    # car (10,10,30,30) w=h=20, margin 0.75 -> 15 px each side -> (-5,-5,45,45) -> clamped (0,0,45,45)
    c = CropPolicy(classes=("car",), margin=0.75).choose(SCENE)[0]
    assert c.box == pytest.approx((0.0, 0.0, 45.0, 45.0))
    # truck (50,20,150,80) w=100 h=60, margin 0.1 -> (40,14,160,86): inside, not clamped
    c = CropPolicy(classes=("truck",), margin=0.1).choose(SCENE)[0]
    assert c.box == pytest.approx((40.0, 14.0, 160.0, 86.0))
    # margin 0.5 on the truck: (0,-10,200,110) -> clamped to (0,0,200,100)
    c = CropPolicy(classes=("truck",), margin=0.5).choose(SCENE)[0]
    assert c.box == pytest.approx((0.0, 0.0, 200.0, 100.0))


def test_square_padding():
    # truck w=100 h=60 -> square side 100 centred at (100,50): (50,0,150,100) fits exactly
    c = CropPolicy(classes=("truck",), square=True).choose(SCENE)[0]
    assert c.box == pytest.approx((50.0, 0.0, 150.0, 100.0))
    # a wide box near the left edge: (0,40,60,60) w=60 h=20 -> side 60, centre (30,50) -> y (20,80), inside
    d = dets([(0, 40, 60, 60, 0.9, CAR)])
    assert CropPolicy(square=True).choose(d)[0].box == pytest.approx((0.0, 20.0, 60.0, 80.0))
    # a tall box at the top: (100,0,110,40) w=10 h=40 -> side 40, x (85,125), y (0,40)
    d = dets([(100, 0, 110, 40, 0.9, CAR)])
    assert CropPolicy(square=True).choose(d)[0].box == pytest.approx((85.0, 0.0, 125.0, 40.0))
    # a box near the top edge: (20,2,80,12) w=60 h=10 -> side 60 centred y=7 -> (-23,37) shifted to (0,60)
    d = dets([(20, 2, 80, 12, 0.9, CAR)])
    assert CropPolicy(square=True).choose(d)[0].box == pytest.approx((20.0, 0.0, 80.0, 60.0))
    # wider than the image is tall: (0,10,150,50) side 150 > H=100 -> y centred 30 -> (-45,105) clamped (0,100)
    d = dets([(0, 10, 150, 50, 0.9, CAR)])
    assert CropPolicy(square=True).choose(d)[0].box == pytest.approx((0.0, 0.0, 150.0, 100.0))
    # margin first, then square: car (10,10,30,30) margin 0.5 -> (0,0,40,40) square already
    assert expand_box((10, 10, 30, 30), (H, W), margin=0.5, square=True) == pytest.approx((0, 0, 40, 40))


def test_fallback_recorded_or_empty():
    nothing = dets([(0, 0, 50, 50, 0.9, PERSON), (10, 10, 20, 20, 0.4, CAR)])
    choices = CropPolicy().choose(nothing)
    assert choices == [CropChoice(box=None, detection=None, fallback=True, mask=None)]
    assert CropPolicy(fallback=False).choose(nothing) == []
    assert CropPolicy().choose(Detections.empty((H, W)))[0].fallback
    image = np.arange(H * W * 3, dtype=np.uint8).reshape(H, W, 3)
    whole = cut(image, choices[0])
    assert whole.shape == image.shape and np.array_equal(whole, image) and whole is not image


def test_every_vehicle_mode():
    choices = CropPolicy(select="all", min_score=0.2).choose(SCENE)
    assert [c.detection.class_id for c in choices] == [CAR, TRUCK, BUS]  # detector order, person dropped
    assert [c.box for c in choices] == [(10.0, 10.0, 30.0, 30.0), (50.0, 20.0, 150.0, 80.0), (0.0, 0.0, 190.0, 95.0)]
    assert not any(c.fallback for c in choices)


def test_cut_pixels():
    image = np.zeros((H, W, 3), dtype=np.uint8)
    image[:, :, 0] = np.arange(W, dtype=np.uint8)[None, :]  # red = column index
    image[:, :, 1] = np.arange(H, dtype=np.uint8)[:, None]  # green = row index
    # fractional box (10.4, 20.6, 30.2, 40.0) covers columns 10..30 and rows 20..39
    choice = CropChoice((10.4, 20.6, 30.2, 40.0), None, False)
    crop = cut(image, choice)
    assert crop.shape == (20, 21, 3)
    assert crop[0, 0, 0] == 10 and crop[0, -1, 0] == 30 and crop[0, 0, 1] == 20 and crop[-1, 0, 1] == 39
    assert crop_bounds((199.5, 99.5, 200.0, 100.0), (H, W)) == (199, 99, 200, 100)  # never empty
    assert crop_bounds((200.0, 100.0, 200.0, 100.0), (H, W)) == (199, 99, 200, 100)


def test_mask_mode_blanks_outside_the_mask():
    mask = np.zeros((1, H, W), dtype=bool)
    mask[0, 12:28, 15:25] = True  # inside the car box (10,10,30,30)
    d = dets([(10, 10, 30, 30, 0.9, CAR)], masks=mask)
    policy = CropPolicy(mask=True, mask_fill=(1, 2, 3))
    choice = policy.choose(d)[0]
    assert choice.mask is not None and choice.mask.shape == (H, W) and choice.mask.sum() == 16 * 10
    image = np.full((H, W, 3), 200, dtype=np.uint8)
    crop = cut(image, choice, policy.mask_fill)
    assert crop.shape == (20, 20, 3)
    # crop pixel (r, c) is image pixel (10 + r, 10 + c): masked rows 2..17, columns 5..14 keep 200
    expected = np.empty((20, 20, 3), dtype=np.uint8)
    expected[:] = (1, 2, 3)
    expected[2:18, 5:15] = 200
    assert np.array_equal(crop, expected)
    assert image.min() == 200  # the input is untouched
    # without mask mode the mask is not attached and nothing is blanked
    plain = CropPolicy().choose(d)[0]
    assert plain.mask is None and cut(image, plain).min() == 200
    # mask mode on a box-only detector's output is a clear error
    with pytest.raises(ValueError, match="mask"):
        CropPolicy(mask=True).choose(dets([(10, 10, 30, 30, 0.9, CAR)]))


def test_policy_round_trip_and_validation():
    p = CropPolicy(classes=("car", "bus"), min_score=0.3, select="all", margin=0.1, square=True, fallback=False,
                   mask=True, mask_fill=(0, 0, 0))
    d = json.loads(json.dumps(p.to_dict()))
    assert d["classes"] == ["car", "bus"] and d["select"] == "all" and d["mask_fill"] == [0, 0, 0]
    assert CropPolicy.from_dict(d) == p
    with pytest.raises(ValueError, match="margin"):
        CropPolicy(margin=-0.1)
    with pytest.raises(ValueError, match=r"^b\.json: unknown key policy\.colour; known: "):
        CropPolicy.from_dict({"colour": "red"}, source="b.json")
    with pytest.raises(ValueError, match=r"unknown key policy\.margins \(did you mean policy\.margin\?\)"):
        CropPolicy.from_dict({"margins": 0.1})


def test_box_ious_by_hand():
    boxes = np.array([[0, 0, 10, 10], [5, 5, 15, 15], [20, 20, 30, 30], [3, 3, 3, 8]], dtype=float)
    # with (0, 0, 10, 10): itself 1; a 5x5 overlap of two 100-px boxes 25 / 175; disjoint 0; an empty box 0
    np.testing.assert_allclose(box_ious(boxes, [(0, 0, 10, 10)])[:, 0], [1.0, 25 / 175, 0.0, 0.0])
    pairwise = box_ious(boxes[:2], boxes[1:3])  # (2, 2): rows are the first boxes, columns the second
    np.testing.assert_allclose(pairwise, [[25 / 175, 0.0], [1.0, 0.0]])
    assert box_ious(np.zeros((0, 4)), [(0, 0, 1, 1)]).shape == (0, 1)


def test_match_picks_the_detection_of_the_annotated_vehicle():
    det = Detections(np.array([[0, 0, 50, 40], [60, 10, 90, 40], [58, 8, 92, 42]], dtype=float),
                     np.array([0.9, 0.8, 0.95]), np.array([7, 2, 0]), image_size=(50, 100))  # truck, car, person
    policy = CropPolicy(margin=0.1)
    (car,) = policy.match(det, (61, 11, 89, 39))  # IoU 0.87 with the car; the person overlaps too but is no vehicle
    assert car.detection.class_name == "car" and not car.fallback
    assert car.box == pytest.approx((57.0, 7.0, 93.0, 43.0))  # the margin applies as in choose(): 10 % of 30 x 30
    (missed,) = policy.match(det, (20, 42, 40, 60))  # no vehicle overlaps 0.5: the annotated box, clamped
    assert missed.fallback and missed.detection is None and missed.box == (20, 42, 40, 50)
