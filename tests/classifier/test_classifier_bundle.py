"""Classifier bundles: round trip in a new process, and weights that do not fit the config refused."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from vehicle_cls.classifier import BundleError, Classifier, Preprocess, preprocess_images

PHOTOS = Path(__file__).parents[1] / "data" / "predict"
CLASSES = ["bike", "car", "juggernaut", "minibus", "pickup", "truck"]


def _images() -> list[np.ndarray]:
    return [np.asarray(Image.open(p).convert("RGB")) for p in sorted(PHOTOS.glob("*.jpg"))]


@pytest.fixture()
def bundle(tmp_path) -> tuple[Path, Classifier]:
    torch.manual_seed(1)
    clf = Classifier.create("resnet18", classes=CLASSES, preprocess=Preprocess(48, "center_crop"), dropout=0.3)
    with torch.no_grad():  # non-trivial BN statistics, so a loader that drops buffers is caught
        for m in clf.model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    directory = tmp_path / "bundle"
    clf.save(directory, training={"epochs": 3, "val_accuracy": 0.5}, cropper={"config": "fake"})
    return directory, clf


def test_round_trip_in_new_process_gives_identical_probabilities(bundle, tmp_path):
    directory, clf = bundle
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # same kernels as the child process below
    try:
        expected = clf.predict_proba(preprocess_images(_images(), clf.preprocess)).numpy()
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "probs.npy"
    code = (
        "import sys, numpy as np, torch; torch.set_num_threads(1)\n"
        "from PIL import Image\n"
        "from vehicle_cls.classifier import Classifier, preprocess_images\n"
        "clf = Classifier.load(sys.argv[1])\n"
        "imgs = [np.asarray(Image.open(p).convert('RGB')) for p in sys.argv[3:]]\n"
        "np.save(sys.argv[2], clf.predict_proba(preprocess_images(imgs, clf.preprocess)).numpy())\n"
        "print(clf.arch, clf.classes, clf.preprocess.to_dict())\n"
    )
    paths = [str(p) for p in sorted(PHOTOS.glob("*.jpg"))]
    run = subprocess.run([sys.executable, "-c", code, str(directory), str(out), *paths],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    got = np.load(out)
    assert got.shape == (len(paths), len(CLASSES))
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)  # softmax probabilities
    assert "resnet18" in run.stdout and "center_crop" in run.stdout


def test_loaded_bundle_keeps_classes_preprocess_and_summaries(bundle):
    directory, clf = bundle
    config = json.loads((directory / "config.json").read_text())
    assert config["format_version"] == 1 and config["backend"] == "torch" and config["arch"] == "resnet18"
    assert config["classes"] == CLASSES and config["num_classes"] == 6
    assert config["preprocess"] == {"input_size": 48, "resize": "center_crop", "mean": [0.485, 0.456, 0.406],
                                    "std": [0.229, 0.224, 0.225], "interpolation": "bilinear",
                                    "crop_fraction": 0.875}
    loaded = Classifier.load(directory)
    assert loaded.classes == CLASSES and loaded.preprocess == Preprocess(48, "center_crop")
    assert loaded.training == {"epochs": 3, "val_accuracy": 0.5} and config["cropper"] == {"config": "fake"}
    assert isinstance(loaded.model.fc[0], torch.nn.Dropout) and loaded.model.fc[0].p == 0.3
    for (k, a), b in zip(clf.model.state_dict().items(), loaded.model.state_dict().values()):
        assert torch.equal(a, b), k


def test_channels_last_model_saves(tmp_path):
    clf = Classifier.create("resnet18", classes=["a", "b"], preprocess=Preprocess(32))
    clf.model.to(memory_format=torch.channels_last)
    clf.save(tmp_path / "b")
    assert Classifier.load(tmp_path / "b").classes == ["a", "b"]


def _edit_config(directory: Path, **changes) -> None:
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_refuses_head_that_does_not_fit_the_class_list(bundle):
    directory, _ = bundle
    _edit_config(directory, classes=[f"class {i}" for i in range(196)], num_classes=196)
    with pytest.raises(BundleError, match="head has 6 outputs but config lists 196 classes"):
        Classifier.load(directory)


def test_refuses_weights_of_another_architecture(bundle):
    directory, _ = bundle
    _edit_config(directory, arch="resnet34")
    with pytest.raises(BundleError) as info:
        Classifier.load(directory)
    msg = str(info.value)
    assert "missing from the weights: layer1.2." in msg and "different architecture" in msg and "resnet34" in msg


def test_refuses_missing_and_unexpected_tensors_by_name(bundle):
    directory, _ = bundle
    state = load_file(directory / "model.safetensors")
    del state["layer4.1.bn2.running_var"]
    state["extra.weight"] = torch.zeros(2)
    state["conv1.weight"] = torch.zeros(64, 3, 5, 5)
    save_file(state, directory / "model.safetensors")
    with pytest.raises(BundleError) as info:
        Classifier.load(directory)
    msg = str(info.value)
    assert "missing from the weights: layer4.1.bn2.running_var" in msg
    assert "unexpected in the weights: extra.weight" in msg
    assert "conv1.weight is (64, 3, 5, 5) but resnet18 needs (64, 3, 7, 7)" in msg


@pytest.mark.parametrize(
    "change, message",
    [
        ({"format_version": 99}, "format version 99 is newer"),
        ({"preprocess": {"input_size": 48, "colour": "BGR"}}, "config.json: unknown key preprocess.colour; known: "),
        ({"classes": ["a", "a", "b", "c", "d", "e"]}, "duplicate"),
        ({"backend": "onnx"}, "unknown backend 'onnx'"),
        ({"arch": "not_a_net"}, "unsupported classifier architecture 'not_a_net'"),
    ],
)
def test_refuses_bad_config(bundle, change, message):
    directory, _ = bundle
    _edit_config(directory, **change)
    with pytest.raises(BundleError, match=message):
        Classifier.load(directory)


def test_missing_bundle_files_are_named(tmp_path, bundle):
    with pytest.raises(BundleError, match="no such model directory"):
        Classifier.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="config.json missing"):
        Classifier.load(tmp_path / "empty")
    directory, _ = bundle
    (directory / "model.safetensors").unlink()
    with pytest.raises(BundleError, match="model.safetensors missing"):
        Classifier.load(directory)


def test_keras_bundle_dispatches_to_keras_backend(tmp_path, monkeypatch):
    """A config with backend "keras" is opened by classifier.keras.backend.KerasBackend.load (stubbed here)."""
    import vehicle_cls.classifier.keras.backend as kb
    from vehicle_cls.runtime import Capabilities

    class FakeKeras:  # the backend interface (ClassifierBackend), answering 0.25 / 0.75 for any image
        name, fork_safe, device = "keras", False, "cpu"
        capabilities = Capabilities()  # fp32 only

        def __init__(self, directory):
            self.directory, self.classes = directory, ["van", "bus"]

        @classmethod
        def load(cls, directory, device="cpu", config=None):
            return cls(directory)

        def to(self, device):
            return self

        def use_channels_last(self):
            pass

        def bundle_part(self):
            raise NotImplementedError

        def transform(self, image):
            return image

        def predict_batch(self, batch, precision="fp32"):
            return torch.tensor([[0.25, 0.75]]).repeat(len(batch), 1)

        def prepare_crops(self, image, choices, mask_fill=(0, 0, 0), tensor=None):
            return [image for _ in choices]

        def classify(self, prepared, precision="fp32", batch_size=32):
            n = sum(len(p) for p in prepared)
            return np.tile(np.array([[0.25, 0.75]], dtype=np.float32), (n, 1))

    monkeypatch.setattr(kb, "KerasBackend", FakeKeras)
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / "config.json").write_text(json.dumps({"backend": "keras", "classes": ["van", "bus"]}))
    clf = Classifier.load(tmp_path / "k")
    assert clf.backend.name == "keras" and clf.classes == ["van", "bus"]
    preds = clf.predict([np.zeros((20, 30, 3), np.uint8), tmp_path / "missing.jpg"], topk=2)
    assert [len(p) for p in preds] == [1, 0] and preds[0].best.label == "bus"
    assert preds[0].best.topk == [("bus", 0.75), ("van", 0.25)] and "no such file" in preds[1].error


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "efficientnet_b0"])
def test_other_backbones_round_trip_and_head_check(arch, tmp_path):
    torch.manual_seed(0)
    clf = Classifier.create(arch, classes=["a", "b", "c"], preprocess=Preprocess(32))
    clf.save(tmp_path / arch)
    loaded = Classifier.load(tmp_path / arch)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded.predict_proba(x), clf.predict_proba(x))
    _edit_config(tmp_path / arch, classes=["a", "b"], num_classes=2)
    with pytest.raises(BundleError, match="head has 3 outputs but config lists 2 classes"):
        Classifier.load(tmp_path / arch)
