"""A COCO annotation file (``images`` + ``annotations`` + ``categories``) as a labelled dataset.

``CocoDataset("annotations.json", images_dir)`` is a ``SampleList``: by default one ``Sample`` per
annotation (``per="annotation"``: every boxed vehicle is a training crop with ``crop: gt``), labelled with
its category name, its box the COCO ``[x, y, w, h]`` as 0-based edges ``(x, y, x + w, y + h)``
(``box_format="xyxy"``). ``per="image"`` keeps each image's largest annotation only: one sample per image,
what whole-image training (``crop: none``) expects, and what the cropper's default ``largest`` policy picks
at inference. Crowd annotations (``iscrowd: 1``) are never
samples; ``categories=[...]`` keeps only the named categories (the class list, in category id order).

Malformed entries (an annotation naming an unknown image or category, a bbox that is not 4 numbers or has a
non-positive size or lies outside the image, an image file that is not there, a duplicate id) are
``.problems`` naming the file, the position in ``annotations`` and the annotation id, and the rest of the
file is still read; ``on_error="raise"`` refuses the dataset instead. A file that is not JSON, or lacks
``images``/``annotations``/``categories``, always raises. ``.coco`` is the pycocotools index over the
checked entries (crowd ones included), what box AP (``vehicle_cls.train.box_ap``) scores against.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from vehicle_cls.data.sample import (
    DatasetError,
    OnError,
    Problem,
    Sample,
    SampleList,
    check_box,
    check_on_error,
    open_text,
    settle_problems,
)

logger = logging.getLogger(__name__)

PER = ("annotation", "image")
REQUIRED_KEYS = ("images", "annotations", "categories")


class CocoDataset(SampleList):
    """The annotations of one COCO file as samples (category name = label, bbox = box)."""

    def __init__(
        self,
        annotation_file: str | os.PathLike,
        images_dir: str | os.PathLike | None = None,
        *,
        categories: Sequence[str] | None = None,
        per: Literal["annotation", "image"] = "annotation",
        split: str | None = None,
        check_images: bool = True,
        on_error: OnError = "skip",
        name: str | None = None,
    ):
        """Read ``annotation_file``; ``file_name`` paths are relative to ``images_dir`` (default: the file's folder)."""
        check_on_error(on_error)
        if per not in PER:
            raise ValueError(f"per must be one of {PER}, not {per!r}")
        path = Path(annotation_file)
        root = Path(images_dir) if images_dir is not None else path.parent
        if check_images and not root.is_dir():
            raise DatasetError(f"{root}: images folder not found")
        checked = _CheckedFile(path, root, check_images)
        cats = checked.select_categories(categories)
        samples = checked.samples(cats, per)
        problems = checked.problems
        settle_problems(problems, on_error, f"COCO {path}")
        super().__init__(
            samples,
            [checked.categories[c] for c in cats],
            name or path.stem + (f"/{split}" if split else ""),
            root=root,
            split=split,
            box_format="xyxy",
            problems=problems,
        )
        self.annotation_file = str(path)
        self.category_ids: list[int] = cats  # class index i is COCO category id category_ids[i]
        self.incomplete_images: set[int] = checked.incomplete  # image ids with a malformed annotation
        from vehicle_cls.cocotools import coco_index

        self.coco = coco_index(checked.dataset)


class _CheckedFile:
    """The entries of one COCO file that passed the checks, plus a ``Problem`` for each that did not."""

    def __init__(self, path: Path, root: Path, check_images: bool):
        self.path, self.file, self.root = path, str(path), root
        self.problems: list[Problem] = []
        self.incomplete: set[int] = set()
        raw = _load(path)
        self.categories = self._categories(raw["categories"])
        self.images = self._images(raw["images"], root, check_images)
        self.annotations = self._annotations(raw["annotations"])
        self.dataset = {
            "info": raw.get("info", {}),
            "images": list(self.images.values()),
            "annotations": [a for _, a in self.annotations],
            "categories": [{"id": i, "name": n} for i, n in self.categories.items()],
        }

    def _categories(self, entries: list[Any]) -> dict[int, str]:
        found: dict[int, str] = {}
        repeated = _repeated_ids(entries)  # which category such an id names is unknown: no entry keeps it
        for i, cat in enumerate(entries):
            where = f"categories[{i}]"
            if not isinstance(cat, dict) or not _is_int(cat.get("id")) or not isinstance(cat.get("name"), str):
                self.problems.append(Problem(self.file, None, where, "a category needs an integer id and a name"))
            elif cat["id"] in repeated:
                self.problems.append(Problem(self.file, None, where, f"duplicate category id {cat['id']}"))
            elif not cat["name"].strip() or cat["name"].strip() in found.values():
                self.problems.append(Problem(self.file, None, where, f"empty or duplicate name {cat['name']!r}"))
            else:
                found[int(cat["id"])] = cat["name"].strip()
        return dict(sorted(found.items()))

    def _images(self, entries: list[Any], root: Path, check_images: bool) -> dict[int, dict[str, Any]]:
        found: dict[int, dict[str, Any]] = {}
        repeated = _repeated_ids(entries)  # which image such an id names is unknown: no entry keeps it
        for i, image in enumerate(entries):
            where = f"images[{i}]"
            if not isinstance(image, dict) or not _is_int(image.get("id")):
                self.problems.append(Problem(self.file, None, where, "an image needs an integer id"))
                continue
            name = image.get("file_name")
            if not isinstance(name, str) or not name.strip():
                self.problems.append(Problem(self.file, None, where, f"image id {image['id']}: no file_name"))
            elif image["id"] in repeated:
                self.problems.append(Problem(self.file, None, name, f"duplicate image id {image['id']}"))
            elif check_images and not (root / name).is_file():
                self.problems.append(Problem(self.file, None, name, f"image file not found: {root / name}"))
            else:
                height: int | None = image.get("height")
                width: int | None = image.get("width")
                if not (_is_int(height) and _is_int(width) and min(int(height or 0), int(width or 0)) > 0):
                    height = width = None  # unknown size: boxes are not checked against it
                found[int(image["id"])] = {"id": int(image["id"]), "file_name": name, "height": height, "width": width}
        return found

    def _annotations(self, entries: list[Any]) -> list[tuple[int, dict[str, Any]]]:
        """(1-based position, annotation) of the good annotations; a bad one marks its image incomplete."""
        kept: list[tuple[int, dict[str, Any]]] = []
        seen: set[int] = set()
        for i, ann in enumerate(entries):
            number = i + 1
            reason, item = self._check_annotation(ann, seen)
            if reason is not None:
                ann_id = ann.get("id") if isinstance(ann, dict) else None
                prefix = f"annotation id {ann_id}: " if ann_id is not None else ""
                self.problems.append(Problem(self.file, number, item, prefix + reason))
                if isinstance(ann, dict) and _is_int(ann.get("image_id")):
                    self.incomplete.add(int(ann["image_id"]))
                continue
            seen.add(int(ann["id"]))
            x, y, w, h = (float(v) for v in ann["bbox"])
            kept.append(
                (
                    number,
                    {
                        "id": int(ann["id"]),
                        "image_id": int(ann["image_id"]),
                        "category_id": int(ann["category_id"]),
                        "bbox": [x, y, w, h],
                        "area": float(ann["area"]) if _is_number(ann.get("area")) else w * h,
                        "iscrowd": int(bool(ann.get("iscrowd", 0))),
                    },
                )
            )
        return kept

    def _check_annotation(self, ann: Any, seen: set[int]) -> tuple[str | None, str | None]:
        """(why ``ann`` is unusable or None, the image file it names when known)."""
        if not isinstance(ann, dict):
            return f"an annotation must be an object, not {type(ann).__name__}", None
        missing = [k for k in ("id", "image_id", "category_id", "bbox") if k not in ann]
        if missing:
            return f"missing key(s) {missing}", None
        if not all(_is_int(ann[k]) for k in ("id", "image_id", "category_id")):
            return "id, image_id and category_id must be integers", None
        image = self.images.get(ann["image_id"])
        if ann["id"] in seen:
            return f"duplicate annotation id {ann['id']}", None if image is None else image["file_name"]
        if image is None:
            return f"image_id {ann['image_id']} names no (usable) image", None
        item = image["file_name"]
        if ann["category_id"] not in self.categories:
            return f"category_id {ann['category_id']} names no category", item
        bbox = ann["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
            return f"bbox must be 4 numbers [x, y, w, h], got {bbox!r}", item
        x, y, w, h = (float(v) for v in bbox)
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            return f"bbox has a non-finite value {bbox!r}", item
        if w <= 0 or h <= 0:
            return f"bbox has a non-positive size (w={w:g}, h={h:g})", item
        size = (image["height"], image["width"]) if image["height"] else None
        reason = check_box((x, y, x + w, y + h), size)
        return (None if reason is None else f"bbox {bbox}: {reason}"), item

    def select_categories(self, names: Sequence[str] | None) -> list[int]:
        """The category ids kept, in id order: all, or those named (an unknown name is an error)."""
        if names is None:
            return list(self.categories)
        unknown = sorted(set(names) - set(self.categories.values()))
        if unknown:
            raise DatasetError(
                f"{self.path}: no categor{'y' if len(unknown) == 1 else 'ies'} {unknown} "
                f"(has {list(self.categories.values())})"
            )
        return [i for i, n in self.categories.items() if n in set(names)]

    def samples(self, cats: list[int], per: str) -> list[Sample]:
        """One sample per kept non-crowd annotation, or per image its largest (ties: the first listed)."""
        label = {c: i for i, c in enumerate(cats)}
        chosen = [a for _, a in self.annotations if a["category_id"] in label and not a["iscrowd"]]
        if per == "image":
            largest: dict[int, dict[str, Any]] = {}
            for a in chosen:
                best = largest.get(a["image_id"])
                if best is None or a["bbox"][2] * a["bbox"][3] > best["bbox"][2] * best["bbox"][3]:
                    largest[a["image_id"]] = a
            chosen = [a for a in chosen if largest[a["image_id"]] is a]
        out = []
        for a in chosen:
            x, y, w, h = a["bbox"]
            path = os.path.join(self.root, self.images[a["image_id"]]["file_name"])
            out.append(Sample(path, label[a["category_id"]], (x, y, x + w, y + h)))
        return out


def _load(path: Path) -> dict[str, Any]:
    """The parsed file, or one ``DatasetError`` line: not found, not JSON, not an object with the three lists."""
    if not path.is_file():
        raise DatasetError(f"{path}: COCO annotation file not found")
    try:
        with open_text(path) as f:
            raw = json.load(f)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise DatasetError(f"{path}: a COCO file is a JSON object, not {type(raw).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise DatasetError(f"{path}: not a COCO annotation file: missing key(s) {missing}")
    wrong = [k for k in REQUIRED_KEYS if not isinstance(raw[k], list)]
    if wrong:
        raise DatasetError(f"{path}: {wrong} must be lists")
    return raw


def _repeated_ids(entries: list[Any]) -> set[int]:
    """The integer ids that more than one entry of ``entries`` has."""
    counts = Counter(int(e["id"]) for e in entries if isinstance(e, dict) and _is_int(e.get("id")))
    return {i for i, n in counts.items() if n > 1}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
