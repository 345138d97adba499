"""Training speed, Keras vs torch: ``vehicle-cls train`` with ``model.backend: keras`` and ``torch`` on
the same photos, input size, batch, precision, threads and CPU, in one process, one after the other.

Both runs use the library's trainers end to end (decode, augmentation, forward, backward, optimizer
step) on the shipped demo photos (``vehicle_cls/assets/demo_vehicle_types``), no validation split
(so an epoch is pure training) and random initial weights (speed does not depend on their values).
Images/s is the training images of an epoch over its wall time (``history.json``'s ``seconds``),
after the first epoch (tracing, warm-up) is dropped; best and mean of the rest are reported.

    python benchmarks/bench_train_keras.py --arch resnet50 --size 64 --per-class 16 --epochs 3
    python benchmarks/bench_train_keras.py --precision bf16 --threads 2
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEMO = ROOT / "vehicle_cls" / "assets" / "demo_vehicle_types"


def cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        text = ""
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def photos(root: Path, per_class: int) -> Path:
    for class_dir in sorted(p for p in DEMO.iterdir() if p.is_dir()):
        (root / class_dir.name).mkdir(parents=True)
        for f in sorted(class_dir.glob("*.jpg"))[:per_class]:
            shutil.copy(f, root / class_dir.name / f.name)
    return root


def run(backend: str, args: argparse.Namespace, data: Path, out: Path) -> dict:
    from vehicle_cls.train.config import TrainConfig

    cfg = TrainConfig.from_dict({
        "data": {"train": str(data), "layout": "folders", "val_fraction": 0.0, "num_workers": args.workers},
        "model": {"arch": args.arch, "backend": backend, "input_size": args.size, "dropout": 0.2},
        "optim": {"name": "sgd", "lr": 0.01, "warmup_epochs": 0.5, "label_smoothing": 0.1},
        "augment": {"scale": [0.35, 1.0], "hflip": 0.5},
        "run": {"out_dir": str(out / backend), "epochs": args.epochs, "batch_size": args.batch,
                "precision": args.precision, "threads": args.threads, "tensorboard": False, "progress": False,
                "device": "cpu"},
    }).validate()
    t0 = time.perf_counter()
    if backend == "keras":
        from vehicle_cls.train.keras import train
    else:
        from vehicle_cls.train.trainer import train
    result = train(cfg)
    total = time.perf_counter() - t0
    n = sum(1 for _ in data.rglob("*.jpg"))  # no validation split: every photo trains
    rates = [n / row["seconds"] for row in result.history[1:]]
    precision = json.loads((out / backend / "best" / "config.json").read_text())["training"]["precision"]
    return {"backend": backend, "precision": precision, "images_per_epoch": n, "epoch_seconds":
            [row["seconds"] for row in result.history], "best_images_per_s": max(rates),
            "mean_images_per_s": sum(rates) / len(rates), "wall_s": round(total, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="resnet50", help="an arch both backends have (resnet50, mobilenet_v2, ...)")
    p.add_argument("--size", type=int, default=64, help="input size (px)")
    p.add_argument("--per-class", type=int, default=16, help="photos per class (6 classes)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--epochs", type=int, default=3, help="the first is dropped as warm-up")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--workers", type=int, default=1, help="data.num_workers for both")
    p.add_argument("--order", default="torch,keras")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    if args.epochs < 2:
        p.error("--epochs must be >= 2 (the first is warm-up)")
    logging.basicConfig(level=logging.WARNING)
    import torchvision  # noqa: F401  (before tensorflow, see classifier.keras.loading.import_keras)

    with tempfile.TemporaryDirectory() as tmp:
        data = photos(Path(tmp) / "photos", args.per_class)
        results = [run(b, args, data, Path(tmp) / "runs") for b in args.order.split(",")]
    import tensorflow as tf
    import torch

    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}, tensorflow {tf.__version__}")
    print(f"{args.arch}, {args.size} px, batch {args.batch}, {results[0]['images_per_epoch']} images/epoch, "
          f"{args.epochs} epochs (first dropped), {args.threads} threads, data.num_workers {args.workers}")
    print("| backend | precision | images/s (best) | images/s (mean) | epoch seconds | wall s |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['backend']} | {r['precision']} | {r['best_images_per_s']:.1f} | {r['mean_images_per_s']:.1f} | "
              f"{', '.join(f'{s:.1f}' for s in r['epoch_seconds'])} | {r['wall_s']} |")
    by = {r["backend"]: r for r in results}
    if {"torch", "keras"} <= set(by):
        print(f"keras / torch (best images/s): {by['keras']['best_images_per_s'] / by['torch']['best_images_per_s']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_name(), "args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
