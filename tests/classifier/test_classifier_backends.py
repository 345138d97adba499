"""Both classifier backends (torch, Keras) through the one ``Classifier`` interface: the same calls
(``Classifier.predict``, ``Pipeline`` with every vehicle, ``evaluate``, ``vehicle-cls eval``) give
each backend's own probabilities, checked against an oracle that runs the raw model directly."""
from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vehicle_cls.classifier import Classifier, Preprocess, crop_resize_on_device, preprocess_images
from vehicle_cls.pipeline import Pipeline
from vehicle_cls.results import Detections
from vehicle_cls.testing.stand_ins import StandInCropper

PHOTOS = sorted((Path(__file__).parents[1] / "data" / "predict").glob("*.jpg"))
CLASSES = ["car", "minibus", "truck"]
BOXES = [(5, 10, 60, 70), (40, 30, 95, 95)]  # integer boxes: a CPU slice is exactly the crop


class _Backend:
    """A classifier of one backend plus an oracle: probabilities from its raw model."""

    def __init__(self, name: str, tmp: Path):
        self.name = name
        if name == "torch":
            torch.manual_seed(0)
            clf = Classifier.create("resnet18", classes=CLASSES, preprocess=Preprocess(32, "squash"), device="cpu")
            clf.save(tmp / "bundle")
        else:
            if importlib.util.find_spec("tensorflow") is None:
                pytest.skip("tensorflow is not installed (pip install vehicle-cls[keras])")
            from vehicle_cls.classifier.keras.backend import KerasBackend
            from vehicle_cls.classifier.keras.loading import import_keras

            keras = import_keras()
            keras.utils.set_random_seed(0)
            inputs = keras.Input((32, 32, 3))
            x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
            x = keras.layers.GlobalAveragePooling2D()(x)
            outputs = keras.layers.Dense(3, activation="softmax")(x)
            model = keras.Model(inputs, outputs)
            model.save(tmp / "tiny.keras")
            KerasBackend.from_file(tmp / "tiny.keras", CLASSES, preprocess="caffe").save(tmp / "bundle")
            self.keras_model = model
        self.bundle = tmp / "bundle"
        self.clf = Classifier.load(self.bundle, device="cpu")

    def oracle(self, image: np.ndarray, box=None) -> np.ndarray:
        if self.name == "torch":
            with torch.inference_mode():
                if box is None:
                    x = preprocess_images([image], self.clf.preprocess)
                else:
                    x = crop_resize_on_device(torch.from_numpy(image.copy()).permute(2, 0, 1),
                                              torch.tensor([box], dtype=torch.float32), self.clf.preprocess)
                return self.clf.model(x).softmax(1)[0].numpy()
        import tensorflow as tf
        from keras.applications.resnet50 import preprocess_input

        if box is not None:
            x1, y1, x2, y2 = box
            image = image[y1:y2, x1:x2]
        x = tf.image.resize(image.astype(np.float32), (32, 32), method="bilinear").numpy()[None]
        return self.keras_model.predict(preprocess_input(x), verbose=0)[0]


@pytest.fixture(scope="module", params=["torch", "keras"])
def backend(request, tmp_path_factory) -> _Backend:
    return _Backend(request.param, tmp_path_factory.mktemp(request.param))


def _probs(vehicle) -> np.ndarray:
    out = np.zeros(len(CLASSES))
    for name, p in vehicle.topk:
        out[CLASSES.index(name)] = p
    return out


def test_predict_gives_one_result_per_image(backend, tmp_path, rgb_photos):
    images = rgb_photos("predict")
    results = backend.clf.predict([images[0], tmp_path / "missing.jpg", images[1]], topk=3, precision="fp32")
    assert [r.ok for r in results] == [True, False, True] and [len(r) for r in results] == [1, 0, 1]
    assert "no such file" in results[1].error
    for result, image in zip([results[0], results[2]], images[:2]):
        np.testing.assert_allclose(_probs(result.best), backend.oracle(image), atol=1e-5)


class TwoVehicles(StandInCropper):
    """A detector stand-in: the two BOXES (a car and a truck) in every image."""

    def __init__(self):
        from vehicle_cls.cropper import CropPolicy

        self.policy = CropPolicy(select="all")

    def detect(self, images, batch_size=None):
        return [Detections(BOXES, [0.9, 0.8], [2, 7], image_size=im.shape[:2]) for im in images]


def test_pipeline_every_vehicle_in_one_result(backend, rgb_photos):
    images = rgb_photos("predict")[:2]
    results = Pipeline(TwoVehicles(), backend.clf, device="cpu", num_workers=0, precision="fp32")(images, topk=3)
    assert [len(r) for r in results] == [2, 2]
    for result, image in zip(results, images):
        assert [v.detection.class_name for v in result] == ["car", "truck"]
        for vehicle, box in zip(result, BOXES):
            assert vehicle.box == box
            np.testing.assert_allclose(_probs(vehicle), backend.oracle(image, box), atol=1e-4)


def test_evaluate_and_eval_cli(backend, tmp_path, capsys):
    from vehicle_cls.cli import eval as eval_cli
    from vehicle_cls.data import open_dataset
    from vehicle_cls.train.evaluate import evaluate

    root = tmp_path / "data"
    for split in ("train", "test"):
        for i, photo in enumerate(PHOTOS[:3]):
            (root / split / CLASSES[i]).mkdir(parents=True)
            shutil.copy(photo, root / split / CLASSES[i] / photo.name)
    test = open_dataset(str(root), "auto", split="test")
    result = evaluate(backend.clf, test, dataset_classes=test.classes, batch_size=2, num_workers=2)
    expected = {s.path: backend.oracle(np.asarray(Image.open(s.path).convert("RGB"))) for s in test}
    assert sorted(result.sources) == sorted(expected)
    for source, row in zip(result.sources, result.probs):
        np.testing.assert_allclose(row, expected[source], atol=1e-5)
    parser = argparse.ArgumentParser()
    eval_cli.register(parser.add_subparsers())
    args = parser.parse_args(["eval", "--model", str(backend.bundle), "--data", str(root), "--split", "test",
                              "--out", str(tmp_path / "report"), "--device", "cpu"])
    assert args.func(args) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert json.dumps(report).count("top1") >= 1 and "3 images" in capsys.readouterr().out
