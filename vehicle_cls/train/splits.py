"""The train / validation / test samples of a run, built once from the recipe and saved with the run.

Validation is carved (stratified, seeded) from the training data and is the only data used for
model selection; test comes from a separate split (``data.test``) or is carved out first
(``data.test_fraction``) and is never seen by the loop.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vehicle_cls.data import Sample, SampleList, open_dataset, relabel, split_by_photo
from vehicle_cls.fileio import atomic_write_text
from vehicle_cls.train.config import ConfigError, DataConfig

logger = logging.getLogger(__name__)


@dataclass
class DataSplits:
    """Samples of each split (labels index ``classes``) plus the box format of the source."""

    classes: list[str]
    train: SampleList
    val: SampleList
    test: SampleList | None
    box_format: str = "devkit"

    def to_dict(self) -> dict[str, Any]:
        def rows(samples: SampleList | None) -> list | None:
            if samples is None:
                return None
            return [[s.path, s.label, None if s.box is None else list(s.box)] for s in samples]

        return {
            "classes": self.classes,
            "box_format": self.box_format,
            "train": rows(self.train),
            "val": rows(self.val),
            "test": rows(self.test),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataSplits:
        classes, fmt = list(d["classes"]), d.get("box_format", "devkit")

        def samples(name: str) -> SampleList | None:
            if d.get(name) is None:
                return None
            items = [Sample(p, int(y), None if b is None else tuple(b)) for p, y, b in d[name]]
            return SampleList(items, classes, name, split=name, box_format=fmt)

        return cls(classes, samples("train"), samples("val"), samples("test"), fmt)  # type: ignore[arg-type]

    def save(self, path: str | os.PathLike) -> None:
        """Write JSON atomically (the run's record of exactly which images were used where)."""
        atomic_write_text(path, json.dumps(self.to_dict()) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> DataSplits:
        """Read what ``save`` wrote; a damaged file is a one-line ``ValueError`` naming it."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"{path}: not a readable splits file ({type(exc).__name__}: {exc}); "
                "delete it to split the dataset again"
            ) from None

    def summary(self) -> str:
        test = "none" if self.test is None else str(len(self.test))
        return f"{len(self.classes)} classes; train {len(self.train)}, val {len(self.val)}, test {test}"


def _open(cfg: DataConfig, where: str, split: str) -> SampleList:
    """``open_dataset`` with the recipe's layout and its reader arguments (``data.layout_options``)."""
    try:
        return open_dataset(where, cfg.layout, split=split, **cfg.layout_options)
    except TypeError as exc:
        if not cfg.layout_options:
            raise
        # the reader refused an argument: a recipe problem, named as one
        raise ConfigError(f"data.layout_options {cfg.layout_options}: not arguments of the layout ({exc})") from None


def prepare_splits(cfg: DataConfig) -> DataSplits:
    """Open the datasets named by the recipe and split them (deterministic for a given seed)."""
    full = _open(cfg, cfg.train, "train")
    check_readable(full, cfg.crop)
    classes = list(full.classes)
    box_format = getattr(full, "box_format", "devkit")
    test: SampleList | None = None
    if cfg.test_fraction > 0:
        rest_idx, test_idx = split_by_photo(full, cfg.test_fraction, seed=cfg.split_seed + 1_000_003)
        test = full.subset(test_idx, f"{full.name}:test(carved)", split="test")
        full = full.subset(rest_idx, f"{full.name}:train", split="train")
    elif cfg.test:
        test_ds = _open(cfg, cfg.test, "test")
        test = relabel(test_ds, test_ds.classes, classes, what="test set", target="the training set", split="test")
    train_idx, val_idx = split_by_photo(full, cfg.val_fraction, seed=cfg.split_seed)
    train = full.subset(train_idx, f"{full.name}:train", split="train")
    val = full.subset(val_idx, f"{full.name}:val", split="val")
    if cfg.max_per_class:
        train = _cap_per_class(train, cfg.max_per_class, cfg.split_seed)
    splits = DataSplits(classes, train, val, test, box_format)
    logger.info("data: %s", splits.summary())
    return splits


def check_readable(samples: SampleList, crop: str) -> None:
    """No silent success: say how many training images a crop cache lacks, and stop before training when
    not one image can be read (an all-garbage dataset must not yield a "best" bundle)."""
    from vehicle_cls.data import CropCache, DatasetError
    from vehicle_cls.data.torch_dataset import SampleDataset

    source: Any = crop if crop in ("none", "gt") else CropCache(crop)  # as train.loaders.crop_arg
    if not isinstance(source, str):
        missing = [s.path for s in samples if source.lookup(s.path, s.box) is None]
        if missing:
            logger.warning(
                "%s: %d of %d training images have no crop in %s (failed or never cropped; rerun "
                "`vehicle-cls crop`), e.g. %s",
                samples.name,
                len(missing),
                len(samples),
                crop,
                ", ".join(missing[:3]),
            )
    dataset = SampleDataset(samples, crop=source, input_format="numpy")
    first = None
    for i in range(len(dataset)):
        try:
            dataset.load(i)
            return
        except Exception as exc:  # noqa: BLE001 - any reason an image cannot be read
            first = first or f"{samples[i].path}: {exc}"
    raise DatasetError(
        f"{samples.name}: none of its {len(samples)} images can be read"
        + (f" (first: {first})" if first else "")
        + "; nothing to train on"
    )


def _cap_per_class(ds: SampleList, cap: int, seed: int) -> SampleList:
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, s in enumerate(ds):
        by_class[s.label].append(i)
    keep = sorted(i for idx in by_class.values() for i in rng.permutation(idx)[:cap].tolist())
    return ds.subset(keep, f"{ds.name}(max {cap}/class)")
