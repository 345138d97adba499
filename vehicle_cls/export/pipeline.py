"""Export a whole pipeline (detector + crop + classifier) as one directory of ONNX graphs that
``vehicle_cls.onnx.Pipeline`` runs with numpy, pillow and onnxruntime only.

Layout: ``manifest.json`` (what each file is, the class names, the classifier's preprocessing, the
detector's test settings and crop policy), ``detector.onnx`` (:mod:`vehicle_cls.export.detector`;
absent without a cropper), ``crops.onnx`` (ROIAlign of the chosen boxes to the classifier's input
size, the op the torch classifier crops with) and ``classifier.onnx`` (:mod:`vehicle_cls.export.classifier`).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vehicle_cls.crops import box_ious
from vehicle_cls.errors import one_line
from vehicle_cls.export.classifier import export_classifier, import_onnx
from vehicle_cls.export.detector import ONNX_OPSET, export_detector

if TYPE_CHECKING:
    from vehicle_cls.pipeline import Pipeline

MANIFEST = "manifest.json"
FORMAT = "vehicle_cls-onnx"
FORMAT_VERSION = 1
DETECTOR_FILE = "detector.onnx"
CLASSIFIER_FILE = "classifier.onnx"
CROPS_FILE = "crops.onnx"
#: torch fp32 vs ONNX Runtime, measured on real photos (docs/export.md): boxes within 0.002 px and scores
#: within 2.1e-4 with realistic weights at 800 px; the limits leave a margin and still catch a wrong box
BOX_TOL = 0.05
SCORE_TOL = 1e-3
MATCH_IOU = 0.99  # a detection's partner in the other runtime: same class, IoU at least this
MASK_AGREE = 0.999  # fraction of equal pixels (a 0.05 px box shift flips a few edge pixels)


def export_pipeline(pipeline: Pipeline, out: str | os.PathLike, example_size: tuple[int, int] = (320, 480)) -> Path:
    """Write ``pipeline`` (a torch ``Pipeline``; its cropper may be None) as an export directory at ``out``."""
    import_onnx()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; a pipeline export is a directory (give a path without .onnx/.pt)")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    classifier = pipeline.classifier
    export_classifier(classifier, tmp / CLASSIFIER_FILE, "onnx")
    (tmp / (CLASSIFIER_FILE + ".json")).unlink()  # the manifest says it all
    write_crops_graph(tmp / CROPS_FILE, classifier.preprocess.input_size)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "opset": ONNX_OPSET,
        "classifier": {
            "file": CLASSIFIER_FILE,
            "arch": classifier.arch,
            "classes": list(classifier.classes),
            "preprocessing": classifier.preprocess.to_dict(),
            "input": "input",
            "output": "probabilities",
        },
        "crops": {"file": CROPS_FILE},
        "detector": None,
    }
    cropper = pipeline.cropper
    if cropper is not None:
        model = getattr(cropper.backend, "model", None)
        if model is None or cropper.backend.name != "torch":
            raise ValueError(f"only the torch detector backend exports, not {cropper.backend.name!r}")
        export_detector(model, tmp / DETECTOR_FILE, example_size)
        manifest["detector"] = {
            "file": DETECTOR_FILE,
            "config": cropper.config,
            "mask_on": bool(cropper.mask_on),
            "test_settings": cropper.settings.to_dict(),
            "policy": cropper.policy.to_dict(),
        }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def write_crops_graph(path: Path, size: int) -> None:
    """``crops.onnx``: RoiAlign (avg, half-pixel = torchvision's aligned=True, adaptive sampling) of
    (K, 5) rois [batch index, x1, y1, x2, y2] on a (1, 3, H, W) float image -> (K, 3, size, size)."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Slice", ["rois", "zero", "one", "one_axis"], ["index2d"]),
        helper.make_node("Squeeze", ["index2d", "one_axis"], ["index_f"]),
        helper.make_node("Cast", ["index_f"], ["index"], to=TensorProto.INT64),
        helper.make_node("Slice", ["rois", "one", "five", "one_axis"], ["boxes"]),
        helper.make_node(
            "RoiAlign",
            ["image", "boxes", "index"],
            ["crops"],
            mode="avg",
            output_height=size,
            output_width=size,
            sampling_ratio=0,
            spatial_scale=1.0,
            coordinate_transformation_mode="half_pixel",
        ),
    ]
    consts = [
        helper.make_tensor(n, TensorProto.INT64, [1], [v])
        for n, v in (("zero", 0), ("one", 1), ("five", 5), ("one_axis", 1))
    ]
    graph = helper.make_graph(
        nodes,
        "crops",
        [
            helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "height", "width"]),
            helper.make_tensor_value_info("rois", TensorProto.FLOAT, ["crops", 5]),
        ],
        [helper.make_tensor_value_info("crops", TensorProto.FLOAT, ["crops", 3, size, size])],
        initializer=consts,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@dataclass
class PipelineCheck:
    """Torch fp32 vs ONNX Runtime on real images: worst differences over the images that decoded."""

    images: int  # compared
    broken: list[str] = field(default_factory=list)  # one line per image that could not be compared
    sizes: list[tuple[int, int]] = field(default_factory=list)  # distinct (h, w) of the detector's input
    detections_equal: bool = True  # every detection the policy can choose (score >= min_score) has its twin
    images_with_other_detections: int = 0  # images where some lower-score detection has no twin (see docs)
    max_box_diff: float = 0.0  # px, original pixels
    max_score_diff: float = 0.0
    min_mask_agree: float | None = None  # mask model: lowest fraction of equal mask pixels over the images
    same_crop: bool = True  # the same chosen crop (box within the box tolerance, fallback flag)
    top1_agree: float = 1.0
    max_prob_diff: float = 0.0
    box_tol: float = BOX_TOL
    score_tol: float = SCORE_TOL

    @property
    def ok(self) -> bool:
        return (
            self.images > 0
            and self.detections_equal
            and self.same_crop
            and self.top1_agree == 1.0
            and self.max_box_diff <= self.box_tol
            and self.max_score_diff <= self.score_tol
            and (self.min_mask_agree is None or self.min_mask_agree >= MASK_AGREE)
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def check_pipeline(pipeline: Pipeline, directory: str | os.PathLike, images: list[Any]) -> PipelineCheck:
    """Run the torch ``pipeline`` (fp32, CPU) and the export at ``directory`` stage by stage (detect,
    choose, classify) on ``images``; an image that cannot be read, or fails in either, is listed in
    ``broken`` (one line) and the others are still compared."""
    from vehicle_cls.classifier.inference import CropJob, classify_crops
    from vehicle_cls.crops import DEFAULT_MASK_FILL, WHOLE_IMAGE
    from vehicle_cls.io.images import load_image
    from vehicle_cls.onnx import Pipeline as OnnxPipeline
    from vehicle_cls.onnx.preprocess import resized_shape

    onnx_pipe = OnnxPipeline(directory)
    cropper = pipeline.cropper
    fill = cropper.policy.mask_fill if cropper is not None else DEFAULT_MASK_FILL
    check = PipelineCheck(0)
    top1: list[bool] = []
    sizes = set()
    for source in images:
        name = str(source) if isinstance(source, (str, os.PathLike)) else type(source).__name__
        try:
            image = load_image(source)
            want_det = cropper.detect([image])[0] if cropper is not None else None
            want_choices = cropper.policy.choose(want_det) if want_det is not None else [WHOLE_IMAGE]
            want = classify_crops(pipeline.classifier.backend, [CropJob(image, want_choices)], fill=fill)[0]
            got_det = onnx_pipe.detect(image) if cropper is not None else None
            if got_det is None:
                got_choices = onnx_pipe.choose(image)
            elif onnx_pipe.policy is None:
                raise ValueError(f"{directory}: the export has a detector but no crop policy")
            else:
                got_choices = list(onnx_pipe.policy.choose(got_det))
            got = onnx_pipe.classify(image, got_choices)
        except Exception as exc:
            message = one_line(exc)
            check.broken.append(message if message.startswith(name) else f"{name}: {message}")
            continue
        check.images += 1
        if want_det is not None and got_det is not None:
            s = onnx_pipe.settings
            height, width = image.shape[:2]
            sizes.add(resized_shape(height, width, s["min_size_test"], s["max_size_test"]))
            _compare_detections(check, want_det, got_det, cropper.policy.min_score)
        if len(want_choices) != len(got_choices):
            check.same_crop = False
            top1.append(False)
            continue
        for v, u in zip(want_choices, got_choices):
            if (
                v.fallback != u.fallback
                or (v.box is None) != (u.box is None)
                or (v.box is not None and u.box is not None and np.abs(np.subtract(v.box, u.box)).max() > check.box_tol)
            ):
                check.same_crop = False
        top1.extend((want.argmax(1) == got.argmax(1)).tolist())
        if len(want):
            check.max_prob_diff = max(check.max_prob_diff, float(np.abs(want - got).max()))
    check.top1_agree = float(np.mean(top1)) if top1 else 0.0
    check.sizes = sorted(sizes)
    return check


def match_detections(
    a: Any, b: Any, min_iou: float = MATCH_IOU, min_score: float | None = None
) -> list[tuple[int, int]] | None:
    """Pairs (i, j) matching each detection of ``a`` to one of ``b``: same class, best IoU, greedy in
    ``a``'s order; None when one has no partner, or (``min_score`` None) the counts differ. With
    ``min_score`` only ``a``'s rows scoring at least that need a partner (two runtimes may order
    near-equal scores differently, so rows are matched, not compared by index)."""
    if min_score is None and len(a) != len(b):
        return None
    if not len(a) or not len(b):
        return [] if min_score is None or not (a.scores >= min_score).any() else None
    iou = np.where(a.classes[:, None] == b.classes[None, :], box_ious(a.boxes, b.boxes), -1.0)
    pairs, taken = [], np.zeros(len(b), dtype=bool)
    for i in range(len(a)):
        if min_score is not None and a.scores[i] < min_score:
            continue
        j = int(np.argmax(np.where(taken, -1.0, iou[i])))
        if taken[j] or iou[i, j] < min_iou:
            return None
        taken[j] = True
        pairs.append((i, j))
    return pairs


def _compare_detections(check: PipelineCheck, a: Any, b: Any, min_score: float) -> None:
    """Fold one image's torch (``a``) vs ONNX (``b``) detections into ``check``."""
    pairs = match_detections(a, b)
    if pairs is None:
        check.images_with_other_detections += 1
        both = match_detections(a, b, min_score=min_score), match_detections(b, a, min_score=min_score)
        if both[0] is None or both[1] is None:
            check.detections_equal = False
        pairs = both[0] or []
    if pairs:
        i, j = np.asarray(pairs).T
        check.max_box_diff = max(check.max_box_diff, float(np.abs(a.boxes[i] - b.boxes[j]).max()))
        check.max_score_diff = max(check.max_score_diff, float(np.abs(a.scores[i] - b.scores[j]).max()))
        if a.masks is not None and b.masks is not None and a.masks.size:
            agree = float((a.masks[i] == b.masks[j]).mean())
            check.min_mask_agree = agree if check.min_mask_agree is None else min(agree, check.min_mask_agree)
