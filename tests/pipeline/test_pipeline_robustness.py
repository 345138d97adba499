"""Reliability of the pipeline (issue 9): non-finite classifier outputs, bounded decoded pixels, large
JPEGs decoded reduced with results in original pixels, and TensorFlow + torch(vision) in one process
whatever was imported first."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import vehicle_cls.pipeline as pipeline_mod
from vehicle_cls.classifier import Classifier, Preprocess
from vehicle_cls.io.images import load_image
from vehicle_cls.pipeline import Pipeline
from vehicle_cls.plotting import PALETTE
from vehicle_cls.results import Detections
from vehicle_cls.testing.stand_ins import StandInCropper

PHOTOS = sorted((Path(__file__).parents[1] / "data" / "predict").glob("*.jpg"))
CLASSES = ["car", "minibus", "truck"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def clf() -> Classifier:
    torch.manual_seed(0)
    return Classifier.create("resnet18", classes=CLASSES, preprocess=Preprocess(32), device="cpu")


def _strict(line: str) -> dict:
    def reject(constant: str):
        raise ValueError(f"bare {constant} in JSON")

    return json.loads(line, parse_constant=reject)


# ---- 9.7: NaN weights ------------------------------------------------------------------------
def test_nan_weights_are_an_error_per_item_and_json_stays_strict(clf, tmp_path):
    with torch.no_grad():
        clf.model.fc[1].weight.fill_(float("nan"))
    results = Pipeline(None, clf, device="cpu")([PHOTOS[0], tmp_path / "missing.jpg"], topk=3)
    assert [r.ok for r in results] == [False, False]
    assert results[0].error == f"{PHOTOS[0]}: the classifier output is not finite (NaN or inf); check the model weights"
    assert results[0].vehicles == [] and "no such file" in results[1].error
    for r in results:
        assert _strict(r.to_json())["error"] == r.error
    predicted = clf.predict([PHOTOS[0]])  # the same rule without the pipeline
    assert not predicted[0].ok and "not finite" in predicted[0].error


def test_non_finite_row_fails_only_its_own_input(clf, monkeypatch):
    engine = clf.backend
    real = engine.classify

    def one_nan_row(prepared, precision="fp32", batch_size=64):
        probs = real(prepared, precision, batch_size)
        probs[1] = np.nan
        return probs

    monkeypatch.setattr(engine, "classify", one_nan_row)
    results = Pipeline(None, clf, device="cpu", batch_size=3)(PHOTOS[:3], topk=3)
    assert [r.ok for r in results] == [True, False, True]
    assert "not finite" in results[1].error and "\n" not in results[1].error
    assert [_strict(r.to_json())["error"] is None for r in results] == [True, False, True]


def test_cli_writes_no_bare_nan(clf, tmp_path):
    with torch.no_grad():
        clf.model.fc[1].bias.fill_(float("inf"))
    clf.save(tmp_path / "bundle")
    out = tmp_path / "preds.jsonl"
    code = ("import argparse, sys; from vehicle_cls.cli import predict; p = argparse.ArgumentParser(); "
            "predict.register(p.add_subparsers()); a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))")
    run = subprocess.run([sys.executable, "-c", code, "predict", str(PHOTOS[0]), "--model", str(tmp_path / "bundle"),
                          "--out", str(out), "--device", "cpu"], capture_output=True, text=True, timeout=180)
    assert run.returncode == 3, run.stderr
    (line,) = out.read_text().splitlines()
    assert "not finite" in _strict(line)["error"]


# ---- 9.13: bounded decoded pixels ------------------------------------------------------------
class _CountingCropper(StandInCropper):
    """Records how many images each detector call gets (the pipeline's batch)."""

    def __init__(self):
        from vehicle_cls.cropper import CropPolicy

        self.policy, self.calls = CropPolicy(), []

    def detect(self, images, batch_size=None):
        self.calls.append(len(images))
        return [Detections.empty(im.shape[:2]) for im in images]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_batches_are_cut_by_decoded_pixels(clf, monkeypatch, num_workers):
    peak = {"held": 0}

    class Recording(pipeline_mod.PixelBudget):
        def add(self, n):
            super().add(n)
            peak["held"] = max(peak["held"], self.held)

    monkeypatch.setattr(pipeline_mod, "PixelBudget", Recording)
    images = [np.full((100, 100, 3), i, np.uint8) for i in range(10)]  # 10 000 pixels each
    cropper = _CountingCropper()
    pipe = Pipeline(cropper, clf, device="cpu", batch_size=16, num_workers=num_workers, max_batch_pixels=25_000)
    results = pipe(images)
    assert [r.index for r in results] == list(range(10)) and all(r.ok and len(r) == 1 for r in results)
    assert cropper.calls == [3, 3, 3, 1]  # a batch is cut once it holds >= 25 000 pixels, not at 16 images
    # never more than the budget plus what the decode threads had started
    assert peak["held"] <= 25_000 + max(num_workers, 1) * 10_000


# ---- 9.13: large JPEGs decoded reduced --------------------------------------------------------
BIG_W, BIG_H = 4000, 2400
BRIGHT = (1203, 805, 2797, 1795)  # the "vehicle": x1, y1, x2, y2 (exclusive) in original pixels


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory) -> Path:
    from PIL import Image

    pixels = np.full((BIG_H, BIG_W, 3), 40, np.uint8)
    x1, y1, x2, y2 = BRIGHT
    pixels[y1:y2, x1:x2] = (230, 200, 50)
    path = tmp_path_factory.mktemp("big") / "big.jpg"
    Image.fromarray(pixels).save(path, quality=95)
    return path


class _BrightCropper(StandInCropper):
    """Finds the bright rectangle by thresholding (an oracle independent of the pipeline); records the
    sizes of the images it is given."""

    def __init__(self):
        from vehicle_cls.cropper import CropPolicy

        self.policy, self.shapes = CropPolicy(margin=0.1, mask=True), []

    def detect(self, images, batch_size=None):
        out = []
        for im in images:
            self.shapes.append(im.shape[:2])
            mask = im.mean(axis=2) > 120
            ys, xs = np.nonzero(mask)
            box = [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]]
            out.append(Detections(box, [0.9], [2], mask[None], image_size=im.shape[:2]))
        return out


def _run_big(clf, path, max_decode_side, **kwargs):
    cropper = _BrightCropper()
    pipe = Pipeline(cropper, clf, device="cpu", num_workers=0, max_decode_side=max_decode_side)
    (result,) = pipe([path], keep_images=True, **kwargs)
    assert result.ok, result.error
    return result, cropper.shapes


def test_large_jpeg_is_decoded_reduced_and_reported_in_original_pixels(clf, big_jpeg):
    full, full_shapes = _run_big(clf, big_jpeg, None)
    small, small_shapes = _run_big(clf, big_jpeg, 500)
    assert full_shapes == [(BIG_H, BIG_W)] and small_shapes == [(BIG_H // 8, BIG_W // 8)]  # 1/8 scale
    assert small.image.shape == (BIG_H // 8, BIG_W // 8, 3) and full.image.shape == (BIG_H, BIG_W, 3)
    assert small.image_size == full.image_size == (BIG_H, BIG_W)
    (f,), (s,) = full.vehicles, small.vehicles
    # the detection in original pixels: within a decoded pixel or two (8 original pixels each) of the truth
    np.testing.assert_allclose(f.detection.box, BRIGHT, atol=2)
    np.testing.assert_allclose(s.detection.box, BRIGHT, atol=16)
    np.testing.assert_allclose(s.box, f.box, atol=16)
    assert s.mask.shape == (BIG_H // 8, BIG_W // 8)  # masks stay at the decoded size
    assert s.label == f.label
    np.testing.assert_allclose([p for _, p in s.topk], [p for _, p in f.topk], atol=0.02)
    # plot: boxes and masks drawn where they belong, on the kept reduced image and on the full-size file
    for drawn, scale in ((small.plot(line_width=1), 8), (small.plot(str(big_jpeg), line_width=1), 1)):
        arr = np.asarray(drawn)
        assert arr.shape[:2] == (BIG_H // scale, BIG_W // scale)
        x1, y1, x2, y2 = (round(v / scale) for v in s.box)
        bottom = arr[max(y2 - 2, 0):y2 + 2, (x1 + x2) // 2]
        assert any(px.tolist() == list(PALETTE[0]) for px in bottom)  # the box's bottom edge
        cx, cy = (BRIGHT[0] + BRIGHT[2]) // 2 // scale, (BRIGHT[1] + BRIGHT[3]) // 2 // scale
        kept = small.image if scale == 8 else np.asarray(load_image(big_jpeg))
        assert np.abs(arr[cy, cx].astype(int) - kept[cy, cx]).max() > 10  # the mask is tinted
        assert np.abs(arr[5, -5].astype(int) - kept[5, -5]).max() == 0  # outside it is not


def test_given_boxes_are_scaled_to_the_reduced_image_and_back(clf, big_jpeg, monkeypatch):
    seen = []
    real = clf.backend.prepare_crops

    def record(image, choices, *args, **kwargs):
        seen.append((image.shape[:2], [c.box for c in choices]))
        return real(image, choices, *args, **kwargs)

    monkeypatch.setattr(clf.backend, "prepare_crops", record)
    box = (1100.0, 700.0, 2900.0, 1900.0)
    full, _ = _run_big(clf, big_jpeg, None, boxes=[box])
    small, _ = _run_big(clf, big_jpeg, 500, boxes=[box])
    assert full.vehicles[0].box == small.vehicles[0].box == box  # reported as given
    assert small.image_size == (BIG_H, BIG_W)
    assert seen[0] == ((BIG_H, BIG_W), [box])
    assert seen[1][0] == (BIG_H // 8, BIG_W // 8)
    np.testing.assert_allclose(seen[1][1][0], [v / 8 for v in box])  # cropped on the reduced image
    assert small.vehicles[0].label == full.vehicles[0].label
    np.testing.assert_allclose([p for _, p in small.vehicles[0].topk], [p for _, p in full.vehicles[0].topk],
                               atol=0.02)


def test_arrays_are_never_reduced(clf):
    image = np.full((1200, 1600, 3), 40, np.uint8)
    cropper = _CountingCropper()
    (result,) = Pipeline(cropper, clf, device="cpu", num_workers=0, max_decode_side=100)([image], keep_images=True)
    assert result.image_size == (1200, 1600) and result.image.shape == (1200, 1600, 3)
    with pytest.raises(ValueError, match="max_decode_side"):
        Pipeline(None, clf, device="cpu", max_decode_side=0)


# ---- 9.14: tensorflow and torchvision in one process, either order ---------------------------
KERAS_PREDICT = """
import sys
{imports}
from vehicle_cls.classifier.keras.loading import import_keras
from vehicle_cls.pipeline import Pipeline
keras = import_keras()
inputs = keras.Input((32, 32, 3))
outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inputs))
model = keras.Model(inputs, outputs)
model.save(sys.argv[1] + "/tiny.keras")
from vehicle_cls.classifier.keras.backend import KerasBackend
KerasBackend.from_file(sys.argv[1] + "/tiny.keras", ["car", "minibus", "truck"]).save(sys.argv[1] + "/bundle")
from torchvision.ops import roi_align  # torchvision after tensorflow
result = Pipeline.load(sys.argv[1] + "/bundle", device="cpu", num_workers=0)(sys.argv[2], boxes=[(5, 5, 60, 60)])[0]
print("OK", result.ok, len(result))
"""


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs tensorflow")
@pytest.mark.parametrize("imports", [
    "import torch, tensorflow, torchvision, vehicle_cls",  # the README's order: vehicle_cls first
    "import tensorflow; import vehicle_cls",  # tensorflow first, then vehicle_cls (no triton then)
])
def test_keras_backend_survives_either_import_order(imports, tmp_path):
    imports = "import vehicle_cls, torch, tensorflow, torchvision" if imports.startswith("import torch") else imports
    code = KERAS_PREDICT.format(imports=imports)
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path), str(PHOTOS[0])], capture_output=True,
                         text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, f"rc={run.returncode}: {run.stderr[-1500:]}"
    assert "OK True 1" in run.stdout
