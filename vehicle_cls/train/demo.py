"""The demo: train a vehicle-type classifier on the shipped photos, on the CPU, in a few minutes.

No downloads, no GPU: the 660 shipped photos (CC BY 4.0, see assets/demo_vehicle_types/ATTRIBUTION.md)
are split into a held-out test set (30 per class, seeded) that training never sees and a training
set from which a validation split (for choosing the best epoch) is carved. A ResNet-18 is trained
from scratch at 56 px with augmentation, then evaluated on the test images.
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from vehicle_cls.train.config import TrainConfig

logger = logging.getLogger(__name__)

# configs/demo_vehicle_types.yaml is this recipe (with data.train as a path); a test keeps them equal.
DEMO_RECIPE: dict[str, Any] = {
    "data": {
        "train": "vehicle_cls/assets/demo_vehicle_types",
        "layout": "folders",
        "test_fraction": 0.2728,  # 30 of 110 per class held out for the final test
        "val_fraction": 0.1,  # 8 per class for model selection
        "split_seed": 0,
        "num_workers": 0,
    },
    "model": {"arch": "resnet18", "weights": None, "dropout": 0.1, "input_size": 56, "resize": "squash"},
    "optim": {"name": "adamw", "lr": 0.003, "weight_decay": 0.05, "warmup_epochs": 1,
              "label_smoothing": 0.1, "schedule": "cosine"},
    # light augmentation: with stronger settings (scale 0.5-1, rotation 10, jitter 0.2) a 10-epoch run was
    # still underfitting (train top-1 72 %, val 77 %)
    "augment": {"enabled": True, "scale": [0.6, 1.0], "hflip": 0.5, "rotation": 5, "color_jitter": 0.1},
    # fp32: on the 2-core AMD EPYC (AVX512-BF16) it was measured here, bf16 autocast was not faster for
    # ResNet-18 at this size (CPUs with AMX are another story: try run.precision=bf16 there)
    "run": {"epochs": 20, "batch_size": 32, "eval_batch_size": 128, "precision": "fp32", "channels_last": True,
            "seed": 0, "threads": 2, "tensorboard": False},
}

# The seed notebook's recipe on the same data and budget: squashed input, no augmentation.
BASELINE_OVERRIDES: dict[str, dict[str, Any]] = {
    "augment": {"enabled": False},
    "optim": {"label_smoothing": 0.0},
}


def demo_data_dir() -> Path:
    """The shipped demo photos (inside the installed package)."""
    return Path(str(resources.files("vehicle_cls") / "assets" / "demo_vehicle_types"))


def demo_config(out_dir: str | Path, *, baseline: bool = False, epochs: int | None = None,
                threads: int | None = 2, progress: bool = True) -> TrainConfig:
    """The demo recipe pointing at the shipped photos and ``out_dir``."""
    raw = copy.deepcopy(DEMO_RECIPE)
    raw["data"]["train"] = str(demo_data_dir())
    if baseline:
        for section, values in BASELINE_OVERRIDES.items():
            raw[section].update(values)
    raw["run"].update(out_dir=str(out_dir), progress=progress, threads=threads)
    if epochs is not None:
        raw["run"]["epochs"] = epochs
    return TrainConfig.from_dict(raw, source="demo recipe").validate("demo recipe")


@dataclass
class DemoResult:
    """Where everything went and the test accuracy."""

    run_dir: Path
    bundle_dir: Path
    report_dir: Path
    predictions_dir: Path
    top1: float
    per_class: dict[str, float | None]
    test_images: int
    seconds: float
    result: Any  # EvalResult


def run_demo(out_dir: str | Path = "demo_output", *, baseline: bool = False, epochs: int | None = None,
             threads: int | None = 2, progress: bool = True, examples: int = 6) -> DemoResult:
    """Train on the shipped photos, evaluate on the held-out test split, write report + annotated examples."""
    from vehicle_cls.classifier import Classifier
    from vehicle_cls.train.evaluate import evaluate
    from vehicle_cls.train.report import write_report
    from vehicle_cls.train.trainer import train

    t0 = time.perf_counter()
    out = Path(out_dir)
    cfg = demo_config(out / "run", baseline=baseline, epochs=epochs, threads=threads, progress=progress)
    result = train(cfg)
    if result.best_dir is None:
        raise RuntimeError(f"{result.run_dir}: training produced no best checkpoint")
    clf = Classifier.load(result.best_dir)
    from vehicle_cls.train.splits import DataSplits

    splits = DataSplits.load(result.run_dir / "splits.json")
    assert splits.test is not None
    ev = evaluate(clf, splits.test, dataset_classes=splits.classes, batch_size=128, name="demo test split",
                  info={"model": str(result.best_dir), "dataset": "shipped demo photos", "split": "test"})
    report_dir = out / "report"
    write_report(ev, report_dir, history=result.history)
    pred_dir = out / "predictions"
    _annotated_examples(clf, splits.test, pred_dir, examples)
    m = ev.metrics
    return DemoResult(result.run_dir, result.best_dir, report_dir, pred_dir, m.top1,
                      dict(zip(m.classes, m.per_class_accuracy)), m.num_samples, time.perf_counter() - t0, ev)


def _annotated_examples(clf: Any, test: Any, out: Path, n: int) -> list[Path]:
    """One test image per class (up to ``n``), predicted through the bundle and drawn, 3x enlarged."""
    import numpy as np
    from PIL import Image

    from vehicle_cls.io.images import load_image

    out.mkdir(parents=True, exist_ok=True)
    picked, seen = [], set()
    for s in test:
        if s.label not in seen:
            seen.add(s.label)
            picked.append(s.path)
        if len(picked) >= n:
            break
    preds = clf.predict(picked, topk=3)
    paths = []
    for src, pred in zip(picked, preds):
        img = Image.fromarray(load_image(src))
        big = np.asarray(img.resize((img.width * 3, img.height * 3), Image.Resampling.BICUBIC))
        path = out / (Path(src).stem + ".png")
        pred.plot(image=big).save(path)
        paths.append(path)
    return paths
