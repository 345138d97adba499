"""Crop experiments: full image vs ground-truth-box crops vs cached crops, evaluated and compared."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vehicle_cls.classifier import Classifier, Preprocess
from vehicle_cls.data import CropCache, Sample, SampleList
from vehicle_cls.io.images import load_image
from vehicle_cls.train.evaluate import evaluate
from vehicle_cls.train.report import write_comparison, write_report

DEMO = Path(__file__).resolve().parents[2] / "vehicle_cls" / "assets" / "demo_vehicle_types"
CLASSES = ["bike", "car", "truck"]
BOX = (10, 20, 70, 90)  # xyxy, integer: image[20:90, 10:70]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("crops")
    samples = SampleList([Sample(str(f), i, BOX) for i, c in enumerate(CLASSES)
                          for f in sorted((DEMO / c).glob("*.jpg"))[:3]], CLASSES, "boxed", box_format="xyxy")
    torch.manual_seed(0)
    clf = Classifier.create("resnet18", CLASSES, weights=None, preprocess=Preprocess(input_size=24))
    cache = CropCache(tmp / "cache")
    cache.build(samples, mode="gt", image_format="png")  # lossless, so cache == gt exactly
    return tmp, samples, clf, cache


def test_gt_crop_is_the_box_and_cache_matches(setup):
    tmp, samples, clf, cache = setup
    full = evaluate(clf, samples, name="full image")
    gt = evaluate(clf, samples, crop="gt", name="gt crop")
    cached = evaluate(clf, samples, crop=cache, name="cached crop")
    # independent: the classifier on hand-cut boxes, and on whole images
    boxes = [load_image(s.path)[20:90, 10:70] for s in samples]
    np.testing.assert_allclose(gt.probs, clf.predict_proba_images(boxes), atol=1e-6)
    np.testing.assert_allclose(full.probs, clf.predict_proba_images([load_image(s.path) for s in samples]), atol=1e-6)
    np.testing.assert_allclose(cached.probs, gt.probs, atol=1e-6)
    assert not np.allclose(full.probs, gt.probs)
    assert gt.info["crop"] == "gt" and cached.info["crop"] == str(cache.root)

    for r in (full, gt, cached):
        write_report(r, tmp / r.name.replace(" ", "_"), plots=False)
    paths = write_comparison([tmp / "full_image", tmp / "cached_crop", tmp / "gt_crop"], tmp / "cmp")
    rows = json.loads(paths["json"].read_text())
    assert [r["top1"] for r in rows] == pytest.approx([full.metrics.top1, cached.metrics.top1, gt.metrics.top1])
    assert "| | full image | cached crop | gt crop |" in paths["markdown"].read_text()


def test_missing_from_cache_is_skipped_and_reported(setup):
    _, samples, clf, cache = setup
    extra = SampleList(list(samples) + [Sample(str(sorted((DEMO / "car").glob("*.jpg"))[5]), 1, BOX)],
                       CLASSES, "plus one", box_format="xyxy")
    r = evaluate(clf, extra, crop=cache)
    assert r.metrics.num_samples == 9 and len(r.failed) == 1 and "not in the crop cache" in r.failed[0][1]


def test_dataset_classes_are_mapped_by_name(setup):
    _, samples, clf, _ = setup
    reordered = SampleList([Sample(s.path, 2 - s.label, s.box) for s in samples], CLASSES[::-1], "reordered")
    a = evaluate(clf, samples)
    b = evaluate(clf, reordered)
    assert np.array_equal(a.labels, b.labels) and a.metrics.top1 == b.metrics.top1
    with pytest.raises(ValueError, match="classes the model does not know"):
        evaluate(clf, SampleList([Sample(samples[0].path, 0)], ["tractor"], "unknown"))
