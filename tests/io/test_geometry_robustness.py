"""Degenerate geometry gets one line for that image (issue 17, principle 6): ``io.images.check_geometry``
is the one limit (pixels, aspect ratio) every decode applies, and the cropper applies it to arrays handed
to it, so a 1-pixel strip fails alone; it never reaches a resize that asks for gigabytes or rounds to 0."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from vehicle_cls.cropper import Cropper
from vehicle_cls.cropper.rcnn import InferenceSettings
from vehicle_cls.cropper.transforms import preprocess_image
from vehicle_cls.io.images import ImageError, load_image
from vehicle_cls.results import Detections


def _png(height: int, width: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


class ResizingBackend:
    """The detector's real input resize (detectron2's ResizeShortestEdge), then one fixed box per image."""

    name, mask_on, device, precision, channels_last = "torch", False, torch.device("cpu"), "fp32", False
    settings = InferenceSettings()

    def __call__(self, images):
        out = []
        for im in images:
            preprocess_image(np.asarray(im), self.settings.min_size_test, self.settings.max_size_test)
            out.append(Detections([[1, 1, 5, 5]], [0.9], [2], image_size=tuple(im.shape[:2])))
        return out


@pytest.mark.parametrize("strip", [_png(1, 5000), np.full((1, 5000, 3), 90, np.uint8), np.full((5000, 1, 3), 9, np.uint8)])
def test_cropper_detect_fails_only_the_thin_image(strip):
    good = np.full((60, 80, 3), 120, np.uint8)
    cropper = Cropper(ResizingBackend(), "faster_rcnn_R_101_FPN_3x", "test-weights")
    first, bad, last = cropper.detect([good, strip, good])
    assert first.error is None and len(first) == 1 and last.error is None and len(last) == 1
    assert bad.error is not None and "5000" in bad.error and "\n" not in bad.error and len(bad) == 0


def test_decoding_refuses_a_strip_naming_its_size():
    with pytest.raises(ImageError, match=r"1x300.*over 50 times the other"):
        load_image(_png(300, 1))
    assert load_image(_png(20, 400)).shape == (20, 400, 3)  # 20:1 is a panorama, fine


def test_center_crop_pipeline_fails_a_strip_alone():
    """A 1-pixel-high PNG on a center_crop model asked torch for 63 GB and failed its whole batch."""
    from vehicle_cls import Classifier, Pipeline
    from vehicle_cls.classifier import Preprocess

    torch.manual_seed(0)
    clf = Classifier.create("resnet18", classes=["a", "b"], weights=None,
                            preprocess=Preprocess(input_size=32, resize="center_crop"))
    pipe = Pipeline(None, clf, device="cpu", num_workers=0)
    good = np.full((40, 50, 3), 100, np.uint8)
    results = pipe([good, _png(1, 300), good])
    assert [r.ok for r in results] == [True, False, True]
    assert "times the other" in results[1].error and "\n" not in results[1].error


def test_crop_run_marks_the_strip_failed_and_goes_on(tmp_path):
    """A crop run stopped at the same thin image on every rerun (the detector raised; the run resumes there)."""
    from vehicle_cls.data.crop_cache import CropCache
    from vehicle_cls.data.sample import Sample, SampleList

    paths = []
    for name, (h, w) in (("a.png", (60, 80)), ("strip.png", (1, 5000)), ("b.png", (70, 50))):
        (tmp_path / name).write_bytes(_png(h, w))
        paths.append(str(tmp_path / name))
    dataset = SampleList([Sample(p, 0, None) for p in paths], ["x"])
    cropper = Cropper(ResizingBackend(), "faster_rcnn_R_101_FPN_3x", "test-weights")
    cache = CropCache(tmp_path / "cache")
    stats = cache.build(dataset, cropper, batch_size=3)
    assert stats.failed == 1 and stats.cropped == 2
    assert cache.lookup(paths[1]) is None and cache.lookup(paths[0]) and cache.lookup(paths[2])
    again = cache.build(dataset, cropper, batch_size=3)
    assert again.already_done == 3 and again.failed == 0
