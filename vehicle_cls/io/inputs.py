"""Expand what a user passes to a pipeline into a flat, ordered stream of single images.

One image (path, array, PIL image, bytes, tensor, binary file object), a folder (its image and
video files, sorted), a glob pattern (sorted matches), a video file (frames via OpenCV, every
``frame_stride``-th, each with its index and timestamp),
or any list / tuple / generator of those; a ``NamedInput`` gives any of them the name (and index) its
results report. Inputs known to fail (an empty folder, a glob with no
match, a video that cannot be opened) become items with ``error`` set, so that every input still
yields a result and nothing is silently lost.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from vehicle_cls.io.images import IMAGE_EXTENSIONS, describe_source, iter_image_files
from vehicle_cls.io.urls import is_url

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
_GLOB_CHARS = ("*", "?", "[")


@dataclass
class InputItem:
    """One image to classify: a source ``load_image`` accepts, or a frame already decoded."""

    source: Any  # handed to load_image; None when ``image`` or ``error`` is set
    name: str  # Result.source
    frame: int | None = None  # video frame index
    timestamp: float | None = None  # video frame time in seconds
    image: np.ndarray | None = None  # already decoded (video frames), RGB uint8 HxWx3
    error: str | None = None  # known failure before decoding
    index: int | None = None  # Result.index the caller gave (``NamedInput.index``); None: the stream position


@dataclass(frozen=True)
class NamedInput:
    """An input with the name its results report as ``source`` (an upload's file name, a row's path) and,
    optionally, the ``index`` they report (a request position, a dataset row), so callers get both back
    on the results instead of matching them by strings. ``data``: anything a pipeline accepts."""

    name: str
    data: Any
    index: int | None = None


def is_single_source(obj: Any) -> bool:
    """True for things that are one image (or one path), False for collections of inputs."""
    if isinstance(obj, (str, os.PathLike, bytes, bytearray, memoryview, np.ndarray)):
        return True
    if hasattr(obj, "read") or type(obj).__module__.startswith("PIL."):
        return True
    if type(obj).__module__.startswith("torch") and hasattr(obj, "shape"):  # a tensor
        return True
    return not isinstance(obj, Iterable)


def is_video_path(path: str | os.PathLike) -> bool:
    """Whether a path names a video file (by extension)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def expands(obj: Any) -> bool:
    """Whether a single source may turn into more or fewer than one item (folder, glob, video)."""
    if isinstance(obj, NamedInput):
        return expands(obj.data)
    if not isinstance(obj, (str, os.PathLike)):
        return False
    path = os.fspath(obj)
    if is_url(path):
        return False
    if os.path.isdir(path) or is_video_path(path):
        return True
    return not os.path.exists(path) and any(c in path for c in _GLOB_CHARS)


def expand_inputs(inputs: Any, frame_stride: int = 1, recursive: bool = True) -> Iterator[InputItem]:
    """Yield one ``InputItem`` per image in ``inputs``, in order (see the module docstring)."""
    if frame_stride < 1:
        raise ValueError(f"frame_stride must be >= 1, not {frame_stride}")
    if is_single_source(inputs):
        yield from _expand_one(inputs, frame_stride, recursive)
        return
    for obj in inputs:
        yield from _expand_one(obj, frame_stride, recursive)


def count_images(inputs: Any, recursive: bool = True) -> int | None:
    """How many items ``expand_inputs(inputs)`` yields (folders and globs listed), or None when that is
    not known before decoding: an iterator or generator, or a video among them (frames need the decoder)."""
    if is_single_source(inputs):
        objs: Iterable[Any] = [inputs]
    elif isinstance(inputs, (list, tuple)):
        objs = inputs
    else:
        return None
    count = 0
    for obj in objs:
        for kind, _ in _resolve(obj, recursive):
            if kind == "video":
                return None
            count += 1
    return count


def _expand_one(obj: Any, frame_stride: int, recursive: bool) -> Iterator[InputItem]:
    if isinstance(obj, NamedInput):  # every item of its data (e.g. video frames) reports its name and index
        for item in _expand_one(obj.data, frame_stride, recursive):
            yield replace(item, name=obj.name, index=obj.index)
        return
    for kind, value in _resolve(obj, recursive):
        if kind == "video":
            yield from iter_video_frames(value, frame_stride)
        elif kind == "error":
            yield InputItem(None, value[0], error=value[1])
        else:
            yield InputItem(value, describe_source(value))


def _resolve(obj: Any, recursive: bool) -> Iterator[tuple[str, Any]]:
    """One input, folders and globs walked: ("item", source), ("video", path) or ("error", (name, reason))."""
    if not isinstance(obj, (str, os.PathLike)):
        yield "item", obj
        return
    path = os.fspath(obj)
    if is_url(path):  # fetched by the decoder (read_image_file), never globbed: "?" starts its query
        yield "item", path
    elif os.path.isdir(path):
        files = list(iter_image_files(path, recursive=recursive, extensions=IMAGE_EXTENSIONS + VIDEO_EXTENSIONS))
        if not files:
            yield "error", (path, f"{path}: folder contains no image or video files")
        for f in files:
            yield from _resolve(os.fspath(f), recursive)
    elif not os.path.exists(path) and any(c in path for c in _GLOB_CHARS):
        matches = sorted(m for m in glob.glob(path, recursive=True) if os.path.isfile(m))
        if not matches:
            yield "error", (path, f"{path}: no files match this pattern")
        for m in matches:
            yield from _resolve(m, recursive)
    elif is_video_path(path) and os.path.isfile(path):
        yield "video", path
    else:
        yield "item", path


def iter_video_frames(path: str, frame_stride: int = 1) -> Iterator[InputItem]:
    """Every ``frame_stride``-th frame of a video as RGB items (frame index and timestamp in seconds
    kept); errors as items."""
    try:
        import cv2
    except ImportError:
        yield InputItem(None, path, error=f"{path}: reading video needs OpenCV: pip install vehicle-cls[video]")
        return
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            yield InputItem(None, path, error=f"{path}: cannot open video")
            return
        rate = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        fps = rate if rate > 0 and np.isfinite(rate) else None
        index, produced = 0, 0
        while True:
            if index % frame_stride == 0:
                ok, frame = cap.read()
                if not ok:
                    break
                rgb = np.ascontiguousarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
                produced += 1
                timestamp = index / fps if fps else max(0.0, float(cap.get(cv2.CAP_PROP_POS_MSEC)) / 1000.0)
                yield InputItem(None, path, frame=index, image=rgb, timestamp=round(timestamp, 6))
            elif not cap.grab():  # skip without decoding to pixels
                break
            index += 1
        if produced == 0:
            yield InputItem(None, path, error=f"{path}: video has no readable frames")
    finally:
        cap.release()
