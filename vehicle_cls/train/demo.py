"""The demo: train a vehicle-type classifier on the shipped photos, on the CPU, in a few minutes.

No downloads, no GPU: the 4,800 shipped photos (CC BY 4.0, see assets/demo_vehicle_types/ATTRIBUTION.md)
are split into a held-out test set (20 %, seeded) that training never sees and a training set from
which a validation split (for choosing the recipe and the best epoch) is carved. A ResNet-18 is
trained from scratch at 96 px (bf16 autocast where the CPU has native bf16), then evaluated on the
test images.
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

# recipes/demo_vehicle_types.yaml is this recipe (data.train as package:...); a test keeps them equal.
# The reference recipe of issue 19, kept on its validation figure (95.8 % val top-1, seed 0, best epoch 6; no
# other setting tried: the shared machine ran at load 6-13). Change it only on the validation split's figures
# (384 photos carved from the training 80 %: val_top1 in history.json, bench_train.py accuracy --val-only),
# never on the test photos.
DEMO_RECIPE: dict[str, Any] = {
    "data": {
        "train": "vehicle_cls/assets/demo_vehicle_types",
        "layout": "folders",
        "test_fraction": 0.2,  # 160 of 800 per class held out for the final test, never trained on
        "val_fraction": 0.1,  # 64 per class of the rest, for choosing the recipe and the best epoch
        "split_seed": 0,
        "num_workers": 0,
    },
    "model": {"arch": "resnet18", "weights": None, "dropout": 0.0, "input_size": 96, "resize": "squash"},
    # SGD one-cycle: linear warm-up over a quarter of the run, cosine down to 0
    "optim": {
        "name": "sgd",
        "lr": 0.1,
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 0.0005,
        "warmup_epochs": 1.75,
        "warmup_start_factor": 0.04,
        "schedule": "cosine",
        "label_smoothing": 0.1,
    },
    # flips only: the whole photo squashed to 96 px (scale and ratio 1), mirrored half the time
    "augment": {
        "enabled": True,
        "scale": [1.0, 1.0],
        "ratio": [1.0, 1.0],
        "hflip": 0.5,
        "rotation": 0,
        "color_jitter": 0.0,
    },
    # precision auto: bf16 autocast on this CPU (AVX512-BF16), fp32 on CPUs without native bf16
    "run": {
        "epochs": 7,
        "batch_size": 64,
        "eval_batch_size": 256,
        "precision": "auto",
        "channels_last": True,
        "seed": 0,
        "threads": 2,
        "tensorboard": False,
    },
}

# The seed notebook's recipe on the same split and budget: squashed input, no augmentation, no label smoothing.
BASELINE_OVERRIDES: dict[str, dict[str, Any]] = {  # the seed notebook's plain loop: SGD, constant lr, no extras
    "augment": {"enabled": False},
    "optim": {
        "label_smoothing": 0.0,
        "schedule": "constant",
        "nesterov": False,
        "weight_decay": 0.0,
        "warmup_epochs": 0.0,
    },
}

#: Test top-1 on the demo split, recorded so that `vehicle-cls demo` can show the comparison without
#: retraining the baseline. Reproduce with COMPARE_COMMAND (seeds 0-2, 95 % t-interval over seeds).
COMPARE_COMMAND = "python benchmarks/bench_train.py accuracy --seeds 0 1 2"
RECORDED: dict[str, dict[str, Any]] = {
    "recipe": {"top1": 0.936458, "interval": 0.009331, "seeds": [0, 1, 2]},
    "baseline": {"top1": 0.870486, "interval": 0.018176, "seeds": [0, 1, 2]},
    # recipe - baseline per seed (paired), mean and 95 % t-interval
    "difference": {"top1": 0.065972, "interval": 0.018721, "seeds": [0, 1, 2]},
}
#: where RECORDED was measured (CPU, load, torch)
RECORDED_ON = "2-core Intel Xeon (AMX + AVX512-BF16), bf16 autocast, torch 2.14.1, 1 thread, under load 3-9"


def recorded_comparison() -> list[str]:
    """Lines describing the recorded recipe and baseline figures (or that they were not recorded)."""
    lines = []
    for name, what in (
        ("recipe", "demo recipe"),
        ("baseline", "seed-style baseline"),
        ("difference", "recipe - baseline"),
    ):
        r = RECORDED[name]
        if r["top1"] is None:
            lines.append(f"  {what:<20} not recorded yet")
        else:
            sign = "+" if name == "difference" else ""
            interval = "(no interval: one seed)" if r["interval"] is None else f"+- {r['interval']:.1%}"
            note = f", {r['note']}" if r.get("note") else ""
            lines.append(
                f"  {what:<20} {r['top1']:{sign}.1%} {interval} (seeds {', '.join(map(str, r['seeds']))}{note})"
            )
    if RECORDED_ON:
        lines.append(f"  measured on {RECORDED_ON}")
    lines.append(f"  (same split; reproduce with: {COMPARE_COMMAND})")
    return lines


def demo_data_dir() -> Path:
    """The shipped demo photos (inside the installed package)."""
    return Path(str(resources.files("vehicle_cls") / "assets" / "demo_vehicle_types"))


def demo_config(
    out_dir: str | Path,
    *,
    baseline: bool = False,
    epochs: int | None = None,
    threads: int | None = 2,
    progress: bool = True,
    seed: int | None = None,
    precision: str | None = None,
) -> TrainConfig:
    """The demo recipe (or the baseline) pointing at the shipped photos and ``out_dir``; ``seed`` changes
    the training seed only (the split stays the same)."""
    raw = copy.deepcopy(DEMO_RECIPE)
    raw["data"]["train"] = str(demo_data_dir())
    if baseline:
        for section, values in BASELINE_OVERRIDES.items():
            raw[section].update(values)
    raw["run"].update(out_dir=str(out_dir), progress=progress, threads=threads)
    if epochs is not None:
        raw["run"]["epochs"] = epochs
    if seed is not None:
        raw["run"]["seed"] = seed
    if precision is not None:
        raw["run"]["precision"] = precision
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
    train_seconds: float  # wall seconds of the training epochs (validation included)
    train_cpu_seconds: float  # process CPU seconds of the same (all threads): about train_seconds x threads when idle
    result: Any  # EvalResult


def run_demo(
    out_dir: str | Path = "demo_output",
    *,
    baseline: bool = False,
    epochs: int | None = None,
    threads: int | None = 2,
    progress: bool = True,
    examples: int = 6,
) -> DemoResult:
    """Train on the shipped photos, evaluate on the held-out test split, write report + annotated examples."""
    from vehicle_cls.classifier import Classifier
    from vehicle_cls.train.evaluate import evaluate
    from vehicle_cls.train.report import write_report
    from vehicle_cls.train.trainer import train

    t0 = time.perf_counter()
    out = Path(out_dir)
    cfg = demo_config(out / "run", baseline=baseline, epochs=epochs, threads=threads, progress=progress)
    c0 = time.process_time()
    result = train(cfg)
    train_cpu = time.process_time() - c0
    if result.best_dir is None:
        raise RuntimeError(f"{result.run_dir}: training produced no best checkpoint")
    clf = Classifier.load(result.best_dir)
    from vehicle_cls.train.splits import DataSplits

    splits = DataSplits.load(result.run_dir / "splits.json")
    assert splits.test is not None
    ev = evaluate(
        clf,
        splits.test,
        dataset_classes=splits.classes,
        batch_size=128,
        name="demo test split",
        info={"model": str(result.best_dir), "dataset": "shipped demo photos", "split": "test"},
    )
    report_dir = out / "report"
    write_report(ev, report_dir, history=result.history)
    pred_dir = out / "predictions"
    _annotated_examples(clf, splits.test, pred_dir, examples)
    m = ev.metrics
    train_s = sum(row["seconds"] for row in result.history)
    return DemoResult(
        result.run_dir,
        result.best_dir,
        report_dir,
        pred_dir,
        m.top1,
        dict(zip(m.classes, m.per_class_accuracy)),
        m.num_samples,
        time.perf_counter() - t0,
        train_s,
        train_cpu,
        ev,
    )


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
