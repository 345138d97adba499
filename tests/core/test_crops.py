"""vehicle_cls.crops: the crop choice, the box helpers and the CPU cut, against hand computations."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vehicle_cls.crops import (
    DEFAULT_MASK_FILL,
    WHOLE_IMAGE,
    CropChoice,
    box_areas,
    clamp_box,
    crop_bounds,
    cut,
    scale_box,
    unscale_box,
)
from vehicle_cls.results import Detection


def test_crop_choice_is_frozen_and_defaults_to_the_whole_image():
    assert (WHOLE_IMAGE.box, WHOLE_IMAGE.detection, WHOLE_IMAGE.fallback, WHOLE_IMAGE.mask) == (None, None, False, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        WHOLE_IMAGE.box = (0.0, 0.0, 1.0, 1.0)  # type: ignore[misc]
    assert CropChoice((1.0, 2.0, 3.0, 4.0)).to_dict() == {"box": [1.0, 2.0, 3.0, 4.0], "detection": None,
                                                          "fallback": False}


def test_clamp_scale_unscale_and_area_by_hand():
    # a 100 x 200 (h x w) image: x into [0, 200], y into [0, 100]
    assert clamp_box((-5.0, 10.0, 250.0, 120.0), (100, 200)) == (0.0, 10.0, 200.0, 100.0)
    assert clamp_box((20.5, -1.0, 30.0, 40.0), (100, 200)) == (20.5, 0.0, 30.0, 40.0)
    # decoded at half size in x, a quarter in y: original = decoded * (2, 4)
    assert scale_box((10.0, 5.0, 30.0, 20.0), (2.0, 4.0)) == (20.0, 20.0, 60.0, 80.0)
    assert unscale_box((20.0, 20.0, 60.0, 80.0), (2.0, 4.0)) == (10.0, 5.0, 30.0, 20.0)
    assert scale_box(None, (2.0, 4.0)) is None
    box = (1.1, 2.2, 3.3, 4.4)
    assert scale_box(box, (1.0, 1.0)) is box and unscale_box(box, (1.0, 1.0)) is box
    # (x2 - x1) * (y2 - y1), an inverted box has area 0
    areas = box_areas(np.array([[0, 0, 10, 5], [2, 3, 4, 9], [5, 5, 1, 9]], dtype=np.float64))
    assert areas.tolist() == [50.0, 12.0, 0.0]


def test_reported_boxes_are_in_original_pixels():
    det = Detection((10.0, 5.0, 30.0, 20.0), 0.9, 2)
    choice = CropChoice((10.0, 5.0, 30.0, 20.0), det)
    assert choice.original_box((2.0, 4.0)) == (20.0, 20.0, 60.0, 80.0)
    assert choice.original_detection((2.0, 4.0)).box == (20.0, 20.0, 60.0, 80.0)
    assert choice.original_detection((1.0, 1.0)) is det
    given = CropChoice((3.3333333333333335, 1.0, 6.666666666666667, 2.0), given_box=(10.0, 3.0, 20.0, 6.0))
    assert given.original_box((3.0, 3.0)) == (10.0, 3.0, 20.0, 6.0)  # as the user gave it


def test_cut_pixels_bounds_and_mask_fill_by_hand():
    h, w = 6, 8
    image = np.zeros((h, w, 3), dtype=np.uint8)
    image[:, :, 0] = np.arange(w, dtype=np.uint8)[None, :]  # red = column
    image[:, :, 1] = np.arange(h, dtype=np.uint8)[:, None]  # green = row
    image[:, :, 2] = 200
    # box (1.5, 2.2, 4.1, 5.0): columns floor(1.5)=1 .. ceil(4.1)=5 (exclusive), rows 2 .. 5
    assert crop_bounds((1.5, 2.2, 4.1, 5.0), (h, w)) == (1, 2, 5, 5)
    crop = cut(image, CropChoice((1.5, 2.2, 4.1, 5.0)))
    assert crop.shape == (3, 4, 3) and crop.flags.c_contiguous
    assert crop[:, :, 0].tolist() == [[1, 2, 3, 4]] * 3 and crop[:, 0, 1].tolist() == [2, 3, 4]
    assert crop_bounds((8.0, 6.0, 8.0, 6.0), (h, w)) == (7, 5, 8, 6)  # at the edge: still one pixel
    whole = cut(image, WHOLE_IMAGE)
    assert np.array_equal(whole, image) and whole is not image
    mask = np.zeros((h, w), dtype=bool)
    mask[3, 2] = True
    masked = cut(image, CropChoice((2.0, 3.0, 4.0, 4.0), mask=mask), fill=(9, 8, 7))
    assert masked.tolist() == [[[2, 3, 200], [9, 8, 7]]]  # pixel (3, 2) kept, (3, 3) blanked
    assert cut(image, CropChoice(None, mask=mask))[0, 0].tolist() == list(DEFAULT_MASK_FILL)
    assert image[3, 3].tolist() == [3, 3, 200]  # the input is untouched
    with pytest.raises(ValueError, match=r"mask shape \(2, 2\) does not match image \(6, 8\)"):
        cut(image, CropChoice(None, mask=np.ones((2, 2), dtype=bool)))


def test_one_mask_fill_default():
    from vehicle_cls.cropper import CropPolicy

    assert CropPolicy().mask_fill == DEFAULT_MASK_FILL == (124, 116, 104)
