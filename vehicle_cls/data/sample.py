"""The common currency of the readers: ``Sample`` (image path, label, box) and ``SampleList``.

Every reader (devkit .mat, class folders, Kaggle layout, CSV, crop cache) produces a
``SampleList``: a read-only sequence of ``Sample`` with ``.classes`` (index -> name), ``.name``
and ``.problems`` (every malformed row it skipped, so nothing is dropped silently).

Boxes are (x1, y1, x2, y2) as the source writes them. ``box_format`` says how to read them:
``"devkit"`` = inclusive 1-based pixel indices (Stanford Cars devkit, Kaggle anno_*.csv), so the
pixels are ``image[y1-1:y2, x1-1:x2]``; ``"xyxy"`` = 0-based pixel edges, ``image[y1:y2, x1:x2]``.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TextIO, overload

import numpy as np

from vehicle_cls.errors import VehicleClsError, one_line

logger = logging.getLogger(__name__)

Box = tuple[float, float, float, float]
BoxFormat = Literal["devkit", "xyxy"]
OnError = Literal["skip", "raise"]
BOX_FORMATS = ("devkit", "xyxy")
ON_ERROR = ("skip", "raise")


@dataclass(frozen=True)
class Sample:
    """One labelled image: where it is, its class index (-1 = unlabelled) and optional box."""

    path: str
    label: int
    box: Box | None = None


@dataclass(frozen=True)
class Problem:
    """One malformed entry a reader met: the file, the row/line in it, the item and the reason."""

    file: str
    row: int | None  # annotation number (1-based, as MATLAB counts) or CSV line number; None for whole-file
    item: str | None  # image name/path of the row, when known
    reason: str

    def __str__(self) -> str:
        where = self.file if self.row is None else f"{self.file}: row {self.row}"
        return f"{where}{f' ({self.item})' if self.item else ''}: {self.reason}"


class DatasetError(VehicleClsError, ValueError):
    """A dataset cannot be read as asked (missing files, malformed rows with ``on_error='raise'``)."""

    def __init__(self, message: str, problems: Sequence[Problem] = ()):
        self.problems = list(problems)
        super().__init__(one_line(message))


@contextlib.contextmanager
def open_text(path: str | os.PathLike) -> Iterator[TextIO]:
    """Open a CSV or names file as UTF-8 (a BOM is fine); a byte that is not UTF-8 is a ``DatasetError``
    naming the file, not a bare ``UnicodeDecodeError``."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            yield f
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start] if exc.start < len(exc.object) else 0
        raise DatasetError(
            f"{os.fspath(path)}: not UTF-8 text (byte 0x{byte:02x} cannot be decoded); save it as UTF-8"
        ) from None


def csv_rows(reader: Any, path: str | os.PathLike, problems: list[Problem]) -> Iterator[tuple[int, list[str]]]:
    """(first line number, fields) of each row of a ``csv.reader``; a row the csv module cannot parse (a
    field over its size limit, ...) becomes a problem naming the file and line, and reading goes on."""
    line = reader.line_num
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            start, line = line + 1, reader.line_num
            problems.append(Problem(os.fspath(path), start, None, f"unreadable CSV row ({exc})"))
            continue
        start, line = line + 1, reader.line_num
        yield start, row


def check_on_error(on_error: str) -> None:
    """Refuse unknown ``on_error`` values early with the allowed ones."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, not {on_error!r}")


def settle_problems(problems: list[Problem], on_error: str, what: str) -> None:
    """Raise (``on_error='raise'``) or log (``'skip'``) the problems a reader collected."""
    if not problems:
        return
    shown = "; ".join(str(p) for p in problems[:3]) + (f"; ... ({len(problems) - 3} more)" if len(problems) > 3 else "")
    if on_error == "raise":
        entries = "entry" if len(problems) == 1 else "entries"
        raise DatasetError(f"{what}: {len(problems)} malformed {entries}: {shown}", problems)
    logger.warning("%s: skipped %d malformed entries (see .problems): %s", what, len(problems), shown)


def check_box(box: Sequence[float], image_size: tuple[int, int] | None = None) -> str | None:
    """Why a box is unusable (non-finite, negative, empty, outside the image), or None if it is fine.

    ``image_size`` is (height, width); one pixel of slack past the far edge is tolerated (annotation slop).
    """
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError):
        return f"box must be 4 numbers, got {box!r}"
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        return f"box has a non-finite value {box!r}"
    if min(x1, y1, x2, y2) < 0:
        return f"box has a negative coordinate (x1={x1:g}, y1={y1:g}, x2={x2:g}, y2={y2:g})"
    if x2 <= x1 or y2 <= y1:
        return f"empty box: need x2 > x1 and y2 > y1 (x1={x1:g}, y1={y1:g}, x2={x2:g}, y2={y2:g})"
    if image_size is not None:
        height, width = image_size
        if x1 >= width or y1 >= height or x2 > width + 1 or y2 > height + 1:
            return f"box (x1={x1:g}, y1={y1:g}, x2={x2:g}, y2={y2:g}) is outside the {width}x{height} image"
    return None


def pixel_box(
    box: Sequence[float], image_size: tuple[int, int], box_format: str = "devkit"
) -> tuple[int, int, int, int]:
    """Integer slice bounds (x1, y1, x2, y2), clamped to the image, so ``image[y1:y2, x1:x2]`` is the box."""
    if box_format not in BOX_FORMATS:
        raise ValueError(f"box_format must be one of {BOX_FORMATS}, not {box_format!r}")
    height, width = image_size
    x1, y1, x2, y2 = (float(v) for v in box)
    if box_format == "devkit":  # inclusive 1-based indices -> 0-based half-open
        x1, y1 = x1 - 1, y1 - 1
    left, top = max(0, math.floor(x1)), max(0, math.floor(y1))
    right, bottom = min(width, math.ceil(x2)), min(height, math.ceil(y2))
    if right <= left or bottom <= top:
        raise ValueError(f"box {tuple(box)} does not overlap the {width}x{height} image")
    return left, top, right, bottom


def continuous_box(box: Sequence[float], box_format: str = "devkit") -> Box:
    """The box as 0-based pixel edges (what detectors and ``CropChoice.box`` use)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return (x1 - 1, y1 - 1, x2, y2) if box_format == "devkit" else (x1, y1, x2, y2)


class SampleList(Sequence[Sample]):
    """A read-only list of samples with class names, a name, a box format and the problems met."""

    def __init__(
        self,
        samples: Sequence[Sample],
        classes: Sequence[str],
        name: str = "dataset",
        *,
        root: str | os.PathLike | None = None,
        split: str | None = None,
        box_format: BoxFormat = "devkit",
        problems: Sequence[Problem] = (),
    ):
        if box_format not in BOX_FORMATS:
            raise ValueError(f"box_format must be one of {BOX_FORMATS}, not {box_format!r}")
        self._samples = list(samples)
        self.classes: list[str] = list(classes)
        self.name = name
        self.root = None if root is None else os.fspath(root)
        self.split = split
        self.box_format: BoxFormat = box_format
        self.problems: list[Problem] = list(problems)

    def __len__(self) -> int:
        return len(self._samples)

    @overload
    def __getitem__(self, index: int) -> Sample: ...
    @overload
    def __getitem__(self, index: slice) -> SampleList: ...
    def __getitem__(self, index):
        if isinstance(index, slice):
            return self._derive(self._samples[index], f"{self.name}[{index.start}:{index.stop}]")
        return self._samples[index]

    def __iter__(self) -> Iterator[Sample]:
        return iter(self._samples)

    def __repr__(self) -> str:
        split = f", split={self.split!r}" if self.split else ""
        return f"{type(self).__name__}(name={self.name!r}{split}, samples={len(self)}, classes={len(self.classes)})"

    @property
    def labels(self) -> np.ndarray:
        """Class index of every sample, as an int64 array (for splits and class balance)."""
        return np.fromiter((s.label for s in self._samples), dtype=np.int64, count=len(self._samples))

    def class_counts(self) -> dict[str, int]:
        """Number of samples per class name (classes with none included, as 0)."""
        counts = Counter(s.label for s in self._samples)
        return {name: counts.get(i, 0) for i, name in enumerate(self.classes)}

    def subset(
        self, indices: Sequence[int] | np.ndarray, name: str | None = None, split: str | None = None
    ) -> SampleList:
        """The samples at ``indices`` (same classes and box format; same split tag unless ``split`` is given)."""
        picked = [self._samples[int(i)] for i in indices]
        return self._derive(picked, name or f"{self.name}[subset]", split)

    def _derive(self, samples: list[Sample], name: str, split: str | None = None) -> SampleList:
        return SampleList(
            samples, self.classes, name, root=self.root, split=split or self.split, box_format=self.box_format
        )


def relabel(
    samples: Sequence[Sample],
    classes: Sequence[str],
    into: Sequence[str],
    *,
    what: str = "dataset",
    target: str = "the model",
    split: str | None = None,
) -> SampleList:
    """``samples`` (labelled by index into ``classes``) relabelled into the class list ``into`` by name.

    Only the classes that some sample uses must be in ``into``: a class nobody is labelled with (an
    empty class folder) changes no label, so it is not an error. An unknown used class is a
    ``ValueError`` naming ``what`` and the classes. Name, root, split (unless ``split`` is given), box
    format and problems carry over; with equal class lists the samples come back unchanged.
    """
    classes, into = list(classes), list(into)
    name = getattr(samples, "name", what)
    split = split or getattr(samples, "split", None)
    root = getattr(samples, "root", None)
    box_format: BoxFormat = getattr(samples, "box_format", "devkit")
    problems: Sequence[Problem] = getattr(samples, "problems", ())
    if classes == into:
        if isinstance(samples, SampleList) and samples.split == split:
            return samples
        return SampleList(list(samples), into, name, split=split, root=root, box_format=box_format, problems=problems)
    index = {c: i for i, c in enumerate(into)}
    unknown = sorted({classes[s.label] for s in samples} - set(index))
    if unknown:
        raise ValueError(f"{what} {name}: {len(unknown)} classes {target} does not know, e.g. {unknown[:5]}")
    items = [Sample(s.path, index[classes[s.label]], s.box) for s in samples]
    return SampleList(items, into, name, split=split, root=root, box_format=box_format, problems=problems)
