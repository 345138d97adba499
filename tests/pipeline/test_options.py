"""``InferenceOptions``: one validated object for every entry (to/from dict, did-you-mean, the same one-line
error for a bad batch size or top-k at every facade); ``Pipeline.precisions`` from each model's declared
capabilities; named inputs through ``Pipeline``."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from vehicle_cls.classifier import Classifier, Preprocess
from vehicle_cls.cropper import CropPolicy
from vehicle_cls.io.inputs import NamedInput
from vehicle_cls.options import InferenceOptions, OptionError
from vehicle_cls.pipeline import Pipeline
from vehicle_cls.results import Detections
from vehicle_cls.runtime import Capabilities, resolve_precision
from vehicle_cls.testing.stand_ins import StandInCropper

CLASSES = ["bike", "car", "truck"]
IMAGES = [np.full((40, 50, 3), v, np.uint8) for v in (30, 120, 200)]


@pytest.fixture(scope="module")
def clf() -> Classifier:
    torch.manual_seed(0)
    return Classifier.create("resnet18", classes=CLASSES, preprocess=Preprocess(32, "squash"), device="cpu",
                             progress=False)


class Fp32OnlyDetector(StandInCropper):
    """A detector that declares fp32 only (as the detectron2 backend does): one box per image."""

    capabilities = Capabilities(precisions=("fp32",))

    def __init__(self):
        self.policy = CropPolicy(select="all")

    def detect(self, images, batch_size=None):
        return [Detections([[2, 2, 30, 30]], [0.9], [2], image_size=im.shape[:2]) for im in images]


# ---- the object ---------------------------------------------------------------------------------
def test_round_trip_through_a_dict():
    options = InferenceOptions(batch_size=4, topk=2, crop=False, precision="fp32", max_decode_side=None,
                               classifier_batch_size=8, compile=True, device="cpu")
    assert options.compile == "default"  # True means torch.compile's default mode
    assert InferenceOptions.from_dict(options.to_dict()) == options
    assert InferenceOptions.from_dict({"topk": 3}) == InferenceOptions(topk=3)


def test_unknown_keys_get_a_did_you_mean():
    with pytest.raises(ValueError, match=r"unknown key batchsize \(did you mean batch_size\?\)"):
        InferenceOptions.from_dict({"batchsize": 4})
    with pytest.raises(ValueError, match=r"unknown inference option top_k \(did you mean topk\?\)"):
        InferenceOptions().replace(top_k=3)
    with pytest.raises(ValueError, match=r"did you mean precision\?"):
        Pipeline(None, Classifier.create("resnet18", classes=CLASSES, device="cpu", progress=False), precison="fp32")


@pytest.mark.parametrize("field, value, message", [
    ("batch_size", 0, "batch_size must be >= 1, not 0"),
    ("batch_size", -1, "batch_size must be >= 1, not -1"),
    ("batch_size", 2.5, "batch_size must be a whole number >= 1, not 2.5"),
    ("topk", 0, "topk must be >= 1, not 0"),
    ("topk", -1, "topk must be >= 1, not -1"),
    ("frame_stride", 0, "frame_stride must be >= 1, not 0"),
    ("num_workers", -1, "num_workers must be >= 0, not -1"),
    ("max_decode_side", 0, "max_decode_side must be >= 1 or None, not 0"),
    ("precision", "fp64", "precision must be one of auto, fp32, bf16, fp16, not 'fp64'"),
    ("decode", "gpu", "decode must be one of auto, cpu, device, not 'gpu'"),
    ("crop", "no", "crop must be True or False, not 'no'"),
])
def test_bad_values_are_one_line_errors_naming_the_option(field, value, message):
    with pytest.raises(OptionError) as info:
        InferenceOptions(**{field: value})
    assert str(info.value) == message and info.value.option == field


# ---- the same check at every facade (issue 17, item 10) -----------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 0}, "batch_size must be >= 1, not 0"),
    ({"batch_size": -1}, "batch_size must be >= 1, not -1"),
    ({"topk": 0}, "topk must be >= 1, not 0"),
    ({"topk": -1}, "topk must be >= 1, not -1"),
])
def test_every_facade_refuses_a_bad_batch_size_or_topk(clf, kwargs, message):
    """Before: Classifier.predict(batch_size=0) returned nothing for 3 images, batch_size=-1 dropped the last
    one, pipe(images, batch_size=-1) ran, topk=0 / -1 returned one label."""
    from vehicle_cls.distributed.ray_inference import predict_with_ray
    from vehicle_cls.serve.app import ServeConfig
    from vehicle_cls.train.evaluate import evaluate

    pipe = Pipeline(None, clf, device="cpu", num_workers=0)
    calls = [
        lambda: clf.predict(IMAGES, **kwargs),
        lambda: pipe(IMAGES, **kwargs),
        lambda: list(pipe.stream(IMAGES, **kwargs)),
        lambda: Pipeline(None, clf, device="cpu", **kwargs),
        lambda: ServeConfig(InferenceOptions(**kwargs)),
        lambda: predict_with_ray(["x.jpg"], "no-bundle", **kwargs),  # refused before Ray starts
    ]
    if "batch_size" in kwargs:
        calls += [lambda: clf.predict_proba_images(IMAGES, **kwargs), lambda: evaluate(clf, [], **kwargs)]
    for call in calls:
        with pytest.raises(ValueError, match=f"^{message}$"):
            call()


def test_per_call_values_override_the_options(clf):
    pipe = Pipeline(None, clf, device="cpu", num_workers=0, topk=1)
    assert [len(r.best.topk) for r in pipe(IMAGES)] == [1, 1, 1]
    assert [len(r.best.topk) for r in pipe(IMAGES, topk=3, batch_size=2)] == [3, 3, 3]
    assert pipe.options.topk == 1  # the call did not change the pipeline


# ---- precision: resolved once, checked against each model's capabilities -------------------------
def test_precisions_report_what_each_model_runs(clf):
    auto = Pipeline(Fp32OnlyDetector(), clf, device="cpu", num_workers=0)
    assert auto.precisions == {"detector": "fp32", "classifier": resolve_precision("auto", "cpu")}
    assert auto.cropper.precision == "fp32"
    assert all(r.ok and len(r) == 1 for r in auto(IMAGES))
    fp32 = Pipeline(Fp32OnlyDetector(), clf, device="cpu", precision="fp32")
    assert fp32.precisions == {"detector": "fp32", "classifier": "fp32"}
    with pytest.raises(ValueError, match="^the detector runs in fp32 only, not 'bf16'$"):
        Pipeline(Fp32OnlyDetector(), clf, device="cpu", precision="bf16")
    bf16 = Pipeline(StandInCropper(), clf, device="cpu", precision="bf16")  # a detector that runs bf16
    assert bf16.precisions == {"detector": "bf16", "classifier": "bf16"}
    whole = Pipeline(Fp32OnlyDetector(), clf, device="cpu", crop=False)
    assert whole.cropper is None and set(whole.precisions) == {"classifier"}


def test_a_backend_refuses_a_precision_it_did_not_declare(clf):
    with pytest.raises(ValueError, match="torch classifier on cpu runs in fp32, bf16 only, not 'auto'"):
        clf.backend.predict_batch(torch.zeros(1, 3, 32, 32), "auto")  # the caller resolves first
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        clf.predict(IMAGES, precision="fp16")


# ---- named inputs ---------------------------------------------------------------------------------
def _jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG")
    return buffer.getvalue()


def test_named_inputs_carry_their_name_and_index_through_the_pipeline(clf):
    """What the service and Ray pass: results report the caller's name and index, errors name the input."""
    pipe = Pipeline(Fp32OnlyDetector(), clf, device="cpu", num_workers=0)
    inputs = [NamedInput("upload.jpg", _jpeg(IMAGES[0]), 7), NamedInput("frame", IMAGES[1]),
              NamedInput("broken.jpg", b"not an image", 9)]
    results = pipe(inputs, topk=2)
    assert [(r.source, r.index, r.ok) for r in results] == [("upload.jpg", 7, True), ("frame", 1, True),
                                                             ("broken.jpg", 9, False)]
    assert results[2].error.startswith("broken.jpg: ")
    assert len(results[0]) == 1 and results[0].image_size == (40, 50)
