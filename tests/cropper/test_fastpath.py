"""The fast inference path agrees with the fp32 reference; detector grouping; device preprocessing.

Agreement is checked on real photos (tests/data) with the project's synthetic R101-FPN weights,
whose scores spread over 0.05-0.75 (not saturated), and a ResNet50 whose BatchNorm statistics and
head are calibrated on the photos (so its probabilities are not saturated either).
"""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vehicle_cls.classifier.fast import InferenceCopies, prepare_classifier
from vehicle_cls.cropper import Cropper, CropPolicy
from vehicle_cls.cropper.checkpoint import load_into
from vehicle_cls.cropper.cropper import plan_batches
from vehicle_cls.cropper.fast import DETECTOR_PARTS, fold_frozen_norms, prepare_detector
from vehicle_cls.cropper.layers import Conv2d, FrozenBatchNorm2d
from vehicle_cls.cropper.rcnn import GeneralizedRCNN, InferenceSettings
from vehicle_cls.cropper.transforms import batch_images, preprocess_image, preprocess_on_device
from vehicle_cls.results import Detections
from vehicle_cls.runtime import Capabilities
from vehicle_cls.testing.synthetic import synthetic_d2_state_dict, write_zoo_pkl

DATA = Path(__file__).parents[1] / "data"
PHOTOS = sorted((DATA / "photos").glob("*.jpg")) + sorted((DATA / "vehicle_photos").rglob("*.jpg"))
SETTINGS = dict(min_size_test=480, max_size_test=800)


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter)


def agreement(ref: list[Detections], fast: list[Detections], policy: CropPolicy) -> tuple[list[str], float]:
    """Problems (score >= 0.5 detections without an IoU >= 0.98 same-class match) and the share of
    images whose chosen crop box is the same (IoU >= 0.98, or both none)."""
    problems, same = [], 0
    for k, (r, f) in enumerate(zip(ref, fast)):
        hi = np.flatnonzero(r.scores >= 0.5)
        if len(hi):
            ious = _iou(r.boxes[hi], f.boxes) * (r.classes[hi][:, None] == f.classes[None, :])
            best = ious.max(axis=1) if ious.shape[1] else np.zeros(len(hi))
            problems += [f"image {k}: detection {i} (score {r.scores[i]:.3f}) best IoU {b:.3f}"
                         for i, b in zip(hi, best) if b < 0.98]
        a, b = policy.choose(r), policy.choose(f)
        same += len(a) == len(b) and all(
            (x.box is None and y.box is None)
            or (x.box is not None and y.box is not None and _iou(np.array([x.box]), np.array([y.box]))[0, 0] >= 0.98)
            for x, y in zip(a, b))
    return problems, same / len(ref)


@pytest.fixture(scope="module")
def zoo_pkl(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "faster.pkl"
    write_zoo_pkl(synthetic_d2_state_dict("faster_rcnn_R_101_FPN_3x", seed=0), path)
    return path


@pytest.fixture(scope="module")
def detections(zoo_pkl):
    """fp32 reference and bf16 fast-path detections on the test photos (one cropper, switched)."""
    cropper = Cropper.from_checkpoint(zoo_pkl, **SETTINGS)
    images = [_rgb(p) for p in PHOTOS[:6]]
    ref = cropper.detect(images)
    cropper.set_precision("bf16")
    fast = cropper.detect(images)
    return cropper, images, ref, fast


# ---------------------------------------------------------------------------- folding / preparation
def test_fold_frozen_norms_gives_the_same_outputs():
    torch.manual_seed(0)
    norm = FrozenBatchNorm2d(8)
    norm.weight.uniform_(0.5, 1.5)
    norm.bias.normal_()
    norm.running_mean.normal_()
    norm.running_var.uniform_(0.1, 3.0)
    conv = Conv2d(4, 8, kernel_size=3, padding=1, bias=False, norm=norm)
    x = torch.randn(2, 4, 9, 9)
    ref = conv(x)
    folded = copy.deepcopy(conv)
    assert fold_frozen_norms(folded) == 1 and folded.norm is None and folded.bias is not None
    torch.testing.assert_close(folded(x), ref, rtol=1e-5, atol=1e-5)
    assert conv.norm is norm  # the original is left alone


def test_prepare_detector_casts_only_the_given_parts():
    model = GeneralizedRCNN(False, InferenceSettings())
    before = {k: v.clone() for k, v in model.state_dict().items() if "res4" not in k}
    fast = prepare_detector(model, "cpu", "bf16", ("box_head",))
    w = fast.backbone.bottom_up.res2[0].conv1.weight
    assert w.dtype == torch.float32 and w.is_contiguous(memory_format=torch.channels_last)
    assert fast.backbone.bottom_up.res2[0].conv1.norm is None
    assert fast.roi_heads.box_head.fc1.weight.dtype == torch.bfloat16
    assert fast.roi_heads.box_predictor.cls_score.weight.dtype == torch.float32
    assert fast.proposal_generator.anchor_generator.cell_anchors_0.dtype == torch.float32
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # reference untouched
    everything = prepare_detector(model, "cpu", "bf16", DETECTOR_PARTS)
    assert everything.backbone.bottom_up.stem.conv1.weight.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown detector part"):
        prepare_detector(model, "cpu", "bf16", ("neck",))


def test_cpu_fast_heads_pool_and_project_like_the_reference():
    """The CPU fast copy's ROI poolers (roi_align_bag) and box head (fc1 as a conv) give the reference's
    numbers up to fp32 rounding on the same features and real proposals (box and mask poolers)."""
    model = GeneralizedRCNN(True, InferenceSettings(**SETTINGS)).eval()
    state = synthetic_d2_state_dict("mask_rcnn_R_101_FPN_3x", seed=0)
    load_into(model, {k: torch.from_numpy(v) for k, v in state.items()}, "synthetic")
    fast = prepare_detector(model, "cpu", "bf16")
    heads, ref = fast.roi_heads, model.roi_heads
    assert heads.box_pooler.kernel == heads.mask_pooler.kernel == "embedding_bag"
    assert ref.box_pooler.kernel == "torchvision"  # the reference keeps detectron2's kernel
    image = preprocess_image(_rgb(PHOTOS[0]), SETTINGS["min_size_test"], SETTINGS["max_size_test"])
    with torch.inference_mode():
        batch, sizes = batch_images([image], model.pixel_mean, model.backbone.size_divisibility)
        features = model.backbone(batch)
        proposals = [p[0] for p in model.proposal_generator(features, sizes)]
        assert len(proposals[0]) > 100
        feats = [features[f] for f in ref.in_features]
        feats_cl = [f.contiguous(memory_format=torch.channels_last) for f in feats]
        for pooler, fast_pooler in ((ref.box_pooler, heads.box_pooler), (ref.mask_pooler, heads.mask_pooler)):
            torch.testing.assert_close(fast_pooler(feats_cl, proposals), pooler(feats, proposals), rtol=0, atol=1e-5)
        pooled = ref.box_pooler(feats, proposals)
        torch.testing.assert_close(heads.box_head(pooled.contiguous(memory_format=torch.channels_last)),
                                   ref.box_head(pooled), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------- detector agreement
def test_fast_detector_agrees_with_fp32(detections):
    cropper, _, ref, fast = detections
    assert cropper.precision == "bf16"
    assert sum(int((r.scores >= 0.5).sum()) for r in ref) >= 3, "the weights give too few confident detections"
    assert any(len(r) and r.scores.max() < 0.99 for r in ref), "scores are saturated: agreement would be trivial"
    problems, same_crop = agreement(ref, fast, CropPolicy())
    assert not problems, problems
    assert same_crop >= 0.98


def test_agreement_check_catches_a_drifting_detector(detections):
    """The check can fail: boxes moved by a few pixels (what a drifting detector gives) are caught.

    The all-bf16 detector (backbone and RPN head too) is the real drift, but whether it moves a box past
    IoU 0.98 on six photos depends on the CPU's bf16 kernels (it did on AVX512-BF16 EPYC, not on a CI
    Xeon), so it is checked to change the numbers, and the catching is checked on a known drift."""
    cropper, images, ref, _ = detections
    drifted = []
    for r in ref:
        boxes = r.boxes.copy()
        boxes[:, [0, 2]] += 0.05 * (boxes[:, 2:3] - boxes[:, 0:1])  # 5 % of the width to the right
        drifted.append(dataclasses.replace(r, boxes=boxes))
    problems, same_crop = agreement(ref, drifted, CropPolicy())
    assert problems and same_crop < 0.98
    assert agreement(ref, ref, CropPolicy()) == ([], 1.0)
    try:
        cropper.set_precision("bf16", parts=DETECTOR_PARTS)  # the explicit opt-in: speed over agreement
        assert cropper.backend._fast.backbone.bottom_up.stem.conv1.weight.dtype == torch.bfloat16
        all_bf16 = cropper.detect(images)
    finally:
        cropper.set_precision("bf16")
    assert any(len(a) != len(b) or not np.array_equal(a.scores, b.scores) for a, b in zip(ref, all_bf16))


def test_set_precision_back_to_fp32_is_the_reference(detections):
    cropper, images, ref, _ = detections
    cropper.set_precision("fp32")
    try:
        again = cropper.detect(images[:2])
    finally:
        cropper.set_precision("bf16")
    for a, b in zip(again, ref):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.scores, b.scores)


# ---------------------------------------------------------------------------- classifier agreement
def _calibrated_resnet50(images: list[np.ndarray]) -> tuple[torch.nn.Module, torch.Tensor]:
    """ResNet50 calibrated like the detector weights of ../shared/weights (the idea, not the code):
    BatchNorm statistics measured on ``images``, small residual branches (last BN gamma x 0.15) and
    positive biases before ReLUs as in a trained network, a head scaled to logit std 2, so it is
    not chaotic under rounding and its probabilities are spread, not saturated."""
    from vehicle_cls.classifier.factory import create_model
    from vehicle_cls.classifier.preprocess import Preprocess, preprocess_images

    torch.manual_seed(0)
    model = create_model("resnet50", 6, weights=None, dropout=0.0)
    x = preprocess_images(images, Preprocess(160), "cpu")
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None  # cumulative average: the statistics of the calibration batch
                m.reset_running_stats()
                last = name.endswith("bn3") or name.endswith("downsample.1")
                m.weight.uniform_(0.7, 1.3).mul_(0.15 if name.endswith("bn3") else 1.0)
                m.bias.normal_(0.0 if last else 0.5, 0.2 if not last else 0.0)  # ReLUs mostly on, as trained
        model.train()(x)  # BN statistics measured in forward order on the photos
        model.eval()
        head = model.fc[-1] if isinstance(model.fc, torch.nn.Sequential) else model.fc
        head.weight.mul_(2.0 / model(x).std(dim=0).mean())
        head.bias.sub_(model(x).mean(dim=0))
    return model, x


def test_fast_classifier_agrees_with_fp32():
    images = [_rgb(p) for p in PHOTOS]
    images += [im[:, ::-1].copy() for im in images] + [im[10:90, 5:95].copy() for im in images]
    model, x = _calibrated_resnet50(images)
    with torch.inference_mode():
        ref = model(x).softmax(1)
    assert ref.max(1).values.median() < 0.95, "probabilities are saturated: agreement would be trivial"
    fast = prepare_classifier(model, "cpu", "bf16")
    assert next(fast.parameters()).dtype == torch.bfloat16
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())  # folded
    with torch.inference_mode():
        out = fast(x.bfloat16().contiguous(memory_format=torch.channels_last)).float().softmax(1)
    top2 = ref.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) >= 0.05  # not a near-tie: rounding must not change the answer
    equal = out.argmax(1) == ref.argmax(1)
    assert clear.sum() >= 0.8 * len(x) and bool(equal[clear].all()), f"top-1 changed on {(~equal[clear]).sum()} clear inputs"
    assert equal.float().mean() >= 0.95, f"top-1 equal on {equal.float().mean():.1%} of {len(x)} inputs"
    assert (out - ref).abs().max() < 0.05


def test_inference_copies_follow_weight_changes():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten()).eval()
    copies = InferenceCopies()
    assert copies.get(model, "fp32", "cpu") is model
    first = copies.get(model, "bf16", "cpu")
    assert copies.get(model, "bf16", "cpu") is first
    with torch.no_grad():
        model[0].weight.add_(1.0)  # a training step changes the weights in place
    second = copies.get(model, "bf16", "cpu")
    assert second is not first
    conv = lambda m: dict(m.named_modules())["0"]  # noqa: E731  (fx keeps the submodule names)
    torch.testing.assert_close(conv(second).weight.float().sum(), conv(first).weight.float().sum() + 4 * 27.0,
                               rtol=0.02, atol=0.5)


# ---------------------------------------------------------------------------- grouping, preprocessing
def test_plan_batches():
    s = InferenceSettings(min_size_test=800, max_size_test=1333)
    shapes = [(100, 100), (480, 640), (200, 200), (600, 800), (100, 100), (50, 60)]
    assert plan_batches(shapes, 4, "single", s) == [[0], [1], [2], [3], [4], [5]]
    assert plan_batches(shapes, 4, "padded", s) == [[0, 1, 2, 3], [4, 5]]
    size = plan_batches(shapes, 2, "size", s)
    assert sorted(i for chunk in size for i in chunk) == list(range(6))
    assert [0, 2] in size and [4] in size and [1, 3] in size and [5] in size  # 800x800 x3, 800x1067 x2
    assert all(len(chunk) <= 2 for chunk in size)


class _RecordingBackend:
    """Stands for TorchDetectorBackend: records how many images each forward pass gets."""

    name, precision, channels_last = "torch", "fp32", False
    capabilities = Capabilities()

    def __init__(self, device: str):
        self.device = torch.device(device)
        self.settings = InferenceSettings()
        self.calls: list[int] = []

    def __call__(self, images):
        self.calls.append(len(images))
        return [Detections.empty(im.shape[:2]) for im in images]


def test_detect_runs_one_image_at_a_time_on_cpu_and_groups_by_size_elsewhere():
    images = [np.zeros((100, 100, 3), np.uint8)] * 3 + [np.zeros((60, 80, 3), np.uint8)]
    cpu = Cropper(_RecordingBackend("cpu"), "faster_rcnn_R_101_FPN_3x", "w")
    assert len(cpu.detect(images, batch_size=8)) == 4 and cpu.backend.calls == [1, 1, 1, 1]
    cpu.detect(images, batch_size=8, grouping="padded")
    assert cpu.backend.calls[4:] == [4]
    meta = Cropper(_RecordingBackend("meta"), "faster_rcnn_R_101_FPN_3x", "w")
    meta.detect(images, batch_size=8)
    assert sorted(meta.backend.calls) == [1, 3]
    with pytest.raises(ValueError, match="grouping"):
        cpu.detect(images, grouping="fast")


def test_device_preprocessing_is_close_to_pil():
    for path in PHOTOS[:3]:
        rgb = _rgb(path)
        for short, longest in ((800, 1333), (64, 80)):  # upscale, and shrink (antialiased)
            pil = preprocess_image(rgb, short, longest)
            dev = preprocess_on_device(rgb, short, longest, "cpu")
            assert dev.shape == pil.shape
            diff = (dev - pil).abs()
            assert diff.mean() < 0.3 and diff.max() <= 1, (path.name, short, diff.mean(), diff.max())
            assert torch.equal(dev, dev.round())
    bgr = preprocess_on_device(np.array([[[255, 0, 10]]], np.uint8), 1, 1, "cpu")
    assert bgr[:, 0, 0].tolist() == [10.0, 0.0, 255.0]


# ---------------------------------------------------------------------------- CUDA (run with -m gpu)
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_detector_agrees_with_cpu_fp32(detections, zoo_pkl, precision):
    _, images, ref, _ = detections
    cuda = Cropper.from_checkpoint(zoo_pkl, device="cuda", precision=precision, **SETTINGS)
    out = cuda.detect(images, batch_size=4)  # size-grouped batches, preprocessing on the device
    problems, same_crop = agreement(ref, out, CropPolicy())
    assert not problems, problems
    assert same_crop >= 0.98


@pytest.mark.gpu
@gpu
def test_cuda_classifier_agrees_with_cpu_fp32():
    images = [_rgb(p) for p in PHOTOS]
    model, x = _calibrated_resnet50(images)
    with torch.inference_mode():
        ref = model(x).softmax(1)
    copies = InferenceCopies()
    from vehicle_cls.classifier.forward import classify_logits

    for precision in ("fp32", "bf16", "fp16"):
        out = classify_logits(copies, model.to("cuda"), x, precision, "cuda").softmax(1).cpu()
        top2 = ref.topk(2, dim=1).values
        clear = (top2[:, 0] - top2[:, 1]) >= 0.05
        assert bool((out.argmax(1) == ref.argmax(1))[clear].all())
        assert (out - ref).abs().max() < 0.05
        model.to("cpu")


# ---------------------------------------------------------------------------- the pipeline's default
def test_pipeline_default_is_the_fast_path_and_agrees_with_fp32(zoo_pkl):
    """``Pipeline()`` runs ``precision="auto"``; its chosen crops and top-1 labels match the fp32 run."""
    from vehicle_cls import Pipeline
    from vehicle_cls.classifier import Classifier, Preprocess
    from vehicle_cls.runtime import resolve_precision

    photos = PHOTOS[:6]
    model, _ = _calibrated_resnet50([_rgb(p) for p in PHOTOS])
    clf = Classifier(model, "resnet50", [f"c{i}" for i in range(6)], Preprocess(160), device="cpu")
    ref = Pipeline(Cropper.from_checkpoint(zoo_pkl, **SETTINGS), clf, device="cpu", precision="fp32")(photos, topk=2)
    pipe = Pipeline(Cropper.from_checkpoint(zoo_pkl, **SETTINGS), clf, device="cpu")
    assert pipe.precisions == {"detector": resolve_precision("auto", "cpu"), "classifier": resolve_precision("auto", "cpu")}
    assert pipe.cropper.precision == pipe.precisions["detector"]
    fast = pipe(photos, topk=2)
    assert [r.ok for r in fast] == [r.ok for r in ref] == [True] * len(photos)
    for r, f in zip(ref, fast):
        assert len(r) == len(f), r.source
        for a, b in zip(r, f):
            if a.box is None or b.box is None:
                assert a.box is None and b.box is None, r.source
            else:
                assert _iou(np.array([a.box]), np.array([b.box]))[0, 0] >= 0.98, (r.source, a.box, b.box)
            if a.topk[0][1] - a.topk[1][1] >= 0.05:  # not a near-tie
                assert a.label == b.label, (r.source, a.topk, b.topk)
