"""Pipeline: one Result per input in input order, per-item errors, folders / globs / generators /
video, every vehicle of an image in its one Result, boxes from annotations, save / load."""
from __future__ import annotations

import itertools
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vehicle_cls.classifier import Classifier, Preprocess, crop_resize_on_device, preprocess_images
from vehicle_cls.pipeline import Pipeline
from vehicle_cls.results import Detections
from vehicle_cls.runtime import Capabilities
from vehicle_cls.testing.stand_ins import StandInCropper

PHOTOS = Path(__file__).parents[1] / "data" / "predict"
CLASSES = ["bike", "car", "juggernaut", "minibus", "pickup", "truck"]


@pytest.fixture(scope="module")
def clf() -> Classifier:
    torch.manual_seed(0)
    return Classifier.create("resnet18", classes=CLASSES, preprocess=Preprocess(32, "squash"), device="cpu")


def _rgb(name: str) -> np.ndarray:
    return np.asarray(Image.open(PHOTOS / name).convert("RGB"))


def _reference_probs(clf: Classifier, image: np.ndarray, box=None) -> np.ndarray:
    """Probabilities computed without the pipeline: preprocess (or one device crop) + the network."""
    with torch.inference_mode():
        if box is None:
            x = preprocess_images([image], clf.preprocess)
        else:
            x = crop_resize_on_device(torch.from_numpy(image.copy()).permute(2, 0, 1), torch.tensor([box]),
                                      clf.preprocess)
        return clf.model(x.to(memory_format=torch.channels_last)).softmax(1)[0].numpy()


def _probs(pred) -> np.ndarray:
    """Full probability vector of a vehicle (or a one-vehicle Result) classified with topk >= classes."""
    if hasattr(pred, "vehicles"):
        assert len(pred) == 1
        pred = pred[0]
    out = np.zeros(len(CLASSES))
    for name, p in pred.topk:
        out[CLASSES.index(name)] = p
    return out


@pytest.fixture()
def files(tmp_path) -> dict[str, Path]:
    """Good photos (distinct sizes, so a fake detector can tell them apart) and broken files."""
    d = {}
    for name, crop in (("car5.jpg", (0, 0, 100, 100)), ("truck5.jpg", (0, 0, 100, 90)),
                       ("minibus5.jpg", (0, 0, 80, 100))):
        d[name] = tmp_path / f"good_{name[:-4]}.png"
        Image.open(PHOTOS / name).crop(crop).save(d[name])
    (tmp_path / "empty.jpg").write_bytes(b"")
    data = (PHOTOS / "pickup5.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.jpg").write_text("this is not a picture\n")
    (tmp_path / "emptydir").mkdir()
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copy(PHOTOS / "pickup5.jpg", folder / "a.jpg")
    shutil.copy(PHOTOS / "truck5.jpg", folder / "b.jpg")
    d.update(empty=tmp_path / "empty.jpg", truncated=tmp_path / "truncated.jpg", text=tmp_path / "text.jpg",
             missing=tmp_path / "missing.jpg", emptydir=tmp_path / "emptydir", folder=folder)
    return d


def _load(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_order_and_per_item_errors_nothing_lost(clf, files):
    array = _rgb("pickup5.jpg")[:70]
    inputs = [files["car5.jpg"], files["empty"], str(files["truck5.jpg"]), files["truncated"], files["text"],
              files["missing"], files["emptydir"], array, files["folder"], files["minibus5.jpg"]]
    preds = Pipeline(None, clf, device="cpu", batch_size=3, num_workers=2, precision="fp32")(inputs, topk=6)
    expected_sources = [str(files["car5.jpg"]), str(files["empty"]), str(files["truck5.jpg"]),
                        str(files["truncated"]), str(files["text"]), str(files["missing"]), str(files["emptydir"]),
                        "<ndarray shape=(70, 100, 3) dtype=uint8>", str(files["folder"] / "a.jpg"),
                        str(files["folder"] / "b.jpg"), str(files["minibus5.jpg"])]
    assert [p.source for p in preds] == expected_sources
    assert [p.index for p in preds] == list(range(len(expected_sources)))
    errors = {p.source: p.error for p in preds if p.error}
    assert set(errors) == {expected_sources[i] for i in (1, 3, 4, 5, 6)}
    assert "empty file" in errors[str(files["empty"])]
    assert "truncated" in errors[str(files["truncated"])]
    assert "not a recognised image format" in errors[str(files["text"])]
    assert "no such file" in errors[str(files["missing"])]
    assert "no image or video files" in errors[str(files["emptydir"])]
    for source, error in errors.items():
        assert error.startswith(source) and "\n" not in error  # one line naming the input
    assert all(len(p) == 0 for p in preds if not p.ok)
    good = [p for p in preds if p.ok]
    images = [_load(files["car5.jpg"]), _load(files["truck5.jpg"]), array, _rgb("pickup5.jpg"),
              _rgb("truck5.jpg"), _load(files["minibus5.jpg"])]
    for pred, image in zip(good, images):
        ref = _reference_probs(clf, image)
        np.testing.assert_allclose(_probs(pred), ref, atol=1e-5)
        v = pred.best
        assert len(pred) == 1 and v is pred[0]
        assert v.label == CLASSES[int(ref.argmax())] and v.class_index == int(ref.argmax())
        assert pred.image_size == image.shape[:2] and v.box is None and not v.fallback and v.detection is None
        assert v.score == pytest.approx(float(ref.max()), abs=1e-5)


def test_one_image_and_topk(clf, files):
    preds = Pipeline(None, clf, precision="fp32")(files["car5.jpg"], topk=2)
    assert len(preds) == 1 and len(preds[0].best.topk) == 2
    ref = _reference_probs(clf, _load(files["car5.jpg"]))
    assert [name for name, _ in preds[0].best.topk] == [CLASSES[i] for i in np.argsort(-ref)[:2]]


def test_generator_folder_and_glob_inputs(clf, files, tmp_path):
    pipe = Pipeline(None, clf, batch_size=2, precision="fp32")
    folder_preds = pipe(files["folder"], topk=6)
    assert [p.source for p in folder_preds] == [str(files["folder"] / "a.jpg"), str(files["folder"] / "b.jpg")]
    glob_preds = pipe(str(tmp_path / "good_*.png"), topk=6)
    assert [Path(p.source).name for p in glob_preds] == ["good_car5.png", "good_minibus5.png", "good_truck5.png"]
    gen_preds = pipe((p for p in [files["truck5.jpg"], files["missing"], files["car5.jpg"]]), topk=6)
    assert [p.source for p in gen_preds] == [str(files["truck5.jpg"]), str(files["missing"]), str(files["car5.jpg"])]
    assert [p.ok for p in gen_preds] == [True, False, True]
    np.testing.assert_allclose(_probs(gen_preds[0]), _reference_probs(clf, _load(files["truck5.jpg"])), atol=1e-5)
    nothing = pipe(str(tmp_path / "*.nothing"))
    assert len(nothing) == 1 and "no files match" in nothing[0].error


def test_generator_failure_propagates_and_workers_stop(clf, files):
    def broken():
        yield files["car5.jpg"]
        raise RuntimeError("camera unplugged")

    with pytest.raises(RuntimeError, match="camera unplugged"):
        Pipeline(None, clf, num_workers=2, precision="fp32")(broken())
    assert not [t for t in threading.enumerate() if t.name.startswith("vehicle_cls-")]


def test_stream_is_lazy_on_endless_input_and_cleans_up(clf, files):
    pipe = Pipeline(None, clf, batch_size=2, num_workers=2, precision="fp32")
    stream = pipe.stream(itertools.repeat(files["car5.jpg"]))
    first = list(itertools.islice(stream, 5))
    stream.close()
    assert len(first) == 5 and all(p.ok for p in first)
    assert not [t for t in threading.enumerate() if t.name.startswith("vehicle_cls-")]


# ---- crops chosen by a cropper ---------------------------------------------------------------
class FakeCropper(StandInCropper):
    """Implements the Cropper contract used by the pipeline: detect() + policy (+ to_config)."""

    def __init__(self, by_size: dict[tuple[int, int], list[tuple]], policy, fail_on=None):
        self.by_size, self.policy, self.fail_on, self.calls = by_size, policy, fail_on, []
        self.weights = "faster_rcnn_R_101_FPN_3x"
        self.device = torch.device("cpu")

    def detect(self, images, batch_size=None):
        self.calls.append(len(images))
        out = []
        for im in images:
            if im.shape[:2] == self.fail_on:
                raise RuntimeError("out of memory in the detector")
            rows = self.by_size.get(im.shape[:2], [])
            out.append(Detections(np.array([r[0] for r in rows], dtype=np.float32).reshape(-1, 4),
                                  np.array([r[1] for r in rows]), np.array([r[2] for r in rows], dtype=np.int64),
                                  image_size=im.shape[:2]))
        return out

    def to_config(self):
        return {"config": "faster_rcnn_R_101_FPN_3x", "weights": self.weights, "policy": self.policy.to_dict()}


CAR, BUS, TRUCK, PERSON = 2, 5, 7, 0
DETECTIONS = {
    (100, 100): [((5, 10, 60, 70), 0.9, CAR), ((40, 30, 95, 95), 0.8, TRUCK), ((0, 0, 50, 50), 0.99, PERSON),
                 ((10, 10, 20, 20), 0.3, CAR)],
    (90, 100): [],
    (100, 80): [((8.5, 12.25, 70.5, 88.0), 0.7, BUS)],
}


def test_every_vehicle_mode_one_result_per_image_with_all_vehicles(clf, files):
    from vehicle_cls.cropper import CropPolicy

    cropper = FakeCropper(DETECTIONS, CropPolicy(select="all", min_score=0.5))
    inputs = [files["car5.jpg"], files["text"], files["truck5.jpg"], files["minibus5.jpg"]]
    results = Pipeline(cropper, clf, batch_size=4, precision="fp32")(inputs, topk=6)
    assert [Path(r.source).name for r in results] == ["good_car5.png", "text.jpg", "good_truck5.png",
                                                       "good_minibus5.png"]
    assert [len(r) for r in results] == [2, 0, 1, 1]
    assert cropper.calls == [3]  # one batched detector call for the three decodable images
    street, bad, nothing, bus_image = results
    car_a, car_b = street
    assert (car_a.box, car_a.detection.class_name) == ((5, 10, 60, 70), "car")
    assert car_a.detection.score == pytest.approx(0.9)
    assert (car_b.box, car_b.detection.class_name) == ((40, 30, 95, 95), "truck")
    assert street.best is max((car_a, car_b), key=lambda v: v.score)
    assert bad.error and "not a recognised image format" in bad.error and bad.best is None
    (whole,) = nothing
    assert nothing.ok and whole.fallback and whole.box is None and whole.detection is None
    (bus,) = bus_image
    assert bus.box == (8.5, 12.25, 70.5, 88.0) and bus.detection.class_name == "bus"
    img_a, img_c = _load(files["car5.jpg"]), _load(files["minibus5.jpg"])
    np.testing.assert_allclose(_probs(car_a), _reference_probs(clf, img_a, (5, 10, 60, 70)), atol=1e-5)
    np.testing.assert_allclose(_probs(car_b), _reference_probs(clf, img_a, (40, 30, 95, 95)), atol=1e-5)
    np.testing.assert_allclose(_probs(bus), _reference_probs(clf, img_c, (8.5, 12.25, 70.5, 88.0)), atol=1e-5)
    np.testing.assert_allclose(_probs(whole), _reference_probs(clf, _load(files["truck5.jpg"])), atol=1e-5)
    # one JSON line per input, with every vehicle in it; a flat row per vehicle for tables
    data = json.loads(street.to_json())
    assert [v["detection"]["class_name"] for v in data["vehicles"]] == ["car", "truck"]
    assert data["image_size"] == [100, 100] and data["index"] == 0 and data["error"] is None
    rows = [row for r in results for row in r.to_rows()]
    assert [(Path(r["source"]).name, r["vehicle"]) for r in rows] == [
        ("good_car5.png", 0), ("good_car5.png", 1), ("text.jpg", None), ("good_truck5.png", 0),
        ("good_minibus5.png", 0)]
    assert (rows[1]["x1"], rows[1]["detector_class"]) == (40.0, "truck")


def test_no_fallback_gives_an_ok_result_without_vehicles(clf, files):
    from vehicle_cls.cropper import CropPolicy

    cropper = FakeCropper(DETECTIONS, CropPolicy(select="largest", fallback=False))
    results = Pipeline(cropper, clf, precision="fp32")([files["truck5.jpg"], files["car5.jpg"]])
    assert len(results) == 2
    assert results[0].ok and len(results[0]) == 0 and results[0].best is None and results[0].image_size == (90, 100)
    assert [v.box for v in results[1]] == [(40, 30, 95, 95)]  # the largest vehicle (55x65 > 55x60)


def test_detector_failure_is_isolated_to_its_image(clf, files):
    from vehicle_cls.cropper import CropPolicy

    cropper = FakeCropper(DETECTIONS, CropPolicy(), fail_on=(90, 100))
    pipe = Pipeline(cropper, clf, batch_size=3, precision="fp32")
    preds = pipe([files["car5.jpg"], files["truck5.jpg"], files["minibus5.jpg"]])
    assert [p.ok for p in preds] == [True, False, True] and [len(p) for p in preds] == [1, 0, 1]
    assert "detector failed" in preds[1].error and "out of memory" in preds[1].error
    assert preds[1].error.startswith(str(files["truck5.jpg"]))
    assert cropper.calls == [3, 1, 1, 1]


def test_masked_crop_blanks_outside_the_mask(clf, files):
    from vehicle_cls.cropper import CropChoice

    img = _load(files["car5.jpg"])
    mask = np.zeros(img.shape[:2], bool)
    mask[20:60, 10:50] = True

    class MaskPolicy:
        mask_fill = (124, 116, 104)

        def choose(self, det):
            return [CropChoice((0.0, 0.0, 80.0, 80.0), None, False, mask)]

    cropper = FakeCropper({}, MaskPolicy())
    pred = Pipeline(cropper, clf, precision="fp32")([files["car5.jpg"]], topk=6)[0]
    assert pred[0].mask is mask and pred.to_dict()["vehicles"][0]["has_mask"] is True
    blanked = np.where(mask[:, :, None], img, np.array([124, 116, 104], np.uint8))
    np.testing.assert_allclose(_probs(pred), _reference_probs(clf, blanked, (0, 0, 80, 80)), atol=1e-5)
    assert np.abs(_probs(pred) - _reference_probs(clf, img, (0, 0, 80, 80))).max() > 1e-4


# ---- boxes from annotations ------------------------------------------------------------------
def test_given_boxes_classify_those_regions(clf, files):
    img_a, img_b = _load(files["car5.jpg"]), _load(files["truck5.jpg"])
    boxes = [(5, 10, 60, 70), None, [(0, 0, 50, 50), (-20, 40, 120, 95)], (200, 200, 300, 300)]
    inputs = [files["car5.jpg"], files["truck5.jpg"], files["car5.jpg"], files["truck5.jpg"]]
    preds = Pipeline(None, clf, precision="fp32")(inputs, boxes=boxes, topk=6)
    assert [len(p) for p in preds] == [1, 1, 2, 0]
    np.testing.assert_allclose(_probs(preds[0]), _reference_probs(clf, img_a, (5, 10, 60, 70)), atol=1e-5)
    np.testing.assert_allclose(_probs(preds[1]), _reference_probs(clf, img_b), atol=1e-5)
    assert preds[2][1].box == (0.0, 40.0, 100.0, 95.0)  # clamped to the 100x100 image
    np.testing.assert_allclose(_probs(preds[2][1]), _reference_probs(clf, img_a, (0, 40, 100, 95)), atol=1e-5)
    assert preds[3].error and "outside the 100x90 image" in preds[3].error
    with pytest.raises(ValueError, match="boxes has 1 entries but there are 2 inputs"):
        Pipeline(None, clf, precision="fp32")([files["car5.jpg"], files["truck5.jpg"]], boxes=[None])


# ---- video -----------------------------------------------------------------------------------
def _write_video(path: Path, frames: list[np.ndarray]) -> None:
    cv2 = pytest.importorskip("cv2")
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()


def _read_video(path: Path) -> list[np.ndarray]:
    import cv2

    cap, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


def test_video_frames_with_stride(clf, tmp_path, files):
    base = _rgb("car5.jpg")[:48, :64]
    frames = [np.ascontiguousarray(np.roll(base, 6 * i, axis=1)) for i in range(7)]
    video = tmp_path / "clip.mp4"
    _write_video(video, frames)
    decoded = _read_video(video)  # the codec is lossy: the reference is what OpenCV decodes
    assert len(decoded) == 7
    (tmp_path / "broken.mp4").write_text("not a video")
    pipe = Pipeline(None, clf, batch_size=2, precision="fp32")
    preds = pipe.stream([video, files["car5.jpg"], tmp_path / "broken.mp4"], frame_stride=3, topk=6)
    preds = list(preds)
    assert [(Path(p.source).name, p.frame, p.timestamp) for p in preds] == [
        ("clip.mp4", 0, 0.0), ("clip.mp4", 3, 0.3), ("clip.mp4", 6, 0.6), ("good_car5.png", None, None),
        ("broken.mp4", None, None)]  # written at 10 frames per second
    for pred, index in zip(preds[:3], (0, 3, 6)):
        np.testing.assert_allclose(_probs(pred), _reference_probs(clf, decoded[index]), atol=1e-5)
        assert pred.image_size == (48, 64)
    assert preds[4].error and "video" in preds[4].error
    assert json.loads(preds[1].to_json())["timestamp"] == 0.3


def test_videos_inside_folders_are_read(clf, tmp_path):
    base = _rgb("car5.jpg")[:48, :64]
    folder = tmp_path / "clips"
    (folder / "sub").mkdir(parents=True)
    _write_video(folder / "sub" / "b.mp4", [base] * 2)
    shutil.copy(PHOTOS / "truck5.jpg", folder / "a.jpg")
    results = Pipeline(None, clf, precision="fp32")(folder)
    assert [(Path(r.source).name, r.frame) for r in results] == [("a.jpg", None), ("b.mp4", 0), ("b.mp4", 1)]
    assert all(r.ok for r in results)


# ---- misc ------------------------------------------------------------------------------------
def test_keep_images_and_plot(clf, files):
    pred = Pipeline(None, clf, precision="fp32")([files["car5.jpg"]], keep_images=True)[0]
    assert np.array_equal(pred.image, _load(files["car5.jpg"]))
    assert pred.plot().size == (100, 100)
    assert np.abs(np.asarray(pred.plot(), np.int16) - pred.image).max() > 0  # the label is drawn


def test_bf16_autocast_close_to_fp32(clf, files):
    fp32 = Pipeline(None, clf, precision="fp32")([files["car5.jpg"]], topk=6)[0]
    bf16 = Pipeline(None, clf, precision="bf16")([files["car5.jpg"]], topk=6)[0]
    np.testing.assert_allclose(_probs(bf16), _probs(fp32), atol=0.05)


def test_save_and_load_rebuilds_the_cropper(clf, files, tmp_path, monkeypatch):
    from vehicle_cls import cropper as cropper_pkg
    from vehicle_cls.cropper import CropPolicy

    fake = FakeCropper(DETECTIONS, CropPolicy(select="all"))  # zoo weights: recorded by name
    Pipeline(fake, clf).save(tmp_path / "bundle")
    assert json.loads((tmp_path / "bundle" / "config.json").read_text())["cropper"] == fake.to_config()
    seen = {}

    def from_config(d, device="cpu", **kw):
        seen.update(d=d, device=str(device))
        return fake

    monkeypatch.setattr(cropper_pkg.Cropper, "from_config", staticmethod(from_config))
    pipe = Pipeline.load(tmp_path / "bundle")
    assert pipe.cropper is fake and seen == {"d": fake.to_config(), "device": "cpu"}
    assert [len(r) for r in pipe([files["car5.jpg"]])] == [2]
    whole = Pipeline.load(tmp_path / "bundle", crop=False)
    assert whole.cropper is None and [len(r) for r in whole([files["car5.jpg"]])] == [1]
    whole.save(tmp_path / "whole")  # a pipeline without cropper saves null
    assert json.loads((tmp_path / "whole" / "config.json").read_text())["cropper"] is None
    assert Pipeline.load(tmp_path / "whole").cropper is None


def test_custom_detector_weights_are_copied_into_the_bundle(clf, files, tmp_path, monkeypatch):
    from vehicle_cls import cropper as cropper_pkg
    from vehicle_cls.cropper import CropPolicy

    weights = tmp_path / "elsewhere" / "my_detector.pth"
    weights.parent.mkdir()
    weights.write_bytes(b"detector weights")
    fake = FakeCropper(DETECTIONS, CropPolicy())
    fake.weights = str(weights)  # an absolute path, as Cropper.from_checkpoint records it
    Pipeline(fake, clf).save(tmp_path / "bundle")
    section = json.loads((tmp_path / "bundle" / "config.json").read_text())["cropper"]
    assert section["weights"] == "cropper/my_detector.pth"  # relative: the bundle can move
    assert (tmp_path / "bundle" / "cropper" / "my_detector.pth").read_bytes() == b"detector weights"
    shutil.rmtree(weights.parent)
    shutil.move(tmp_path / "bundle", tmp_path / "moved")
    seen = {}

    def from_config(d, device="cpu", **kw):
        seen.update(d)
        return fake

    monkeypatch.setattr(cropper_pkg.Cropper, "from_config", staticmethod(from_config))
    Pipeline.load(tmp_path / "moved")
    assert Path(seen["weights"]) == (tmp_path / "moved" / "cropper" / "my_detector.pth").resolve()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_path_matches_cpu(files):
    torch.manual_seed(0)
    clf = Classifier.create("resnet18", classes=CLASSES, preprocess=Preprocess(64, "letterbox"), device="cpu")
    inputs = [files["car5.jpg"], files["empty"], files["minibus5.jpg"], files["truck5.jpg"]]
    boxes = [(5, 10, 60, 70), None, None, [(0, 0, 50, 50), (20, 20, 90, 80)]]
    cpu = Pipeline(None, clf, device="cpu", batch_size=2, precision="fp32")(inputs, boxes=boxes, topk=6)
    for precision, atol in (("fp32", 1e-4), ("fp16", 2e-2), ("bf16", 5e-2)):
        gpu = Pipeline(None, clf, device="cuda", batch_size=2, precision=precision)(inputs, boxes=boxes, topk=6)
        assert [(p.source, [v.box for v in p], p.ok) for p in gpu] == [(p.source, [v.box for v in p], p.ok) for p in cpu]
        for a, b in zip(gpu, cpu):
            for va, vb in zip(a, b):
                np.testing.assert_allclose(_probs(va), _probs(vb), atol=atol)
    clf.to("cpu")


def test_cropper_crop_shares_detect_and_choose(files):
    """Cropper.crop: the same detect -> choose as the pipeline, crops cut on the CPU, failures per image."""
    from vehicle_cls.cropper import Cropper, CropPolicy

    class Backend:  # the detector network stand-in behind a real Cropper
        capabilities = Capabilities()

        def __call__(self, images):
            if any(im.shape[:2] == (90, 100) for im in images):
                raise RuntimeError("out of memory in the detector")
            return FakeCropper(DETECTIONS, None).detect(images)

    cropper = Cropper(Backend(), "faster_rcnn_R_101_FPN_3x", "fake", CropPolicy(select="all"), batch_size=4)
    crops = cropper.crop([files["car5.jpg"], files["text"], files["truck5.jpg"], files["minibus5.jpg"]])
    image = _load(files["car5.jpg"])
    assert [len(c) for c in crops] == [2, 0, 0, 1]  # text: not an image; truck5: its detector call failed
    np.testing.assert_array_equal(crops[0][0], image[10:70, 5:60])
    np.testing.assert_array_equal(crops[0][1], image[30:95, 40:95])
    np.testing.assert_array_equal(crops[3][0], _load(files["minibus5.jpg"])[12:88, 8:71])
