"""KerasBackend: seed-B style Keras classifiers (.keras / .h5) give the model's own probabilities."""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("tensorflow is not installed (pip install vehicle-cls[keras])", allow_module_level=True)

from PIL import Image  # noqa: E402

from vehicle_cls.classifier.keras.backend import KerasBackend  # noqa: E402
from vehicle_cls.classifier.keras.loading import import_keras  # noqa: E402

keras = import_keras()  # TensorFlow after torchvision: the other order segfaults (triton), see import_keras
tf = sys.modules["tensorflow"]

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy-2 notices inside keras

PHOTOS = sorted((Path(__file__).parents[1] / "data" / "integrations").glob("*.jpg"))
CLASSES = ["bike", "car", "juggernaut"]


def _odd_image(photos: list[np.ndarray]) -> np.ndarray:
    """A non-square real crop (80x100) so the resize actually changes the aspect ratio."""
    return np.ascontiguousarray(photos[0][10:90, :, :])


def _reference_input(images, size, preprocess=keras.applications.resnet50.preprocess_input):
    """Independent preprocessing: TF's bilinear resize (as image_dataset_from_directory) + keras'."""
    batch = np.stack([tf.image.resize(im.astype(np.float32), (size, size), method="bilinear").numpy() for im in images])
    return preprocess(batch)


@pytest.fixture(scope="module")
def tiny_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(3, kernel_initializer=keras.initializers.RandomNormal(stddev=0.05))(x)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def resnet_model():
    """Seed B: ResNet50(include_top=False, pooling="avg") + Dropout + Dense(N, softmax)."""
    keras.utils.set_random_seed(0)
    base = keras.applications.ResNet50(weights=None, include_top=False, pooling="avg", input_shape=(64, 64, 3))
    x = keras.layers.Dropout(0.3)(base.output)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    return keras.Model(base.input, outputs)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory, tiny_model, resnet_model):
    root = tmp_path_factory.mktemp("keras_models")
    files = {
        "tiny.keras": root / "tiny.keras",
        "tiny.h5": root / "tiny.h5",
        "resnet.keras": root / "resnet.keras",
    }
    tiny_model.save(files["tiny.keras"])
    tiny_model.save(files["tiny.h5"])  # legacy HDF5
    resnet_model.save(files["resnet.keras"])
    return files


@pytest.mark.parametrize("name", ["tiny.keras", "tiny.h5"])
def test_tiny_model_matches_model_predict(model_files, tiny_model, name, rgb_photos):
    images = rgb_photos("integrations") + [_odd_image(rgb_photos("integrations"))]
    backend = KerasBackend.from_file(model_files[name], CLASSES, preprocess="caffe")
    assert backend.input_size == 32  # taken from the model's fixed input shape
    probs = backend.predict_proba(images, batch_size=4)
    expected = tiny_model.predict(_reference_input(images, 32), verbose=0)
    assert probs.shape == (len(images), 3)
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_seed_b_resnet50_format(model_files, resnet_model, rgb_photos):
    images = rgb_photos("integrations")[:4]
    backend = KerasBackend.from_file(model_files["resnet.keras"], CLASSES, preprocess="caffe", input_size=64)
    probs = backend.predict_proba(images)
    expected = resnet_model.predict(_reference_input(images, 64), verbose=0)
    np.testing.assert_allclose(probs, expected, rtol=1e-4, atol=1e-6)
    assert not np.allclose(probs, probs[:1])  # the images really give different answers



def test_logits_get_softmax_and_activation_layers_are_detected(tmp_path, rgb_photos):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    logits = keras.layers.Dense(3, kernel_initializer=keras.initializers.RandomNormal(stddev=0.5))(x)
    logit_model = keras.Model(inputs, logits)
    softmax_model = keras.Model(inputs, keras.layers.Activation("softmax")(logits))
    logit_model.save(tmp_path / "logits.keras")
    softmax_model.save(tmp_path / "softmax.keras")
    images = rgb_photos("integrations")
    reference = logit_model.predict(_reference_input(images, 16), verbose=0).astype(np.float64)
    e = np.exp(reference - reference.max(axis=1, keepdims=True))
    expected = e / e.sum(axis=1, keepdims=True)  # hand softmax of the raw outputs
    assert not np.allclose(reference.sum(axis=1), 1.0)  # the raw outputs really are logits

    from_logits = KerasBackend.from_file(tmp_path / "logits.keras", CLASSES).predict_proba(images)
    from_softmax = KerasBackend.from_file(tmp_path / "softmax.keras", CLASSES).predict_proba(images)
    np.testing.assert_allclose(from_logits, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(from_softmax, expected, rtol=1e-5, atol=1e-6)  # not softmaxed twice


@pytest.mark.parametrize("mode", ["tf", "torch"])
def test_other_keras_preprocess_modes(model_files, tiny_model, mode, rgb_photos):
    images = rgb_photos("integrations")[:3]
    backend = KerasBackend.from_file(model_files["tiny.keras"], CLASSES, preprocess=mode)
    reference = _reference_input(
        images, 32, lambda x: keras.applications.imagenet_utils.preprocess_input(x, mode=mode)
    )
    expected = tiny_model.predict(reference, verbose=0)
    np.testing.assert_allclose(backend.predict_proba(images), expected, rtol=1e-5, atol=1e-6)


def test_center_crop_and_letterbox_resize(model_files, rgb_photos):
    image = _odd_image(rgb_photos("integrations"))  # 80 high, 100 wide: crop 10 px each side / pad 10 rows top and bottom
    crop = KerasBackend.from_file(model_files["tiny.keras"], CLASSES, resize="center_crop", preprocess="none")
    pad = KerasBackend.from_file(model_files["tiny.keras"], CLASSES, resize="letterbox", preprocess="none")
    cropped = image[:, 10:90].astype(np.float32)
    padded = np.zeros((100, 100, 3), np.float32)
    padded[10:90] = image
    expected_crop = tf.image.resize(cropped, (32, 32), method="bilinear").numpy()
    expected_pad = tf.image.resize(padded, (32, 32), method="bilinear").numpy()
    np.testing.assert_allclose(crop.preprocess_images([image])[0], expected_crop, atol=1e-3)
    np.testing.assert_allclose(pad.preprocess_images([image])[0], expected_pad, atol=1e-3)


def test_bundle_round_trip(model_files, tmp_path, rgb_photos):
    images = rgb_photos("integrations")
    backend = KerasBackend.from_file(model_files["tiny.keras"], CLASSES, preprocess="caffe")
    backend.save(tmp_path / "bundle")
    config = json.loads((tmp_path / "bundle" / "config.json").read_text())
    assert (config["format_version"], config["backend"], config["classes"], config["num_classes"]) == (
        1, "keras", CLASSES, 3,
    )
    assert config["keras"]["model_file"] == "model.keras" and (tmp_path / "bundle" / "model.keras").is_file()
    assert (config["keras"]["preprocess"], config["keras"]["input_size"], config["keras"]["resize"]) == (
        "caffe", 32, "squash",
    )
    again = KerasBackend.load(tmp_path / "bundle")
    np.testing.assert_array_equal(again.predict_proba(images), backend.predict_proba(images))


def test_bundle_save_is_one_directory_swap_with_normal_permissions(model_files, tmp_path):
    import stat

    old = os.umask(0o022)
    try:
        backend = KerasBackend.from_file(model_files["tiny.keras"], CLASSES, preprocess="caffe")
        first = backend.save(tmp_path / "bundle")
        inode = (first / "model.keras").stat().st_ino
        backend.save(first, training={"epochs": 2})
    finally:
        os.umask(old)
    assert stat.S_IMODE((first / "model.keras").stat().st_mode) == 0o644  # not mkstemp's 0600
    assert (first / "model.keras").stat().st_ino != inode  # the second save came in whole, as a new file
    assert json.loads((first / "config.json").read_text())["training"] == {"epochs": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # no temporary directory left beside it


def test_h5_round_trip_keeps_other_config_fields(model_files, tmp_path, rgb_photos):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"cropper": {"config": "faster_rcnn_R_101_FPN_3x"}}))
    backend = KerasBackend.from_file(model_files["tiny.h5"], CLASSES, preprocess="tf", resize="letterbox")
    backend.save(bundle, training={"epochs": 1})
    config = json.loads((bundle / "config.json").read_text())
    assert config["cropper"] == {"config": "faster_rcnn_R_101_FPN_3x"} and config["training"] == {"epochs": 1}
    again = KerasBackend.load(bundle)
    assert (again.settings.preprocess, again.settings.resize, again.classes) == ("tf", "letterbox", CLASSES)
    images = rgb_photos("integrations")
    np.testing.assert_array_equal(again.predict_proba(images), backend.predict_proba(images))


def test_predict_keeps_order_and_reports_bad_inputs(model_files, tiny_model, rgb_photos):
    photos = rgb_photos("integrations")[:2]
    from vehicle_cls.classifier import Classifier

    clf = Classifier(KerasBackend.from_file(model_files["tiny.keras"], CLASSES))
    results = clf.predict([PHOTOS[0], b"not an image", photos[1]], topk=2)
    preds = [r.best if r.ok else r for r in results]
    expected = tiny_model.predict(_reference_input(photos, 32), verbose=0)
    assert [r.ok for r in results] == [True, False, True] and [len(r) for r in results] == [1, 0, 1]
    assert results[0].source == str(PHOTOS[0]) and "bytes" in results[1].source and results[1].error
    for pred, row in zip([preds[0], preds[2]], expected):
        assert pred.class_index == int(np.argmax(row)) and pred.label == CLASSES[pred.class_index]
        assert pred.score == pytest.approx(float(row.max()), rel=1e-5)
        assert len(pred.topk) == 2 and pred.topk[0][1] >= pred.topk[1][1]


def test_errors_name_the_file(tmp_path, model_files):
    fake = tmp_path / "model.keras"
    fake.write_text("this is not a model\n")
    with pytest.raises(ValueError, match=r"model\.keras.*not a Keras model"):
        KerasBackend.from_file(fake, CLASSES)
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        KerasBackend.from_file(tmp_path / "missing.keras", CLASSES)
    with pytest.raises(ValueError, match="3 output units but 2 class names"):
        KerasBackend.from_file(model_files["tiny.keras"], ["a", "b"])
    with pytest.raises(ValueError, match="input_size=64 but the model takes 32x32"):
        KerasBackend.from_file(model_files["tiny.keras"], CLASSES, input_size=64)
    with pytest.raises(ValueError, match="preprocess must be one of"):
        KerasBackend.from_file(model_files["tiny.keras"], CLASSES, preprocess="bgr")
    # a bundle whose config lists the wrong number of classes
    backend = KerasBackend.from_file(model_files["tiny.keras"], CLASSES)
    backend.save(tmp_path / "bundle")
    config = json.loads((tmp_path / "bundle" / "config.json").read_text())
    config["classes"], config["num_classes"] = ["a", "b", "c", "d"], 4
    (tmp_path / "bundle" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="3 output units but 4 class names"):
        KerasBackend.load(tmp_path / "bundle")
    with pytest.raises(ValueError, match="expected an RGB uint8"):
        backend.predict_proba([np.zeros((8, 8), np.uint8)])


def test_classifier_and_pipeline_open_a_keras_bundle(model_files, tiny_model, tmp_path, rgb_photos):
    """``Classifier.load`` / ``Pipeline.load`` dispatch on ``"backend": "keras"`` to this backend."""
    classifier_mod = pytest.importorskip("vehicle_cls.classifier")
    pipeline_mod = pytest.importorskip("vehicle_cls.pipeline")
    KerasBackend.from_file(model_files["tiny.keras"], CLASSES).save(tmp_path / "bundle")
    clf = classifier_mod.Classifier.load(tmp_path / "bundle")
    assert clf.backend.name == "keras" and clf.classes == CLASSES
    preds = pipeline_mod.Pipeline.load(tmp_path / "bundle", num_workers=0)([str(p) for p in PHOTOS[:3]], topk=3)
    expected = tiny_model.predict(_reference_input(rgb_photos("integrations")[:3], 32), verbose=0)
    for result, row in zip(preds, expected):
        pred = result.best
        assert result.ok and len(result) == 1 and pred.class_index == int(np.argmax(row))
        assert [p for _, p in pred.topk] == pytest.approx(sorted(row.tolist(), reverse=True), rel=1e-5)
