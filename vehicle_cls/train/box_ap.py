"""The cropper's detector scored against a COCO dataset's boxes: COCO box AP, AP50, AP75 (pycocotools).

``box_ap(cropper, CocoDataset("ann.json"))`` runs ``cropper.detect`` over the dataset's images and
scores the vehicle detections with ``pycocotools.cocoeval.COCOeval`` (``iouType="bbox"``, its 100
detections per image), the same numbers detectron2's COCO evaluator reports. Two ways to pair the
detector's classes with the dataset's categories:

* by name (a dataset with ``car``/``truck``/``bus`` categories): each detector class scores against the
  category of the same name, AP averaged over those categories, as COCO does;
* class-agnostic (a make/model dataset, ``"BMW M3 2012"``...): every box of the dataset is one "vehicle"
  category and every detection of the cropper's classes a "vehicle" detection.

``class_agnostic=None`` picks by name when some category name is a detector class, else agnostic.
Images whose decoding fails, and images with a malformed annotation (their ground truth is incomplete,
see ``CocoDataset.incomplete_images``), are left out of the score and listed.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from vehicle_cls.labels import DEFAULT_VEHICLE_CLASSES, coco_class_ids, coco_class_name

if TYPE_CHECKING:  # pragma: no cover
    from vehicle_cls.data.coco import CocoDataset

logger = logging.getLogger(__name__)

AGNOSTIC_ID = 1
AGNOSTIC_NAME = "vehicle"
_CHUNK = 16  # images decoded and detected per call of cropper.detect


@dataclass
class BoxAP:
    """COCO box AP of a detector on a dataset (AP over IoU 0.50:0.95, at 0.50 and at 0.75, in 0..1)."""

    ap: float
    ap50: float
    ap75: float
    num_images: int  # images scored
    num_boxes: int  # ground-truth boxes scored (crowd regions excluded)
    num_detections: int
    categories: list[str]  # the dataset categories scored ("vehicle" when class-agnostic)
    class_agnostic: bool
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (image, why left out)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        out = asdict(self)
        out["skipped"] = [list(s) for s in self.skipped]
        return out

    def summary(self) -> str:
        """One line: AP, AP50, AP75 in percent and what was scored."""
        mode = "class-agnostic" if self.class_agnostic else "by class name"
        left = f", {len(self.skipped)} images left out" if self.skipped else ""
        return (
            f"box AP {self.ap:.2%}, AP50 {self.ap50:.2%}, AP75 {self.ap75:.2%} ({mode}: {', '.join(self.categories)}; "
            f"{self.num_images} images, {self.num_boxes} boxes, {self.num_detections} detections{left})"
        )


def box_ap(
    cropper: Any,
    dataset: CocoDataset,
    *,
    classes: Sequence[str] | None = None,
    class_agnostic: bool | None = None,
    batch_size: int | None = None,
) -> BoxAP:
    """COCO box AP of ``cropper.detect`` on ``dataset``'s images and boxes (of its kept categories).

    ``classes``: the detector classes scored (default: the cropper policy's, e.g. car/truck/bus).
    ``class_agnostic``: True, False (by name; an error when no category name is a detector class) or None (pick).
    """
    from vehicle_cls.cocotools import coco_index, import_pycocotools, quiet

    COCOeval = import_pycocotools().cocoeval.COCOeval

    policy = getattr(cropper, "policy", None)
    names: list[str | int] = list(classes or (policy.classes if policy is not None else DEFAULT_VEHICLE_CLASSES))
    wanted = {coco_class_name(i): i for i in coco_class_ids(names)}
    cat_names = dict(zip(dataset.category_ids, dataset.classes))
    by_name = {c: n for c, n in cat_names.items() if n in wanted}
    if class_agnostic is None:
        class_agnostic = not by_name
    if not class_agnostic and not by_name:
        raise ValueError(
            f"{dataset.annotation_file}: no category is named like a detector class {sorted(wanted)} "
            f"(categories: {dataset.classes[:5]}...); score class-agnostic instead"
        )
    scored_cats = {AGNOSTIC_ID: AGNOSTIC_NAME} if class_agnostic else by_name
    gt, images, skipped = _ground_truth(dataset, set(cat_names) if class_agnostic else set(by_name), class_agnostic)
    num_boxes = sum(1 for a in gt["annotations"] if not a["iscrowd"])
    if num_boxes == 0:
        raise ValueError(f"{dataset.annotation_file}: no ground-truth box of {sorted(scored_cats.values())} to score")
    category_of = (
        {i: AGNOSTIC_ID for i in wanted.values()}
        if class_agnostic
        else {wanted[n]: c for c, n in by_name.items()}  # detector class id -> dataset category id
    )
    detections, failed = _detect(cropper, images, category_of, batch_size)
    skipped += failed
    failed_ids = {image["id"] for image in images if image["path"] in {f for f, _ in failed}}
    gt["images"] = [i for i in gt["images"] if i["id"] not in failed_ids]
    gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] not in failed_ids]
    num_boxes = sum(1 for a in gt["annotations"] if not a["iscrowd"])
    if num_boxes == 0:  # no silent "AP 0": nothing could be scored
        raise ValueError(
            f"{dataset.annotation_file}: no image with boxes could be detected; first: {': '.join(failed[0])}"
        )
    stats = [0.0, 0.0, 0.0]
    if detections:
        truth = coco_index(gt)
        with quiet():
            found = truth.loadRes(detections)
            evaluator = COCOeval(truth, found, iouType="bbox")
            evaluator.params.imgIds = [i["id"] for i in gt["images"]]
            evaluator.params.catIds = sorted(scored_cats)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        # -1 (a category without ground truth left in the mean) or NaN never reach the caller
        stats = [float(v) if math.isfinite(v) and v >= 0 else 0.0 for v in evaluator.stats[:3]]
    result = BoxAP(
        ap=stats[0],
        ap50=stats[1],
        ap75=stats[2],
        num_images=len(gt["images"]),
        num_boxes=num_boxes,
        num_detections=len(detections),
        categories=[scored_cats[c] for c in sorted(scored_cats)],
        class_agnostic=class_agnostic,
        skipped=skipped,
    )
    logger.debug("%s: %s", dataset.annotation_file, result.summary())
    return result


def _ground_truth(
    dataset: CocoDataset, categories: set[int], agnostic: bool
) -> tuple[dict[str, Any], list[dict[str, Any]], list[tuple[str, str]]]:
    """The COCO dict scored against (complete images only), those images with their paths, and the left out."""
    index = dataset.coco
    images, skipped = [], []
    for image in index.dataset["images"]:
        path = os.path.join(dataset.root or "", image["file_name"])
        if image["id"] in dataset.incomplete_images:
            skipped.append((path, "has a malformed annotation (see the dataset's problems)"))
        else:
            images.append({**image, "path": path})
    kept = {i["id"] for i in images}
    annotations = [
        {**a, "category_id": AGNOSTIC_ID} if agnostic else dict(a)
        for a in index.dataset["annotations"]
        if a["image_id"] in kept and a["category_id"] in categories
    ]
    cats = (
        [{"id": AGNOSTIC_ID, "name": AGNOSTIC_NAME}]
        if agnostic
        else [c for c in index.dataset["categories"] if c["id"] in categories]
    )
    gt = {
        "images": [{k: v for k, v in i.items() if k != "path"} for i in images],
        "annotations": annotations,
        "categories": cats,
    }
    return gt, images, skipped


def _detect(
    cropper: Any, images: list[dict[str, Any]], category_of: dict[int, int], batch_size: int | None
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """COCO result dicts (``[x, y, w, h]`` boxes) of the scored classes, and the images that failed."""
    results: list[dict[str, Any]] = []
    failed: list[tuple[str, str]] = []
    for start in range(0, len(images), _CHUNK):
        chunk = images[start : start + _CHUNK]
        for image, det in zip(chunk, cropper.detect([i["path"] for i in chunk], batch_size=batch_size)):
            if det.error:
                failed.append((image["path"], det.error))
                continue
            for (x1, y1, x2, y2), score, cls in zip(det.boxes.tolist(), det.scores.tolist(), det.classes.tolist()):
                if int(cls) in category_of:
                    results.append(
                        {
                            "image_id": image["id"],
                            "category_id": category_of[int(cls)],
                            "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "score": float(score),
                        }
                    )
    return results, failed
