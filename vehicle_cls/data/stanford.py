"""Stanford Cars from its devkit: ``cars_meta.mat`` + ``cars_{train,test}_annos*.mat`` + image folders.

``StanfordCars(devkit_dir, images_dir, split)`` is a ``SampleList``: ``.path`` is the image file,
``.label`` the 0-based index into ``.classes`` (the 196 names of ``cars_meta.mat``; devkit class
``c`` is label ``c - 1``) and ``.box`` the devkit's (x1, y1, x2, y2), inclusive 1-based pixels.

Malformed rows (missing or duplicate image file, bad box, class id outside 1..196, missing value)
are collected in ``.problems`` with file, row (1-based annotation number, as MATLAB counts) and
image name; ``on_error="skip"`` (default) drops them with a warning, ``"raise"`` refuses the
dataset with ``DatasetError``. Structural faults (missing file or field) always raise.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vehicle_cls.data.sample import (
    DatasetError,
    OnError,
    Problem,
    Sample,
    SampleList,
    check_box,
    check_on_error,
    settle_problems,
)

logger = logging.getLogger(__name__)

META_FILE = "cars_meta.mat"
ANNOTATION_FILES = {
    "train": ("cars_train_annos.mat",),
    "test": ("cars_test_annos_withlabels.mat", "cars_test_annos.mat"),
}
ALL_ANNOTATIONS_FILE = "cars_annos.mat"  # the later single-file release: relative_im_path + test flag
IMAGE_DIRS = {"train": ("cars_train", "cars_train/cars_train"), "test": ("cars_test", "cars_test/cars_test")}
BOX_FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2")


def _loadmat(path: Path) -> dict[str, Any]:
    import scipy.io

    try:
        return scipy.io.loadmat(str(path))
    except Exception as exc:
        raise DatasetError(f"{path}: cannot read MATLAB file ({type(exc).__name__}: {exc})") from exc


def read_class_names(meta_path: str | os.PathLike) -> list[str]:
    """The class names of ``cars_meta.mat`` in devkit order (name i is devkit class i + 1)."""
    meta_path = Path(meta_path)
    mat = _loadmat(meta_path)
    if "class_names" not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DatasetError(f"{meta_path}: no 'class_names' variable (found {found})")
    names = []
    for i, cell in enumerate(np.asarray(mat["class_names"], dtype=object).ravel()):
        values = np.asarray(cell).ravel()
        if values.size != 1 or not str(values[0]).strip():
            raise DatasetError(f"{meta_path}: class_names entry {i + 1} is empty or not a string")
        names.append(str(values[0]).strip())
    if len(set(names)) != len(names):
        raise DatasetError(f"{meta_path}: class_names has duplicate names")
    return names


def _one(value: Any) -> Any:
    """The single element of a MATLAB cell/array, or raise ValueError when there is not exactly one."""
    flat = np.asarray(value).ravel()
    if flat.size != 1:
        raise ValueError("missing value" if flat.size == 0 else f"expected one value, got {flat.size}")
    item = flat[0]
    return item.item() if isinstance(item, np.generic) else item


def _number(value: Any) -> float:
    item = _one(value)
    if isinstance(item, (str, bytes)):
        raise ValueError(f"expected a number, got {item!r}")
    return float(item)


class StanfordCars(SampleList):
    """The Stanford Cars devkit annotations for one split, as a sequence of ``Sample``."""

    def __init__(
        self,
        devkit_dir: str | os.PathLike,
        images_dir: str | os.PathLike | None = None,
        split: Literal["train", "test"] = "train",
        on_error: OnError = "skip",
        *,
        check_images: bool = True,
        check_sizes: bool = False,
        allow_unlabeled: bool = False,
        annotations: str | os.PathLike | None = None,
    ):
        """Read ``split`` from ``devkit_dir``; images are looked up in ``images_dir``.

        ``images_dir`` defaults to ``cars_train``/``cars_test`` next to (or inside) the devkit folder.
        ``check_images`` reports rows whose image file is absent; ``check_sizes`` also opens each
        image header to catch boxes outside the image. ``allow_unlabeled`` accepts the label-less
        ``cars_test_annos.mat`` (labels become -1); otherwise that file is refused.
        ``annotations`` overrides the annotation file path.
        """
        check_on_error(on_error)
        if split not in ANNOTATION_FILES:
            raise ValueError(f"split must be 'train' or 'test', not {split!r}")
        devkit = Path(devkit_dir)
        if not devkit.is_dir():
            raise DatasetError(f"{devkit}: devkit folder not found")
        classes = self._classes(devkit)
        anno_path, rows_filter = self._annotation_file(devkit, split, annotations)
        images_root = self._images_dir(devkit, images_dir, split, anno_path, check_images)
        samples, problems = self._read(
            anno_path, rows_filter, classes, images_root, check_images, check_sizes, allow_unlabeled
        )
        settle_problems(problems, on_error, f"Stanford Cars {split}")
        super().__init__(
            samples,
            classes,
            f"stanford_cars/{split}",
            root=images_root,
            split=split,
            box_format="devkit",
            problems=problems,
        )
        self.annotation_file = str(anno_path)

    @staticmethod
    def _classes(devkit: Path) -> list[str]:
        meta = devkit / META_FILE
        if meta.is_file():
            return read_class_names(meta)
        from vehicle_cls.labels import stanford_cars_classes

        logger.warning("%s not found; using the 196 Stanford Cars names shipped with vehicle_cls", meta)
        return list(stanford_cars_classes())

    @staticmethod
    def _annotation_file(devkit: Path, split: str, override: str | os.PathLike | None) -> tuple[Path, str | None]:
        if override is not None:
            path = Path(override)
            if not path.is_file():
                raise DatasetError(f"{path}: annotation file not found")
            return path, (split if path.name == ALL_ANNOTATIONS_FILE else None)
        for name in ANNOTATION_FILES[split]:
            if (devkit / name).is_file():
                return devkit / name, None
        if (devkit / ALL_ANNOTATIONS_FILE).is_file():
            return devkit / ALL_ANNOTATIONS_FILE, split
        wanted = " or ".join(ANNOTATION_FILES[split] + (ALL_ANNOTATIONS_FILE,))
        raise DatasetError(f"{devkit}: no {split} annotations ({wanted}) in the devkit folder")

    @staticmethod
    def _images_dir(
        devkit: Path, images_dir: str | os.PathLike | None, split: str, anno_path: Path, check: bool
    ) -> Path:
        if images_dir is not None:
            root = Path(images_dir)
        elif anno_path.name == ALL_ANNOTATIONS_FILE:  # paths are relative ("car_ims/000001.jpg")
            root = anno_path.parent if (anno_path.parent / "car_ims").is_dir() else anno_path.parent.parent
        else:
            candidates = [base / sub for base in (devkit, devkit.parent) for sub in IMAGE_DIRS[split]]
            root = next((c for c in candidates if c.is_dir()), candidates[0])
        if check and not root.is_dir():
            raise DatasetError(
                f"{root}: images folder not found (pass images_dir=..., or check_images=False to read annotations only)"
            )
        return root

    @staticmethod
    def _read(
        anno_path: Path,
        rows_filter: str | None,
        classes: list[str],
        images_root: Path,
        check_images: bool,
        check_sizes: bool,
        allow_unlabeled: bool,
    ) -> tuple[list[Sample], list[Problem]]:
        mat = _loadmat(anno_path)
        if "annotations" not in mat:
            found = sorted(k for k in mat if not k.startswith("__"))
            raise DatasetError(f"{anno_path}: no 'annotations' variable (found {found})")
        annos = np.asarray(mat["annotations"]).ravel()
        fields = annos.dtype.names or ()
        path_field = "relative_im_path" if "relative_im_path" in fields else "fname"
        missing = [f for f in (*BOX_FIELDS, path_field) if f not in fields]
        if rows_filter is not None and "test" not in fields:
            missing.append("test")
        if missing:
            raise DatasetError(f"{anno_path}: annotations lack field(s) {missing} (has {list(fields)})")
        labelled = "class" in fields
        if not labelled and not allow_unlabeled:
            raise DatasetError(
                f"{anno_path}: has no 'class' field (the label-less test release); use "
                "cars_test_annos_withlabels.mat, or allow_unlabeled=True to read it with label -1"
            )
        existing = _listing(images_root) if check_images else None
        samples: list[Sample] = []
        problems: list[Problem] = []
        seen: dict[str, int] = {}
        root_str = str(images_root)
        for i, row in enumerate(annos):
            number = i + 1
            item = None
            try:
                if rows_filter is not None and bool(_number(row["test"])) != (rows_filter == "test"):
                    continue
                fname = str(_one(row[path_field])).strip()
                if not fname:
                    raise ValueError("empty image name")
                item = fname
                box = tuple(_number(row[f]) for f in BOX_FIELDS)
                label = -1
                if labelled:
                    class_id = _number(row["class"])
                    if not math.isfinite(class_id):
                        raise ValueError(f"class id {class_id} is not a number of a class")
                    if class_id != int(class_id):
                        raise ValueError(f"class id {class_id:g} is not an integer")
                    if not 1 <= class_id <= len(classes):
                        raise ValueError(f"class id {int(class_id)} outside 1..{len(classes)} (unknown class)")
                    label = int(class_id) - 1
            except (ValueError, OverflowError, TypeError) as exc:  # one bad row is that row (class inf, ...)
                problems.append(Problem(str(anno_path), number, item, str(exc)))
                continue
            path = os.path.join(root_str, fname)
            size = None
            if existing is not None and fname.replace("\\", "/") not in existing:
                problems.append(Problem(str(anno_path), number, fname, f"image file not found: {path}"))
                continue
            if check_sizes:
                size = _image_size(Path(path))
                if size is None:
                    problems.append(Problem(str(anno_path), number, fname, f"cannot read image header: {path}"))
                    continue
            reason = check_box(box, size)
            if reason is not None:
                problems.append(Problem(str(anno_path), number, fname, reason))
                continue
            if fname in seen:
                problems.append(Problem(str(anno_path), number, fname, f"duplicate image (also row {seen[fname]})"))
                continue
            seen[fname] = number
            samples.append(Sample(path, label, box))  # type: ignore[arg-type]
        return samples, problems


def _listing(root: Path) -> set[str]:
    """Relative paths of the files under ``root`` (one directory walk instead of a stat per row)."""
    found: set[str] = set()
    for dirpath, _, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        found.update(prefix + f for f in files)
    return found


def _image_size(path: Path) -> tuple[int, int] | None:
    """(height, width) from the image header, or None when it cannot be read (or is no regular file:
    opening a FIFO would block)."""
    from PIL import Image

    if not path.is_file():
        return None
    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except Exception:
        return None
