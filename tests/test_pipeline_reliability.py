"""Reliability of the pipeline (issue 9): non-finite classifier outputs, bounded decoded pixels, and
TensorFlow + torch(vision) in one process whatever was imported first."""
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
from vehicle_cls.pipeline import Pipeline
from vehicle_cls.results import Detections

PHOTOS = sorted((Path(__file__).parent / "data" / "predict").glob("*.jpg"))
CLASSES = ["car", "minibus", "truck"]
ROOT = Path(__file__).resolve().parents[1]


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
    engine = clf.engine
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
class _CountingCropper:
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

    class Recording(pipeline_mod._PixelBudget):
        def add(self, n):
            super().add(n)
            peak["held"] = max(peak["held"], self.held)

    monkeypatch.setattr(pipeline_mod, "_PixelBudget", Recording)
    images = [np.full((100, 100, 3), i, np.uint8) for i in range(10)]  # 10 000 pixels each
    cropper = _CountingCropper()
    pipe = Pipeline(cropper, clf, device="cpu", batch_size=16, num_workers=num_workers, max_batch_pixels=25_000)
    results = pipe(images)
    assert [r.index for r in results] == list(range(10)) and all(r.ok and len(r) == 1 for r in results)
    assert cropper.calls == [3, 3, 3, 1]  # a batch is cut once it holds >= 25 000 pixels, not at 16 images
    # never more than the budget plus what the decode threads had started
    assert peak["held"] <= 25_000 + max(num_workers, 1) * 10_000


# ---- 9.14: tensorflow and torchvision in one process, either order ---------------------------
KERAS_PREDICT = """
import sys
{imports}
from vehicle_cls.classifier.keras_backend import import_keras
from vehicle_cls.pipeline import Pipeline
keras = import_keras()
inputs = keras.Input((32, 32, 3))
outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inputs))
model = keras.Model(inputs, outputs)
model.save(sys.argv[1] + "/tiny.keras")
from vehicle_cls.classifier.keras_backend import KerasBackend
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
