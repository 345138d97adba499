"""Loading detectron2 weights: zoo .pkl end to end, refusing unsafe pickles, strict names, .pth, .safetensors."""
from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from vehicle_cls.cropper import CheckpointError, Cropper, CropPolicy
from vehicle_cls.cropper import InferenceSettings as Settings
from vehicle_cls.cropper.checkpoint import load_into, load_state_dict, load_zoo_pkl
from vehicle_cls.cropper.rcnn import GeneralizedRCNN
from vehicle_cls.results import Detections
from vehicle_cls.testing.synthetic import synthetic_d2_state_dict, write_zoo_pkl

PHOTOS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "photos")  # tests/data/photos
SMALL = {"min_size_test": 160, "max_size_test": 320}  # keeps the 101-layer forward pass quick


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine more threads only spin against each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def state() -> dict[str, np.ndarray]:
    return synthetic_d2_state_dict("faster_rcnn_R_101_FPN_3x", seed=0)


@pytest.fixture(scope="module")
def zoo_pkl(state, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("zoo") / "model_final_f6e8b1.pkl"
    write_zoo_pkl(state, path)
    return str(path)


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    car = np.asarray(Image.open(os.path.join(PHOTOS, "car1.jpg")).convert("RGB").resize((240, 180)))
    truck = np.asarray(Image.open(os.path.join(PHOTOS, "truck10.jpg")).convert("RGB").resize((150, 200)))
    return [car, truck]


@pytest.fixture(scope="module")
def cropper(zoo_pkl) -> Cropper:
    return Cropper.from_checkpoint(zoo_pkl, config="faster_rcnn_R_101_FPN_3x", backend="torch", **SMALL)


@pytest.fixture(scope="module")
def detections(cropper, photos) -> list[Detections]:
    return cropper.detect(photos)


@pytest.fixture(scope="module")
def empty_model() -> GeneralizedRCNN:
    return GeneralizedRCNN(mask_on=False)


def test_zoo_pkl_end_to_end(detections, photos):
    assert len(detections) == 2
    for det, im in zip(detections, photos):
        assert isinstance(det, Detections) and det.image_size == im.shape[:2]
        assert 0 < len(det) <= 100 and det.masks is None
        h, w = im.shape[:2]
        assert np.all(det.boxes[:, 0] >= 0) and np.all(det.boxes[:, 2] <= w)
        assert np.all(det.boxes[:, 1] >= 0) and np.all(det.boxes[:, 3] <= h)
        assert np.all(det.boxes[:, 2] > det.boxes[:, 0]) and np.all(det.boxes[:, 3] > det.boxes[:, 1])
        assert np.all(det.scores > 0.05) and np.all(np.diff(det.scores) <= 0)  # NMS output order
        assert np.all((det.classes >= 0) & (det.classes < 80))


def test_pth_and_safetensors_load_the_same_network(state, cropper, detections, photos, tmp_path):
    pth = tmp_path / "model_final.pth"
    torch.save({"model": {k: torch.from_numpy(v) for k, v in state.items()}, "iteration": 5}, pth)
    from_pth = load_state_dict(pth)
    assert set(from_pth) == set(state)
    assert all(np.array_equal(from_pth[k].numpy(), state[k]) for k in state)
    saved = cropper.save_weights(tmp_path / "cropper.safetensors")
    from_st = load_state_dict(saved)
    assert all(np.array_equal(from_st[k].numpy(), state[k]) for k in state)
    again = Cropper.from_checkpoint(saved, **SMALL).detect(photos[:1])[0]
    np.testing.assert_array_equal(again.boxes, detections[0].boxes)
    np.testing.assert_array_equal(again.classes, detections[0].classes)


def test_from_zoo_uses_the_cache_and_settings(zoo_pkl, tmp_path, photos, detections):
    from vehicle_cls.weights import KNOWN_WEIGHTS

    cached = tmp_path / KNOWN_WEIGHTS["faster_rcnn_R_101_FPN_3x"].filename
    os.symlink(zoo_pkl, cached)  # a file already in the cache is used, no download
    c = Cropper.from_zoo("faster_rcnn_R_101_FPN_3x", cache_dir=tmp_path, classes=("truck",), margin=0.1,
                         score_thresh_test=0.3, detections_per_image=5, **SMALL)
    # a score threshold of 0.3 keeps exactly the default run's detections above 0.3 (lower-scored
    # boxes never suppress higher ones in NMS), and top-k 5 keeps the first five of those
    for det, ref in zip(c.detect(photos), detections):
        want = ref[np.flatnonzero(ref.scores > 0.3)[:5]]
        np.testing.assert_array_equal(det.classes, want.classes)
        np.testing.assert_allclose(det.boxes, want.boxes, rtol=0, atol=1e-4)
    cfg = json.loads(json.dumps(c.to_config()))
    assert cfg["weights"] == "faster_rcnn_R_101_FPN_3x" and cfg["config"] == "faster_rcnn_R_101_FPN_3x"
    assert cfg["backend"] == "torch" and cfg["policy"]["classes"] == ["truck"] and cfg["policy"]["margin"] == 0.1
    assert cfg["test_settings"]["score_thresh_test"] == 0.3 and cfg["test_settings"]["min_size_test"] == 160


def test_from_config_rebuilds_the_same_cropper(cropper, zoo_pkl, monkeypatch):
    cropper.policy = CropPolicy(classes=("car",), margin=0.1)
    try:
        cfg = json.loads(json.dumps(cropper.to_config()))
    finally:
        cropper.policy = CropPolicy()
    assert cfg["weights"] == zoo_pkl and cfg["test_settings"]["nms_thresh_test"] == 0.5
    calls = []
    monkeypatch.setattr(Cropper, "from_checkpoint", classmethod(lambda cls, *a, **k: calls.append((a, k))))
    monkeypatch.setattr(Cropper, "from_zoo", classmethod(lambda cls, *a, **k: calls.append(("zoo", a, k))))
    Cropper.from_config(cfg, device="cpu")
    (args, kwargs), = calls
    assert args == (zoo_pkl,) and kwargs["config"] == "faster_rcnn_R_101_FPN_3x" and kwargs["backend"] == "torch"
    assert kwargs["policy"] == CropPolicy(classes=("car",), margin=0.1) and kwargs["device"] == "cpu"
    assert Settings(**{k: v for k, v in kwargs.items() if k in cfg["test_settings"]}) == cropper.settings
    Cropper.from_config({**cfg, "weights": "mask_rcnn_R_101_FPN_3x"}, cache_dir="/x")
    assert calls[1][0] == "zoo" and calls[1][1] == ("mask_rcnn_R_101_FPN_3x",) and calls[1][2]["cache_dir"] == "/x"
    with pytest.raises(ValueError, match=r"unknown key cropper\.colour; known: backend, batch_size"):
        Cropper.from_config({**cfg, "colour": 1})
    from vehicle_cls.cropper.detectron2_backend import detectron2_available

    Cropper.from_config({**cfg, "backend": "detectron2"})  # a bundle made where detectron2 was installed
    assert calls[-1][1]["backend"] == ("detectron2" if detectron2_available() else "torch")


def test_detect_accepts_paths_and_batches(cropper, photos, detections, tmp_path):
    path = tmp_path / "car.png"
    Image.fromarray(photos[0]).save(path)
    by_path = cropper.detect(str(path))[0]  # a single image, given by path
    np.testing.assert_array_equal(by_path.boxes, detections[0].boxes)
    batched = cropper.detect(photos, batch_size=2)  # padded together: close to, not bit-equal to, batch 1
    assert [d.image_size for d in batched] == [p.shape[:2] for p in photos]


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"backbone.x": Evil()}, "__author__": "Detectron2 Model Zoo"}, f, protocol=2)
    with pytest.raises(CheckpointError, match=r"evil\.pkl.*(posix|os)\.system"):
        load_zoo_pkl(path)
    with pytest.raises(CheckpointError, match="refusing"):
        Cropper.from_checkpoint(path)
    assert not marker.exists()

    class Eval:
        def __reduce__(self):
            return (eval, ("1 + 1",))

    with open(path, "wb") as f:
        pickle.dump({"model": {"a": Eval()}}, f)
    with pytest.raises(CheckpointError, match="builtins.eval"):
        load_zoo_pkl(path)


def test_pkl_layout_errors(tmp_path):
    path = tmp_path / "bad.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"a": [1, 2]}}, f, protocol=2)
    with pytest.raises(CheckpointError, match="'a' is list"):
        load_zoo_pkl(path)
    path.write_bytes(pickle.dumps({"model": {"a": np.zeros(3)}})[:20])
    with pytest.raises(CheckpointError, match=r"bad\.pkl: not a readable"):
        load_zoo_pkl(path)
    with pytest.raises(CheckpointError, match="unknown weights format '.bin'"):
        (tmp_path / "w.bin").write_bytes(b"x")
        load_state_dict(tmp_path / "w.bin")
    with pytest.raises(CheckpointError, match="no such weights file"):
        load_state_dict(tmp_path / "missing.pkl")


def test_strict_names(state, empty_model):
    tensors = {k: torch.from_numpy(v) for k, v in state.items()}
    missing = dict(tensors)
    del missing["roi_heads.box_predictor.bbox_pred.bias"]
    with pytest.raises(CheckpointError, match=r"src\.pkl.*missing tensor\(s\) 'roi_heads\.box_predictor\.bbox_pred\.bias'"):
        load_into(empty_model, missing, "src.pkl")
    extra = {**tensors, "roi_heads.mask_head.deconv.weight": torch.zeros(256, 256, 2, 2)}
    with pytest.raises(CheckpointError, match=r"unexpected tensor\(s\) 'roi_heads\.mask_head\.deconv\.weight'"):
        load_into(empty_model, extra, "src.pkl")
    wrong = {**tensors, "roi_heads.box_predictor.cls_score.bias": torch.zeros(91)}
    with pytest.raises(CheckpointError, match=r"'roi_heads\.box_predictor\.cls_score\.bias' has shape \(91,\)"):
        load_into(empty_model, wrong, "src.pkl")


def test_ignored_keys_and_missing_frozen_bn_statistics(state, empty_model):
    tensors = {k: torch.from_numpy(v) for k, v in state.items()}
    tensors["pixel_mean"] = torch.zeros(3, 1, 1)
    tensors["pixel_std"] = torch.ones(3, 1, 1)
    tensors["proposal_generator.anchor_generator.cell_anchors.0"] = torch.zeros(3, 4)
    name = "backbone.bottom_up.res3.1.conv2.norm"
    del tensors[f"{name}.running_mean"], tensors[f"{name}.running_var"]
    load_into(empty_model, tensors, "old.pkl")
    sd = empty_model.state_dict()
    assert torch.equal(sd[f"{name}.running_mean"], torch.zeros(128))
    assert torch.equal(sd[f"{name}.running_var"], torch.ones(128))
    assert np.array_equal(sd[f"{name}.weight"].numpy(), state[f"{name}.weight"])
    del tensors[f"{name}.weight"]  # the affine parameters are not optional
    with pytest.raises(CheckpointError, match=f"'{name}.weight'"):
        load_into(empty_model, tensors, "old.pkl")


def test_option_errors(zoo_pkl):
    with pytest.raises(ValueError, match="unknown cropper config 'retinanet'"):
        Cropper.from_checkpoint(zoo_pkl, config="retinanet")
    with pytest.raises(TypeError, match=r"unknown cropper option min_size \(did you mean min_size_test\?\)"):
        Cropper.from_checkpoint(zoo_pkl, min_size=5)
    with pytest.raises(ValueError, match="backend must be one of"):
        Cropper.from_checkpoint(zoo_pkl, backend="onnx")


def test_mask_model_end_to_end(tmp_path, photos):
    """Mask R-CNN from our .safetensors form: masks come back, and mask mode blanks the background."""
    from safetensors.numpy import save_file

    path = tmp_path / "mask.safetensors"
    save_file(synthetic_d2_state_dict("mask_rcnn_R_101_FPN_3x", seed=0), str(path))
    with pytest.raises(ValueError, match="needs the mask model"):
        Cropper.from_checkpoint(path, config="faster_rcnn_R_101_FPN_3x", mask=True, **SMALL)
    c = Cropper.from_checkpoint(path, config="mask_rcnn_R_101_FPN_3x", mask=True, min_score=0.0,
                                classes=tuple(range(80)), detections_per_image=20, **SMALL)
    det = c.detect(photos[:1])[0]
    h, w = photos[0].shape[:2]
    assert det.masks is not None and det.masks.shape == (len(det), h, w) and det.masks.dtype == bool
    # a pasted mask never reaches outside its box (values there are below the 0.5 threshold)
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    for box, mask in zip(det.boxes, det.masks):
        inside = (xs > box[0]) & (xs < box[2]) & (ys > box[1]) & (ys < box[3])
        assert not np.any(mask & ~inside)
    choice = c.choose(photos[:1])[0][0]
    crop = c.crop(photos[:1])[0][0]
    x1, y1 = int(np.floor(choice.box[0])), int(np.floor(choice.box[1]))
    blanked = ~choice.mask[y1 : y1 + crop.shape[0], x1 : x1 + crop.shape[1]]
    assert np.all(crop[blanked] == np.array(c.policy.mask_fill, dtype=np.uint8))


def test_a_bad_input_does_not_lose_the_rest_of_the_batch(cropper, photos, detections, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    out = cropper.detect([photos[0], str(broken), photos[1]])
    assert len(out) == 3
    assert out[1].error is not None and str(broken) in out[1].error and len(out[1]) == 0
    for got, want in zip((out[0], out[2]), detections):
        assert got.error is None
        np.testing.assert_array_equal(got.boxes, want.boxes)
        np.testing.assert_array_equal(got.classes, want.classes)
    choices = cropper.choose([str(broken)])
    assert choices == [[]]  # a failed input is not silently replaced by the whole-image fallback
