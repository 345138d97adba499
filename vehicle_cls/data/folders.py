"""Class-folder datasets: generic ``root/<class>/*.jpg`` and the Kaggle Stanford Cars layout.

Kaggle ("stanford-car-dataset-by-classes-folder"): ``car_data/{train,test}/<class name>/NNNNN.jpg``
plus optional ``names.csv`` (the 196 names in devkit order) and ``anno_{train,test}.csv``
(``image_name,x_min,y_min,x_max,y_max,label`` with devkit boxes and 1-based class ids).
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Literal

from vehicle_cls.data.sample import (
    DatasetError,
    OnError,
    Problem,
    Sample,
    SampleList,
    check_box,
    check_on_error,
    csv_rows,
    open_text,
    settle_problems,
)
from vehicle_cls.io.images import iter_image_files

logger = logging.getLogger(__name__)

_NAME_HEADERS = {"name", "names", "class", "class_name", "classname", "label"}


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    return list(iter_image_files(folder, recursive=recursive, skip_hidden=True))


def folder_name(class_name: str) -> str:
    """The folder a class name is stored under ('/' cannot be in a file name; Kaggle writes '-')."""
    return class_name.replace("/", "-").strip()


class ClassFolders(SampleList):
    """``root/<class name>/**/image`` : one folder per class, classes in sorted folder order."""

    def __init__(
        self,
        root: str | os.PathLike,
        classes: list[str] | None = None,
        on_error: OnError = "skip",
        *,
        recursive: bool = True,
        name: str | None = None,
        split: str | None = None,
    ):
        """Read the folders under ``root``; ``classes`` fixes the order (folders not in it are problems)."""
        check_on_error(on_error)
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"{root}: dataset folder not found")
        dirs = _class_dirs(root)
        if not dirs:
            raise DatasetError(f"{root}: no class folders (expected root/<class name>/<image files>)")
        if classes is None:
            classes = [d.name for d in dirs]
        samples, problems = _read_class_dirs(root, dirs, list(classes), recursive)
        settle_problems(problems, on_error, f"class folders {root}")
        super().__init__(
            samples, classes, name or root.name, root=root, split=split, box_format="xyxy", problems=problems
        )


def _read_class_dirs(
    root: Path, dirs: list[Path], classes: list[str], recursive: bool
) -> tuple[list[Sample], list[Problem]]:
    index = {folder_name(c): i for i, c in enumerate(classes)}
    samples: list[Sample] = []
    problems: list[Problem] = []
    for stray in _images_in(root, recursive=False):
        problems.append(Problem(str(root), None, stray.name, "image outside any class folder"))
    for d in dirs:
        label = index.get(d.name)
        images = _images_in(d, recursive)
        if not images and label is not None:
            logger.warning(
                "%s: class folder %r has no images; the model keeps an output for it that no image trains", d, d.name
            )
        if label is None:
            problems.append(
                Problem(
                    str(d),
                    None,
                    None,
                    f"folder is not one of the {len(classes)} classes ({len(images)} images skipped)",
                )
            )
            continue
        samples.extend(Sample(str(p), label) for p in images)
    return samples, problems


def _read_names(path: Path) -> list[str]:
    with open_text(path) as f:
        names = [row[0].strip() for row in csv.reader(f) if row and row[0].strip()]
    if names and names[0].lower() in _NAME_HEADERS:
        names = names[1:]
    if len(set(names)) != len(names):
        raise DatasetError(f"{path}: duplicate class names")
    return names


class KaggleCars(SampleList):
    """The Kaggle Stanford Cars class-folder layout for one split, boxes from ``anno_<split>.csv`` when present."""

    def __init__(
        self,
        root: str | os.PathLike,
        split: Literal["train", "test"] = "train",
        on_error: OnError = "skip",
        *,
        boxes: bool = True,
    ):
        """``root`` may be the download folder, its ``car_data`` or ``car_data/car_data``."""
        check_on_error(on_error)
        base = find_kaggle_root(root, split)
        split_dir = base / split
        names_csv = _find_beside(base, "names.csv")
        if names_csv is not None:
            classes = _read_names(names_csv)
        else:  # both splits' folders, so train and test agree on label indices
            classes = sorted({d.name for s in ("train", "test") if (base / s).is_dir() for d in _class_dirs(base / s)})
        dirs = _class_dirs(split_dir)
        samples, problems = _read_class_dirs(split_dir, dirs, classes, recursive=True)
        anno_csv = _find_beside(base, f"anno_{split}.csv") if boxes else None
        if anno_csv is not None:
            samples, more = _attach_boxes(samples, anno_csv, classes)
            problems += more
        settle_problems(problems, on_error, f"Kaggle cars {split} ({split_dir})")
        super().__init__(
            samples,
            classes,
            f"kaggle_cars/{split}",
            root=split_dir,
            split=split,
            box_format="devkit",
            problems=problems,
        )
        self.annotation_file = None if anno_csv is None else str(anno_csv)


def find_kaggle_root(root: str | os.PathLike, split: str = "train") -> Path:
    """The folder holding ``train/`` and ``test/`` for a Kaggle-style download, or raise ``DatasetError``."""
    root = Path(root)
    for candidate in (root, root / "car_data", root / "car_data" / "car_data"):
        if (candidate / split).is_dir():
            return candidate
    raise DatasetError(f"{root}: no {split}/ class folders (expected [car_data/]{{train,test}}/<class name>/)")


def _find_beside(base: Path, name: str) -> Path | None:
    for folder in (base, base.parent, base.parent.parent):
        if (folder / name).is_file():
            return folder / name
    return None


def _attach_boxes(samples: list[Sample], anno_csv: Path, classes: list[str]) -> tuple[list[Sample], list[Problem]]:
    """Give each sample its box from ``anno_csv``; disagreements and malformed lines are problems."""
    problems: list[Problem] = []
    rows: dict[str, tuple[int, tuple[float, float, float, float], int]] = {}
    with open_text(anno_csv) as f:
        for line_no, row in csv_rows(csv.reader(f), anno_csv, problems):
            if not row or not "".join(row).strip():
                continue
            if line_no == 1 and row[0].strip().lower() in ("image_name", "image", "fname", "filename"):
                continue  # header
            item = row[0].strip()
            try:
                if len(row) < 6:
                    raise ValueError(f"expected 6 columns (image_name,x_min,y_min,x_max,y_max,label), got {len(row)}")
                x0, y0, x1, y1 = (float(v) for v in row[1:5])
                box = (x0, y0, x1, y1)
                class_id = int(row[5])
            except ValueError as exc:
                problems.append(Problem(str(anno_csv), line_no, item or None, str(exc)))
                continue
            reason = check_box(box)
            if reason is None and not 1 <= class_id <= len(classes):
                reason = f"class id {class_id} outside 1..{len(classes)} (unknown class)"
            if reason is not None:
                problems.append(Problem(str(anno_csv), line_no, item, reason))
                rows[item] = (line_no, box, -2)  # known-bad: drop the image too
                continue
            rows[item] = (line_no, box, class_id - 1)
    kept: list[Sample] = []
    used: set[str] = set()
    for s in samples:
        name = os.path.basename(s.path)
        entry = rows.get(name)
        if entry is None:
            kept.append(s)  # no annotation: keep the image, without a box
            continue
        used.add(name)
        line_no, box, label = entry
        if label == -2:
            continue
        if label != s.label:
            problems.append(
                Problem(
                    str(anno_csv),
                    line_no,
                    name,
                    f"label {classes[label]!r} disagrees with the folder {classes[s.label]!r}",
                )
            )
            continue
        kept.append(Sample(s.path, s.label, box))
    for name, (line_no, _, label) in rows.items():
        if name not in used and label != -2:
            problems.append(Problem(str(anno_csv), line_no, name, "image listed but not found in the class folders"))
    return kept, problems
