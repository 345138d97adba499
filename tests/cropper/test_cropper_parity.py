"""Parity of our torch R101-FPN with real detectron2, on synthetic weights and real photos.

``tests/data/d2_reference/`` holds what detectron2 itself (built from its own model-zoo configs,
weights loaded by its ``DetectionCheckpointer`` from a zoo ``.pkl``) output on the deterministic
weights of :func:`vehicle_cls.testing.synthetic.synthetic_d2_state_dict`, for the real photos of
``tests/data/photos`` upscaled to a few sizes; ``tools/record_detectron2.py`` wrote them. Here the
same weights are written to a zoo ``.pkl`` and loaded through our public API, and every
detectron2 detection must be matched by one of ours: same class, box IoU >= 0.999, |score
difference| <= 1e-4, same number of detections, and for the mask model masks agreeing on
>= 99.9% of the pixels. detectron2 is not needed here (only for the optional live check at the end).
"""
from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from vehicle_cls.testing.synthetic import d2_r101_fpn_shapes, synthetic_d2_state_dict, write_zoo_pkl

DATA = Path(__file__).parents[1] / "data"
REF_DIR = DATA / "d2_reference"
PHOTOS = DATA / "photos"
REFERENCE = json.loads((REF_DIR / "reference.json").read_text()) if (REF_DIR / "reference.json").exists() else None

IOU_MIN = 0.999
SCORE_TOL = 1e-4
MASK_AGREE_MIN = 0.999

pytestmark = pytest.mark.skipif(REFERENCE is None, reason="tests/data/d2_reference/reference.json is missing")


def _cases() -> list[dict]:
    return [] if REFERENCE is None else REFERENCE["cases"]


def _case_params() -> list:
    params = []
    for case in _cases():
        slow = case["min_size_test"] >= 800  # detectron2's default test size: ~1 Mpx per image
        params.append(pytest.param(case, id=case["name"], marks=[pytest.mark.slow] if slow else []))
    return params


def load_rgb(photo: str, size: list[int], resample: str) -> np.ndarray:
    """The recorder's input: the photo, RGB, upscaled with PIL to (height, width)."""
    from PIL import Image

    assert resample == "bicubic"
    with Image.open(PHOTOS / photo) as im:
        return np.ascontiguousarray(np.asarray(im.convert("RGB").resize((size[1], size[0]), Image.BICUBIC)))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,4) x (M,4) xyxy -> (N,M) IoU, widths without +1 as in detectron2."""
    a = a.astype(np.float64)[:, None]
    b = b.astype(np.float64)[None]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-12)


def match(ref_boxes, ref_scores, ref_classes, boxes, scores, classes) -> list[tuple[int, int | None, float]]:
    """Greedy one-to-one matching, reference detections in score order, same class only.

    Returns ``(ref index, our index or None, IoU)`` per reference detection.
    """
    iou = box_iou(ref_boxes, boxes) if len(boxes) and len(ref_boxes) else np.zeros((len(ref_boxes), len(boxes)))
    iou[ref_classes[:, None] != classes[None, :]] = -1.0
    taken = np.zeros(len(boxes), dtype=bool)
    out = []
    for i in np.argsort(-ref_scores, kind="stable"):
        cand = np.where(taken, -1.0, iou[i])
        j = int(np.argmax(cand)) if len(cand) else -1
        if j >= 0 and cand[j] >= IOU_MIN:
            taken[j] = True
            out.append((int(i), j, float(cand[j])))
        else:
            out.append((int(i), None, float(cand[j]) if j >= 0 else 0.0))
    return out


def unpack_masks(ref: np.lib.npyio.NpzFile, i: int) -> np.ndarray:
    shape = tuple(int(s) for s in ref[f"mask_shape_{i}"])
    return np.unpackbits(ref[f"masks_{i}"], count=int(np.prod(shape))).reshape(shape).astype(bool)


def compare(ref: np.lib.npyio.NpzFile, i: int, det, with_masks: bool, label: str) -> dict:
    """Assert one image's detections equal detectron2's; return summary numbers."""
    rb, rs, rc = ref[f"boxes_{i}"], ref[f"scores_{i}"], ref[f"classes_{i}"]
    boxes, scores, classes = np.asarray(det.boxes), np.asarray(det.scores), np.asarray(det.classes)
    pairs = match(rb, rs, rc, boxes, scores, classes)
    problems = []
    if len(boxes) != len(rb):
        problems.append(f"{len(boxes)} detections, detectron2 has {len(rb)}")
    min_iou, max_dscore = 1.0, 0.0
    for ri, oi, iou in pairs:
        if oi is None:
            problems.append(f"d2 #{ri} class {rc[ri]} score {rs[ri]:.5f} box {np.round(rb[ri], 2).tolist()}: "
                            f"no match (best IoU {iou:.5f})")
            continue
        min_iou = min(min_iou, iou)
        d = abs(float(scores[oi]) - float(rs[ri]))
        max_dscore = max(max_dscore, d)
        if d > SCORE_TOL:
            problems.append(f"d2 #{ri} class {rc[ri]}: score {scores[oi]:.6f} vs d2 {rs[ri]:.6f}")
    matched = {oi for _, oi, _ in pairs if oi is not None}
    for j in sorted(set(range(len(boxes))) - matched)[:10]:
        problems.append(f"ours #{j} class {classes[j]} score {scores[j]:.5f} box {np.round(boxes[j], 2).tolist()}: "
                        "not in detectron2's output")
    min_agree = 1.0
    if with_masks and not problems:
        assert det.masks is not None, f"{label}: the mask model returned no masks"
        ref_masks = unpack_masks(ref, i)
        assert det.masks.shape == ref_masks.shape, f"{label}: masks {det.masks.shape} vs {ref_masks.shape}"
        for ri, oi, _ in pairs:
            agree = float(np.mean(det.masks[oi] == ref_masks[ri]))
            min_agree = min(min_agree, agree)
            if agree < MASK_AGREE_MIN:
                problems.append(f"d2 #{ri} class {rc[ri]}: mask agrees on {agree:.5%} of pixels")
    assert not problems, f"{label}: differs from detectron2:\n  " + "\n  ".join(problems[:25])
    return {"n": len(rb), "min_iou": min_iou, "max_dscore": max_dscore, "min_mask_agree": min_agree}


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def zoo_pkl(tmp_path_factory):
    """config -> path of the synthetic weights in model-zoo .pkl format (written once per module)."""
    paths: dict[str, Path] = {}
    seed = REFERENCE["seed"] if REFERENCE else 0

    def get(config: str) -> Path:
        if config not in paths:
            path = tmp_path_factory.mktemp("zoo") / f"{config}_synthetic_seed{seed}.pkl"
            write_zoo_pkl(synthetic_d2_state_dict(config, seed=seed), path)
            paths[config] = path
        return paths[config]

    return get


@pytest.fixture(scope="module")
def cropper_for(zoo_pkl):
    """(config, min_size_test, max_size_test) -> our torch Cropper on the synthetic weights."""
    from vehicle_cls import Cropper

    croppers: dict = {}

    def get(config: str, min_size: int, max_size: int):
        key = (config, min_size, max_size)
        if key not in croppers:
            croppers[key] = Cropper.from_checkpoint(
                zoo_pkl(config), config=config, backend="torch", device="cpu",
                min_size_test=min_size, max_size_test=max_size,
            )
        return croppers[key]

    return get


# ---------------------------------------------------------------------------- tests
def test_synthetic_weights_are_a_full_zoo_checkpoint(tmp_path):
    """Names/shapes are the zoo's; the .pkl is the zoo layout and loads with latin1; same seed, same bits."""
    shapes = d2_r101_fpn_shapes("mask_rcnn_R_101_FPN_3x")
    assert len(d2_r101_fpn_shapes("faster_rcnn_R_101_FPN_3x")) == 550 and len(shapes) == 562
    assert shapes["roi_heads.box_predictor.cls_score.weight"] == (81, 1024)
    assert shapes["roi_heads.box_predictor.bbox_pred.weight"] == (320, 1024)
    assert shapes["backbone.bottom_up.res4.22.conv3.norm.running_var"] == (1024,)
    assert shapes["roi_heads.mask_head.predictor.weight"] == (80, 256, 1, 1)
    small = {k: v for k, v in synthetic_d2_state_dict("faster_rcnn_R_101_FPN_3x", seed=3).items()
             if not k.startswith("backbone.bottom_up.res4")}
    again = synthetic_d2_state_dict("faster_rcnn_R_101_FPN_3x", seed=3)
    assert all(np.array_equal(v, again[k]) for k, v in small.items())
    assert all(np.isfinite(v).all() and v.dtype == np.float32 for v in small.values())
    cls_w = small["roi_heads.box_predictor.cls_score.weight"]
    assert np.ptp(cls_w[80]) == 0 and cls_w[80, 0] > 0, "background (LAST row) is the constant row"
    path = tmp_path / "w.pkl"
    write_zoo_pkl(small, path)
    with open(path, "rb") as f:
        data = pickle.load(f, encoding="latin1")
    assert data["__author__"] == "Detectron2 Model Zoo" and data["matching_heuristics"] is True
    assert set(data["model"]) == set(small)
    assert np.array_equal(data["model"]["backbone.fpn_lateral2.weight"], small["backbone.fpn_lateral2.weight"])


def test_reference_is_recorded_on_these_inputs():
    """The fixtures' inputs are reproducible here (same photos, same PIL upscaling)."""
    assert REFERENCE["detectron2_version"]
    for case in _cases():
        assert (REF_DIR / case["file"]).exists(), case["file"]
        for im in case["images"]:
            rgb = load_rgb(im["photo"], im["size"], im["resample"])
            assert hashlib.sha256(rgb.tobytes()).hexdigest() == im["rgb_sha256"], (
                f"{case['name']}: {im['photo']} upscaled differently than when recorded (PIL version?)")


@pytest.mark.parametrize("case", _case_params())
def test_matches_detectron2(case, cropper_for):
    cropper = cropper_for(case["config"], case["min_size_test"], case["max_size_test"])
    images = [load_rgb(im["photo"], im["size"], im["resample"]) for im in case["images"]]
    if case["batched"]:
        dets = cropper.detect(images, batch_size=len(images), grouping="padded")  # like model([...])
    else:
        dets = [cropper.detect([im])[0] for im in images]
    assert len(dets) == len(images)
    with_masks = case["config"].startswith("mask_rcnn")
    with np.load(REF_DIR / case["file"]) as ref:
        for i, (im, det) in enumerate(zip(case["images"], dets)):
            assert det.boxes.shape[1:] == (4,) and det.classes.dtype.kind == "i"
            compare(ref, i, det, with_masks, f"{case['name']}[{i}] {im['photo']} {im['size']}")


def test_live_detectron2_reproduces_fixture(tmp_path):
    """Where detectron2 is importable: re-run one recorded case and compare to the fixture."""
    pytest.importorskip("detectron2")
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
    try:
        import record_detectron2 as rec
    finally:
        sys.path.pop(0)
    name = "faster_minibus_480"
    case = next(c for c in _cases() if c["name"] == name)
    rec.record(tmp_path, PHOTOS, REFERENCE["seed"], only={name})
    with np.load(tmp_path / case["file"]) as new, np.load(REF_DIR / case["file"]) as old:
        for key in old.files:
            np.testing.assert_allclose(new[key], old[key], rtol=0, atol=1e-4, err_msg=key)
