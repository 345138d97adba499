"""A CSV of (image, label[, box][, split]) rows plus an image folder, with a column mapping.

Example, the course project's ``car_dataset_labels.csv`` (columns ``img_name,class,subset``) beside
``car_ims/``::

    CsvImages("data/car_dataset_labels.csv", "data/car_ims", path_column="img_name",
              label_column="class", split_column="subset", split="train")

Labels are class names, or integer ids when ``classes`` is given (``label_offset=1`` for 1-based
ids). Malformed rows are reported with the CSV line number and skipped or refused per ``on_error``.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from vehicle_cls.data.sample import (
    BoxFormat,
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

logger = logging.getLogger(__name__)

Column = str | int
SEED_CSV_NAME = "car_dataset_labels.csv"
_SEED_BOX_COLUMNS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2")


class CsvImages(SampleList):
    """Samples from a CSV file: one row per image, columns picked by name (or index with ``header=False``)."""

    def __init__(
        self,
        csv_path: str | os.PathLike,
        images_dir: str | os.PathLike | None = None,
        path_column: Column = "path",
        label_column: Column = "label",
        box_columns: Sequence[Column] | None = None,
        classes: Sequence[str] | None = None,
        *,
        split_column: Column | None = None,
        split: str | None = None,
        label_offset: int = 0,
        header: bool = True,
        delimiter: str = ",",
        box_format: BoxFormat = "devkit",
        check_images: bool = True,
        on_error: OnError = "skip",
        name: str | None = None,
    ):
        """Read ``csv_path``; image paths are relative to ``images_dir`` (default: the CSV's folder)."""
        check_on_error(on_error)
        csv_path = Path(csv_path)
        if not csv_path.is_file():
            raise DatasetError(f"{csv_path}: CSV file not found")
        root = Path(images_dir) if images_dir is not None else csv_path.parent
        if check_images and not root.is_dir():
            raise DatasetError(f"{root}: images folder not found")
        if box_columns is not None and len(box_columns) != 4:
            raise ValueError(f"box_columns must name 4 columns (x1, y1, x2, y2), got {list(box_columns)}")
        if (split_column is None) != (split is None) and split is not None:
            raise ValueError("split needs split_column (the column holding train/test)")
        rows, problems = _read_rows(csv_path, header, delimiter, path_column, label_column, box_columns, split_column)
        if split is not None:
            rows = [r for r in rows if r[4] == split]
        raw_labels = [r[2] for r in rows]
        if classes is None:
            classes = _classes_from(raw_labels)
            if not classes:
                which = f" for split {split!r}" if split is not None else ""
                raise DatasetError(
                    f"{csv_path}: no labelled rows{which} (only a header?); nothing to train or evaluate on", problems
                )
        lookup = {c: i for i, c in enumerate(classes)}
        samples: list[Sample] = []
        seen: dict[tuple[str, tuple | None], int] = {}
        for line, item, raw_label, box, _ in rows:
            label = lookup.get(raw_label)
            if label is None:
                try:
                    label = int(raw_label) - label_offset
                except ValueError:
                    label = None
                if label is not None and not 0 <= label < len(classes):
                    label = None
            if label is None:
                problems.append(Problem(str(csv_path), line, item, f"unknown class {raw_label!r}"))
                continue
            path = Path(item) if os.path.isabs(item) else root / item
            if check_images and not path.is_file():
                problems.append(Problem(str(csv_path), line, item, f"image file not found: {path}"))
                continue
            key = (os.path.normpath(path), box)  # one image (and box) is one sample: never in train and val
            if key in seen:
                problems.append(Problem(str(csv_path), line, item, f"duplicate of row {seen[key]}; dropped"))
                continue
            seen[key] = line
            samples.append(Sample(str(path), label, box))
        settle_problems(problems, on_error, f"CSV {csv_path}")
        super().__init__(
            samples,
            classes,
            name or csv_path.stem + (f"/{split}" if split else ""),
            root=root,
            split=split,
            box_format=box_format,
            problems=problems,
        )
        self.annotation_file = str(csv_path)


def _classes_from(raw_labels: list[str]) -> list[str]:
    unique = set(raw_labels)
    try:
        return [str(v) for v in sorted(unique, key=int)]  # numeric ids sort as numbers
    except ValueError:
        return sorted(unique)


def _read_rows(
    csv_path: Path,
    header: bool,
    delimiter: str,
    path_column: Column,
    label_column: Column,
    box_columns: Sequence[Column] | None,
    split_column: Column | None,
) -> tuple[list[tuple[int, str, str, tuple[float, float, float, float] | None, str | None]], list[Problem]]:
    """Parsed rows (line, path, label, box, split) and the problems of the malformed ones."""
    rows = []
    problems: list[Problem] = []
    with open_text(csv_path) as f:
        reader = csv.reader(f, delimiter=delimiter)
        names: list[str] = []
        if header:
            try:
                names = [n.strip() for n in next(reader)]
            except StopIteration:
                raise DatasetError(f"{csv_path}: empty CSV file (no header row)") from None
        wanted = [path_column, label_column, *(box_columns or ()), *(() if split_column is None else (split_column,))]
        index: dict[str | int, int] = {}
        for col in wanted:
            if isinstance(col, int):
                index[col] = col
            elif col in names:
                index[col] = names.index(col)
            else:
                raise DatasetError(f"{csv_path}: no column {col!r} (columns: {names})")
        needed = max(index.values()) + 1
        for start, row in csv_rows(reader, csv_path, problems):  # a row the csv module refuses is that row
            if not row or not "".join(row).strip():
                continue
            item = row[index[path_column]].strip() if len(row) > index[path_column] else None
            if len(row) < needed:
                problems.append(
                    Problem(str(csv_path), start, item, f"expected at least {needed} columns, got {len(row)}")
                )
                continue
            if not item:
                problems.append(Problem(str(csv_path), start, None, "empty image path"))
                continue
            box = None
            if box_columns is not None:
                try:
                    box = tuple(float(row[index[c]]) for c in box_columns)
                except ValueError:
                    problems.append(
                        Problem(
                            str(csv_path), start, item, f"box is not 4 numbers: {[row[index[c]] for c in box_columns]}"
                        )
                    )
                    continue
                reason = check_box(box)
                if reason is not None:
                    problems.append(Problem(str(csv_path), start, item, reason))
                    continue
            split_value = None if split_column is None else row[index[split_column]].strip()
            rows.append((start, item, row[index[label_column]].strip(), box, split_value))
    return rows, problems  # type: ignore[return-value]


def seed_csv_dataset(csv_path: str | os.PathLike, split: str | None = "train", **kwargs) -> CsvImages:
    """The course project's ``car_dataset_labels.csv`` + ``car_ims/`` (boxes used when the CSV has bbox columns)."""
    csv_path = Path(csv_path)
    with open_text(csv_path) as f:
        header = [n.strip() for n in next(csv.reader(f), [])]
    with open_text(csv_path) as f:
        first = next(csv.DictReader(f), None) or {}
    images = csv_path.parent / "car_ims"
    in_csv_dir = bool(first.get("img_name")) and (csv_path.parent / first["img_name"]).is_file()
    kwargs.setdefault("images_dir", images if images.is_dir() and not in_csv_dir else csv_path.parent)
    kwargs.setdefault("path_column", "img_name")
    kwargs.setdefault("label_column", "class")
    if all(c in header for c in _SEED_BOX_COLUMNS):
        kwargs.setdefault("box_columns", _SEED_BOX_COLUMNS)
    if "subset" in header and split is not None:
        kwargs.setdefault("split_column", "subset")
        kwargs.setdefault("split", split)
    return CsvImages(csv_path, **kwargs)
