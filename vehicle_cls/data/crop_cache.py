"""Crop every image of a dataset once (detector or ground-truth box) and keep the crops on disk.

Layout of a cache folder::

    cache.json       settings the crops were made with (mode, cropper config, policy, format, classes)
    manifest.jsonl   one JSON line per source image (per annotated vehicle where a photo has several, and
                     in ``gt`` mode), appended and flushed as each item finishes
    crops/           the crop files (JPEG quality 95, or PNG)

A manifest line: ``source``, ``split``, ``label``, ``file`` (crop path relative to the cache), ``box`` (crop
box in original pixels, 0-based edges; null = whole image), ``detector_class``, ``detector_class_id``,
``detector_score``, ``fallback`` (no vehicle found, whole image used), ``error`` (one-line reason, null when
fine), ``mode``, ``source_box`` (the annotation's box where it is part of the key); ``crops`` lists every
crop when the policy keeps several. A crash loses at most the item in flight; running ``build`` again skips
every source already in the manifest (``retry_errors=True`` retries the failed ones).
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vehicle_cls.crops import cut
from vehicle_cls.data.sample import (
    DatasetError,
    Problem,
    Sample,
    SampleList,
    continuous_box,
    pixel_box,
)
from vehicle_cls.errors import one_line
from vehicle_cls.fileio import atomic_write_bytes, clean_stale_temps, ensure_dir
from vehicle_cls.io.images import load_image
from vehicle_cls.progress import progress_bar
from vehicle_cls.results import Box

logger = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
CACHE_CONFIG = "cache.json"
CROPS_DIR = "crops"
FORMATS = {"jpg": "JPEG", "png": "PNG"}
_SETTINGS_KEYS = ("mode", "cropper", "policy", "image_format")


@dataclass
class CropStats:
    """What one ``CropCache.build`` run did."""

    total: int = 0  # samples in the dataset
    already_done: int = 0  # skipped: found in the manifest
    cropped: int = 0  # items cropped in this run
    fallback: int = 0  # of which: no vehicle found, whole image kept
    failed: int = 0  # items recorded with an error in this run
    errors: list[str] = field(default_factory=list)


def _key(path: str, box: Sequence[float] | None = None) -> str:
    """A manifest key: the absolute source path, plus the annotation box where a crop belongs to one annotated
    vehicle (see ``_keyed_samples``)."""
    key = os.path.abspath(path)
    return key if box is None else key + "#" + ",".join(f"{float(v):g}" for v in box)


def _sample_key(sample: Sample) -> str:
    """The manifest key of a sample as ``_keyed_samples`` gives it."""
    return _key(sample.path, sample.box)


def _keyed_samples(dataset: Sequence[Sample], mode: str) -> list[Sample]:
    """The samples with their box kept where it is part of the key: a ground-truth crop is its image and box;
    a detector crop is its image, unless the photo holds several annotated vehicles, each its own crop."""
    if mode == "gt":
        return list(dataset)
    boxed = Counter(s.path for s in dataset if s.box is not None)
    return [s if s.box is not None and boxed[s.path] > 1 else replace(s, box=None) for s in dataset]


def _work_units(todo: list[int], samples: list[Sample], mode: str, batch_size: int) -> Iterator[list[int]]:
    """What to decode and detect together: ground truth one sample at a time; detector crops of the policy in
    batches of ``batch_size`` images; the annotated vehicles of one photo together (one decode, one detection)."""
    if mode == "gt":
        yield from ([i] for i in todo)
        return
    by_photo: dict[str, list[int]] = {}
    single = []
    for i in todo:
        if samples[i].box is None:
            single.append(i)
        else:
            by_photo.setdefault(samples[i].path, []).append(i)
    for start in range(0, len(single), max(1, batch_size)):
        yield single[start : start + max(1, batch_size)]
    yield from by_photo.values()


@dataclass(frozen=True)
class _AnnotatedVehicles:
    """A crop policy for one photo with several annotated vehicles: per box, the detection that is it."""

    policy: Any
    boxes: tuple[Box, ...]

    def choose(self, det: Any) -> list[Any]:
        return [self.policy.match(det, box)[0] for box in self.boxes]


class CropCache:
    """A folder of cached crops with an append-only manifest; ``build`` fills it, ``dataset`` reads it."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._entries: dict[str, dict] | None = None

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    @property
    def config_path(self) -> Path:
        return self.root / CACHE_CONFIG

    def config(self) -> dict | None:
        """The settings stored in ``cache.json``, or None for a new cache."""
        if not self.config_path.is_file():
            return None
        try:
            config = json.loads(self.config_path.read_text("utf-8"))
        except (ValueError, OSError) as exc:
            raise DatasetError(
                f"{self.config_path}: not a crop-cache settings file ({one_line(exc)}); restore it, "
                "or crop into another folder"
            ) from None
        if not isinstance(config, dict):
            raise DatasetError(
                f"{self.config_path}: not a crop-cache settings file (a JSON {type(config).__name__}, "
                "not an object); restore it, or crop into another folder"
            )
        return config

    def entries(self) -> dict[str, dict]:
        """Manifest lines by key (source path, and annotation box where it is part of the key; the last line for
        a key wins)."""
        if self._entries is None:
            self._entries = {e["key"]: e for e in self._read_manifest()}
        return self._entries

    def _read_manifest(self) -> Iterator[dict]:
        if not self.manifest_path.is_file():
            return
        with open(self.manifest_path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                reason: str | None
                try:
                    entry = json.loads(line)
                except ValueError:
                    entry, reason = None, "not JSON (a torn write?)"
                else:
                    reason = _entry_problem(entry)
                if reason is not None:  # one bad line is that line: the rest of the manifest stays usable
                    logger.warning("%s; ignored", Problem(str(self.manifest_path), number, None, reason))
                    continue
                entry.setdefault("key", _key(entry["source"], entry.get("source_box")))
                yield entry

    def lookup(self, source: str, box: Sequence[float] | None = None) -> str | None:
        """Path of the (first) cached crop of ``source`` (of its annotation ``box`` where crops are per
        annotation), or None when it is absent or failed."""
        entries = self.entries()
        entry = entries.get(_key(source, box)) if box is not None else None
        if entry is None:  # a crop of the whole photo (detector mode, one annotation): whatever the box
            entry = entries.get(_key(source))
        if entry is None or entry.get("error") or not entry.get("file"):
            return None
        return str(self.root / entry["file"])

    def dataset(self, split: str | None = None) -> SampleList:
        """The cached crops as samples (one per crop; ``split`` filters by the source split)."""
        config = self.config()
        if config is None:
            raise DatasetError(f"{self.root}: not a crop cache (no {CACHE_CONFIG}); run `vehicle-cls crop` first")
        samples: list[Sample] = []
        problems: list[Problem] = []
        classes = config.get("classes") or []
        for entry in self.entries().values():
            if split is not None and entry.get("split") != split:
                continue
            if classes and not -1 <= entry["label"] < len(classes):
                problems.append(
                    Problem(
                        str(self.manifest_path),
                        None,
                        entry["source"],
                        f"label {entry['label']} is not one of the {len(classes)} classes",
                    )
                )
                continue
            if entry.get("error"):
                problems.append(Problem(str(self.manifest_path), None, entry["source"], str(entry["error"])))
                continue
            for crop in entry.get("crops") or ([entry] if entry.get("file") else []):
                samples.append(Sample(str(self.root / crop["file"]), int(entry["label"])))
        if problems:  # never silent: training on 5 of 30 images says so
            shown = "; ".join(f"{p.item}: {p.reason}" for p in problems[:3])
            logger.warning(
                "%s: %d of %d images have no crop (failed; `vehicle-cls crop --retry-errors` retries them): %s%s",
                self.root,
                len(problems),
                len(problems) + len({s.path for s in samples}),
                shown,
                "; ..." if len(problems) > 3 else "",
            )
        name = f"crops/{config.get('dataset', self.root.name)}" + (f"/{split}" if split else "")
        return SampleList(
            samples, config.get("classes", []), name, root=self.root, split=split, box_format="xyxy", problems=problems
        )

    def build(
        self,
        dataset: Sequence[Sample],
        cropper: Any = None,
        mode: Literal["detector", "gt"] = "detector",
        *,
        policy: Any = None,
        batch_size: int = 8,
        image_format: Literal["jpg", "png"] = "jpg",
        jpeg_quality: int = 95,
        retry_errors: bool = False,
        box_format: str | None = None,
        progress: bool = False,
    ) -> CropStats:
        """Crop every sample not yet in the manifest; return counts. Cropper exceptions propagate (resume later).

        ``mode="detector"`` runs ``cropper.detect`` on batches and crops ``policy.choose`` (default
        ``cropper.policy``), or, for a photo with several annotated vehicles, ``policy.match`` per annotation
        (its own vehicle's detection); ``mode="gt"`` crops each sample's own box (whole image, ``fallback``,
        when it has none).
        """
        if mode not in ("detector", "gt"):
            raise ValueError(f"mode must be 'detector' or 'gt', not {mode!r}")
        if image_format not in FORMATS:
            raise ValueError(f"image_format must be one of {sorted(FORMATS)}, not {image_format!r}")
        if mode == "detector":
            if cropper is None:
                raise ValueError("mode='detector' needs a cropper (Cropper.from_checkpoint / from_zoo)")
            policy = policy if policy is not None else cropper.policy
        box_format = box_format or getattr(dataset, "box_format", "devkit")
        ensure_dir(self.root, "crop cache folder")  # a file in the way is one line naming it, not [Errno 17]
        self._check_settings(dataset, cropper, policy, mode, image_format)
        (self.root / CROPS_DIR).mkdir(parents=True, exist_ok=True)
        for folder in (self.root, self.root / CROPS_DIR):  # temporaries of a killed earlier run
            clean_stale_temps(folder)
        _repair_tail(self.manifest_path)
        self._entries = None
        done = self.entries()
        stats = CropStats(total=len(dataset))
        samples = _keyed_samples(dataset, mode)
        todo: list[int] = []
        for i, sample in enumerate(samples):
            entry = done.get(_sample_key(sample))
            if entry is not None and not (
                (retry_errors or is_transient_record(entry.get("error"))) and entry.get("error")
            ):
                stats.already_done += 1
            else:
                todo.append(i)
        split = getattr(dataset, "split", None)
        writer = _ManifestWriter(self.manifest_path)
        bar = progress_bar(len(todo), progress, f"crop ({mode})", "img")
        try:
            for unit in _work_units(todo, samples, mode, batch_size):
                images: dict[str, np.ndarray] = {}  # by path: a photo's annotated vehicles share one decode
                for path in dict.fromkeys(samples[i].path for i in unit):
                    try:
                        images[path] = load_image(path)
                    except Exception as exc:
                        for j in unit:
                            if samples[j].path == path:
                                self._record(writer, stats, samples[j], split, mode, error=_failure(exc))
                decoded = [i for i in unit if samples[i].path in images]
                if decoded and mode == "detector":
                    self._crop_unit(
                        writer,
                        stats,
                        samples,
                        decoded,
                        images,
                        cropper,
                        policy,
                        box_format,
                        split,
                        image_format,
                        jpeg_quality,
                    )
                elif decoded:
                    (i,) = decoded  # a ground-truth unit is one sample
                    self._crop_gt(
                        writer,
                        stats,
                        samples[i],
                        images[samples[i].path],
                        split,
                        box_format,
                        image_format,
                        jpeg_quality,
                    )
                bar.update(len(unit))  # failed decodes included: they are done too
        except (_TransientFault, OSError) as exc:
            fault = exc.error if isinstance(exc, _TransientFault) else transient_error(exc)
            if fault is None:
                raise
            left = len(todo) - stats.cropped - stats.failed
            raise DatasetError(
                f"{self.root}: crop stopped by a fault of the system, not of the images ({one_line(fault)}); "
                f"{stats.cropped} cropped and {stats.failed} failed in this run, {left} of {len(todo)} still to do "
                "(not recorded as failed): fix the cause and rerun to continue"
            ) from exc
        finally:
            bar.close()
            writer.close()
            self._entries = None
        logger.info(
            "%s: %d cropped (%d fallback), %d failed, %d already done",
            self.root,
            stats.cropped,
            stats.fallback,
            stats.failed,
            stats.already_done,
        )
        return stats

    def _check_settings(
        self, dataset: Sequence[Sample], cropper: Any, policy: Any, mode: str, image_format: str
    ) -> None:
        settings = {
            "mode": mode,
            "cropper": _jsonable(cropper.to_config()) if mode == "detector" and hasattr(cropper, "to_config") else None,
            "policy": _jsonable(policy.to_dict()) if mode == "detector" and hasattr(policy, "to_dict") else None,
            "image_format": image_format,
        }
        classes = list(getattr(dataset, "classes", []))
        existing = self.config()
        if existing is not None:
            changed = [k for k in _SETTINGS_KEYS if existing.get(k) != settings[k]]
            if changed:
                raise DatasetError(
                    f"{self.root}: crops were made with different settings ({', '.join(changed)}); "
                    "use another output folder to crop with the new settings"
                )
            if classes and existing.get("classes") and existing["classes"] != classes:
                raise DatasetError(f"{self.root}: crops were made for a dataset with other classes")
            return
        self.root.mkdir(parents=True, exist_ok=True)
        config = {"version": 1, **settings, "classes": classes, "dataset": getattr(dataset, "name", "dataset")}
        atomic_write_bytes(self.config_path, (json.dumps(config, indent=2) + "\n").encode("utf-8"))

    def _crop_unit(
        self, writer, stats, samples, unit, images, cropper, policy, box_format, split, image_format, quality
    ) -> None:
        """Detect and choose for one work unit: a batch of photos under the policy, or one photo's annotated
        vehicles matched to its detections. A detector exception propagates (the run stops; a rerun resumes)."""
        from vehicle_cls.cropper.choose import Chosen, detect_and_choose  # imports torch: only when used

        if samples[unit[0]].box is None:
            chosen = detect_and_choose(cropper, [images[samples[i].path] for i in unit], policy, isolate=False)
            for i, c in zip(unit, chosen):
                self._crop_detected(
                    writer, stats, samples[i], images[samples[i].path], c, policy, split, image_format, quality
                )
            return
        boxes = tuple(continuous_box(samples[i].box, box_format) for i in unit)
        image = images[samples[unit[0]].path]
        (photo,) = detect_and_choose(cropper, [image], _AnnotatedVehicles(policy, boxes), isolate=False)
        for k, i in enumerate(unit):
            c = photo if photo.error else Chosen([photo.choices[k]])
            self._crop_detected(writer, stats, samples[i], image, c, policy, split, image_format, quality)

    def _crop_detected(self, writer, stats, sample, image, chosen, policy, split, image_format, quality) -> None:
        if chosen.error:
            self._record(writer, stats, sample, split, "detector", error=chosen.error)
            return
        try:
            choices = chosen.choices
            if not choices:
                self._record(
                    writer, stats, sample, split, "detector", error="no vehicle found (policy has no fallback)"
                )
                return
            crops = []
            for k, choice in enumerate(choices):
                pixels = cut(image, choice, policy.mask_fill)
                file = self._save(sample, k, pixels, image_format, quality)
                d = choice.detection
                crops.append(
                    {
                        "file": file,
                        "box": None if choice.box is None else [round(float(v), 2) for v in choice.box],
                        "detector_class": None if d is None else d.class_name,
                        "detector_class_id": None if d is None else int(d.class_id),
                        "detector_score": None if d is None else round(float(d.score), 6),
                        "fallback": bool(choice.fallback),
                    }
                )
        except Exception as exc:
            self._record(writer, stats, sample, split, "detector", error=_failure(exc))
            return
        self._record(writer, stats, sample, split, "detector", crops=crops)

    def _crop_gt(self, writer, stats, sample, image, split, box_format, image_format, quality) -> None:
        try:
            if sample.box is None:
                crop, box, fallback = image, None, True
            else:
                x1, y1, x2, y2 = pixel_box(sample.box, image.shape[:2], box_format)
                crop, fallback = image[y1:y2, x1:x2], False
                box = [round(v, 2) for v in continuous_box(sample.box, box_format)]
            file = self._save(sample, 0, crop, image_format, quality)
        except Exception as exc:
            self._record(writer, stats, sample, split, "gt", error=_failure(exc))
            return
        crops = [
            {
                "file": file,
                "box": box,
                "detector_class": None,
                "detector_class_id": None,
                "detector_score": None,
                "fallback": fallback,
            }
        ]
        self._record(writer, stats, sample, split, "gt", crops=crops)

    def _record(self, writer, stats, sample, split, mode, *, crops=None, error=None) -> None:
        first = crops[0] if crops else {}
        entry = {
            "source": sample.path,
            "split": split,
            "label": int(sample.label),
            "file": first.get("file"),
            "box": first.get("box"),
            "detector_class": first.get("detector_class"),
            "detector_class_id": first.get("detector_class_id"),
            "detector_score": first.get("detector_score"),
            "fallback": bool(first.get("fallback", False)),
            "error": error,
            "mode": mode,
        }
        if sample.box is not None:  # part of the key: one crop per annotated vehicle
            entry["source_box"] = [float(v) for v in sample.box]
        if crops and len(crops) > 1:
            entry["crops"] = crops
        writer.append(entry)
        if error is not None:
            stats.failed += 1
            stats.errors.append(f"{sample.path}: {error}")
            logger.warning("crop failed for %s: %s", sample.path, error)
        else:
            stats.cropped += 1
            stats.fallback += entry["fallback"]

    def _save(self, sample: Sample, k: int, pixels: np.ndarray, image_format: str, quality: int) -> str:
        from PIL import Image

        digest = hashlib.sha1(_sample_key(sample).encode("utf-8")).hexdigest()[:12]
        stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(sample.path).stem)[:40]
        rel = f"{CROPS_DIR}/{stem}-{digest}{f'-{k}' if k else ''}.{image_format}"
        buffer = io.BytesIO()
        options = {"quality": quality} if image_format == "jpg" else {}
        Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, FORMATS[image_format], **options)
        atomic_write_bytes(self.root / rel, buffer.getvalue())
        return rel


class _ManifestWriter:
    """Appends JSON lines, flushing each one and fsyncing now and then; one writer per cache at a time."""

    def __init__(self, path: Path, fsync_every: int = 32):
        self.file = open(path, "a", encoding="utf-8")
        self.fsync_every = fsync_every
        self.count = 0
        try:
            import fcntl

            fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - no advisory locks on this platform
            pass
        except OSError:
            self.file.close()
            raise DatasetError(f"{path}: another process is writing this crop cache") from None

    def append(self, entry: dict) -> None:
        self.file.write(json.dumps(entry) + "\n")
        self.file.flush()
        self.count += 1
        if self.count % self.fsync_every == 0:
            os.fsync(self.file.fileno())

    def close(self) -> None:
        if not self.file.closed:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()


def _repair_tail(path: Path) -> None:
    """Cut a torn last line (a crash mid-write) so that new lines start on a line of their own."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        cut = data.rfind(b"\n") + 1
        logger.warning("%s: dropping a torn last line (%d bytes)", path, len(data) - cut)
        f.truncate(cut)


def _entry_problem(entry: Any) -> str | None:
    """Why a parsed manifest line is not an entry (not an object, no source, a label that is no class id), or None."""
    if not isinstance(entry, dict):
        return f"a JSON {type(entry).__name__}, not an object"
    if not isinstance(entry.get("source"), str) or not entry["source"]:
        return "no source path"
    label = entry.get("label")
    if isinstance(label, bool) or not isinstance(label, int):
        return f"label {label!r} is not a class index"
    crops = entry.get("crops") or ([entry] if entry.get("file") is not None else [])
    if not isinstance(crops, list) or any(not isinstance(c, dict) or not isinstance(c.get("file"), str) for c in crops):
        return "a crop file that is not a path"
    return None


# a fault of the machine, not of the image: the run stops and a rerun retries (never "failed" for good)
TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "ENOSPC",
        "EDQUOT",
        "EIO",
        "EROFS",
        "ENOMEM",
        "EAGAIN",
        "ETIMEDOUT",
        "ESTALE",
        "ENFILE",
        "EMFILE",
        "EINTR",
        "ENOLCK",
        "ECONNRESET",
        "ENETDOWN",
        "ENETUNREACH",
        "EHOSTUNREACH",
    )
    if hasattr(errno, name)
)


class _TransientFault(Exception):
    """Carries a transient ``OSError`` out of the per-item handlers to ``build``, which stops the run."""

    def __init__(self, error: BaseException):
        super().__init__(one_line(error))
        self.error = error


def transient_error(exc: BaseException | None) -> OSError | None:
    """The ``OSError`` with a transient errno (disk full, I/O error, ...) in ``exc``'s chain, or None."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS:
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def is_transient_record(error: Any) -> bool:
    """Whether a manifest's recorded error is a transient fault (written by older versions): retried."""
    match = re.search(r"\[Errno (\d+)\]", error) if isinstance(error, str) else None
    return match is not None and int(match[1]) in TRANSIENT_ERRNOS


def _failure(exc: BaseException) -> str:
    """The one-line reason to record for a failed item; a transient fault is raised instead (not recorded)."""
    transient = transient_error(exc)
    if transient is not None:
        raise _TransientFault(transient) from exc
    return _one_line(exc)


def _one_line(exc: BaseException) -> str:
    text = one_line(exc)
    return text if type(exc).__name__ in ("ImageError",) else f"{type(exc).__name__}: {text}"


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
