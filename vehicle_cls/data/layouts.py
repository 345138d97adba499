"""``open_dataset``: one entry point for every layout, local or ``s3://``, with layout detection."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from vehicle_cls.data.sample import DatasetError, Problem, SampleList

logger = logging.getLogger(__name__)

LAYOUTS = ("auto", "stanford", "kaggle", "folders", "csv", "seed_csv", "crops", "coco")
_DEVKIT_SUBDIRS = ("", "devkit", "car_devkit/devkit", "car_devkit")


def _devkit_dir(root: Path) -> Path | None:
    for sub in _DEVKIT_SUBDIRS:
        d = root / sub if sub else root
        if any((d / name).is_file() for name in ("cars_meta.mat", "cars_train_annos.mat", "cars_annos.mat")):
            return d
    return None


def detect_layout(path: str | os.PathLike) -> str:
    """Guess a local dataset's layout: coco (a .json file), crops, stanford, seed_csv, csv, kaggle or folders."""
    from vehicle_cls.data.crop_cache import CACHE_CONFIG, MANIFEST
    from vehicle_cls.data.csv_images import SEED_CSV_NAME

    path = Path(path)
    if path.is_file():
        if path.suffix.lower() == ".json":
            return "coco"
        if path.suffix.lower() != ".csv":
            raise DatasetError(f"{path}: a dataset file must be a .csv or a COCO .json (or give a folder)")
        return "seed_csv" if path.name == SEED_CSV_NAME else "csv"
    if not path.is_dir():
        raise DatasetError(f"{path}: no such dataset file or folder")
    if (path / MANIFEST).is_file() and (path / CACHE_CONFIG).is_file():
        return "crops"
    if _devkit_dir(path) is not None:
        return "stanford"
    if (path / SEED_CSV_NAME).is_file():
        return "seed_csv"
    if any(
        (c / s).is_dir() for c in (path, path / "car_data", path / "car_data" / "car_data") for s in ("train", "test")
    ):
        return "kaggle"
    return "folders"


class MissingSplitError(DatasetError):
    """The dataset has no such split (class folders without split subfolders, a CSV without a split column)."""


def open_dataset(
    uri_or_path: str | os.PathLike,
    layout: str = "auto",
    split: str | None = "train",
    *,
    cache_dir: str | os.PathLike | None = None,
    endpoint_url: str | None = None,
    on_error: str = "skip",
    require_split: bool = False,
    **kwargs: Any,
) -> SampleList:
    """Open a dataset folder, CSV file or ``s3://bucket/prefix`` (mirrored into the cache first).

    ``layout``: ``auto`` (detected), ``stanford`` (devkit .mat), ``kaggle`` (car_data/{train,test}/<class>),
    ``folders`` (root/<class>/), ``csv`` (kwargs give the column mapping), ``seed_csv``
    (car_dataset_labels.csv + car_ims/), ``crops`` (a ``vehicle-cls crop`` output folder) or ``coco``
    (a COCO annotation .json; one file is one split, like class folders without split folders).
    Extra keyword arguments go to the reader. ``require_split``: a dataset that cannot select ``split``
    (whose every image would be labelled with it) is a ``MissingSplitError`` instead.
    """
    dataset = _open(uri_or_path, layout, split, cache_dir, endpoint_url, on_error, require_split, kwargs)
    if require_split and split and dataset.split != split:
        raise MissingSplitError(
            f"{uri_or_path}: has no {split!r} split (no split folders or split column); "
            "give the split's own folder or file, or no split to use every image"
        )
    return dataset


def _open(
    uri_or_path: str | os.PathLike,
    layout: str,
    split: str | None,
    cache_dir: str | os.PathLike | None,
    endpoint_url: str | None,
    on_error: str,
    require_split: bool,
    kwargs: dict[str, Any],
) -> SampleList:
    from vehicle_cls.data.s3 import is_s3_uri, sync_s3_prefix

    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    if is_s3_uri(uri_or_path):
        local, stats = sync_s3_prefix(str(uri_or_path), cache_dir, endpoint_url=endpoint_url)
        logger.info(
            "%s: %d files cached, %d downloaded, %d resumed",
            uri_or_path,
            stats.skipped,
            stats.downloaded,
            stats.resumed,
        )
        dataset = open_dataset(local, layout, split, on_error=on_error, require_split=require_split, **kwargs)
        dataset = confine_to(dataset, local, str(uri_or_path))
        dataset.source_uri = str(uri_or_path)  # type: ignore[attr-defined]
        return dataset
    path = Path(uri_or_path)
    if layout == "auto":
        layout = detect_layout(path)
        logger.debug("%s: detected layout %r", path, layout)
    if layout == "stanford":
        from vehicle_cls.data.stanford import StanfordCars

        devkit = _devkit_dir(path) or path
        return StanfordCars(devkit, kwargs.pop("images_dir", None), split or "train", on_error, **kwargs)  # type: ignore[arg-type]
    if layout == "kaggle":
        from vehicle_cls.data.folders import KaggleCars

        return KaggleCars(path, split or "train", on_error, **kwargs)  # type: ignore[arg-type]
    if layout == "folders":
        from vehicle_cls.data.folders import ClassFolders

        if split and (path / split).is_dir():
            path = path / split
        elif require_split and split:
            split = None  # every image, not labelled as a split it is not (refused above)
        return ClassFolders(path, on_error=on_error, split=split, **kwargs)  # type: ignore[arg-type]
    if layout in ("csv", "seed_csv"):
        from vehicle_cls.data.csv_images import SEED_CSV_NAME, CsvImages, seed_csv_dataset

        if layout == "seed_csv":
            csv_path = path / SEED_CSV_NAME if path.is_dir() else path
            return seed_csv_dataset(csv_path, split, on_error=on_error, **kwargs)
        csv_path = _single_csv(path, kwargs.pop("csv_name", None)) if path.is_dir() else path
        if "split_column" in kwargs:
            kwargs.setdefault("split", split)
        return CsvImages(csv_path, on_error=on_error, **kwargs)  # type: ignore[arg-type]
    if layout == "coco":
        from vehicle_cls.data.coco import CocoDataset

        if path.is_dir():
            raise DatasetError(f"{path}: the coco layout reads a COCO annotation .json file")
        # one file is one split: tagged with the split asked for, unless that split must be selectable
        return CocoDataset(path, on_error=on_error, split=None if require_split else split, **kwargs)  # type: ignore[arg-type]
    from vehicle_cls.data.crop_cache import CropCache

    return CropCache(path).dataset(split if require_split else None)


def confine_to(dataset: SampleList, root: str | os.PathLike, uri: str) -> SampleList:
    """``dataset`` without the samples whose file lies outside ``root`` (the mirror of a remote dataset):
    a remote CSV or manifest naming ``/abs/path`` or ``../../x`` must not make training read local files.
    Each refused row is a problem, logged by name."""
    real_root = os.path.realpath(root)
    kept, refused = [], []
    for sample in dataset:
        real = os.path.realpath(sample.path)
        if real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep):
            kept.append(sample)
        else:
            refused.append(Problem(uri, None, sample.path, f"outside the mirrored dataset {root}; refused"))
    if not refused:
        return dataset
    shown = "; ".join(str(p) for p in refused[:3]) + (f"; ... ({len(refused) - 3} more)" if len(refused) > 3 else "")
    logger.warning("%s: refused %d row(s) naming files outside the mirrored prefix: %s", uri, len(refused), shown)
    confined = SampleList(
        kept,
        dataset.classes,
        dataset.name,
        root=dataset.root,
        split=dataset.split,
        box_format=dataset.box_format,
        problems=[*dataset.problems, *refused],
    )
    for name in ("annotation_file",):
        if hasattr(dataset, name):
            setattr(confined, name, getattr(dataset, name))
    return confined


def _single_csv(folder: Path, name: str | None) -> Path:
    """The CSV file of a folder: ``name`` when given, else the only ``*.csv`` in it."""
    if name is not None:
        return folder / name
    found = sorted(folder.glob("*.csv"))
    if len(found) != 1:
        raise DatasetError(
            f"{folder}: {'no' if not found else len(found)} CSV files; pass csv_name=... or the CSV path itself"
        )
    return found[0]
