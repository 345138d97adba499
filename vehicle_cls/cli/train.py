"""``vehicle-cls train --config recipe.yaml [section.key=value ...] [--resume]``: train a classifier.

Multi-GPU / multi-node: ``torchrun --nproc_per_node N -m vehicle_cls train --config recipe.yaml``.
"""

from __future__ import annotations

import argparse
import sys

from vehicle_cls.cli import EXIT_ERROR, EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a classifier from a YAML recipe",
        description="Train a classifier from a YAML recipe: a file, or a shipped recipe's name "
        "(`vehicle-cls recipes` lists them, e.g. stanford_cars_r50_448). Overrides are section.key=value "
        "(parsed as YAML), e.g. optim.lr=0.01 run.epochs=5; model.backend=keras trains a keras.applications "
        "model on TensorFlow from the same recipe. The run directory (run.out_dir) gets last.pt, "
        "best/ (a bundle for Classifier.load / Pipeline.load), history.json, splits.json and tb/.",
    )
    p.add_argument(
        "--config",
        "-c",
        required=True,
        metavar="RECIPE",
        help="recipe file, or a shipped recipe name (vehicle-cls recipes)",
    )
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="recipe overrides")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in run.out_dir from its last.pt (last.npz for model.backend=keras)",
    )
    p.add_argument("--out", metavar="DIR", help="run directory (same as run.out_dir=DIR)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vehicle_cls.train.config import ConfigError, load_config

    overrides = list(args.overrides)
    if args.out:
        overrides.append(f"run.out_dir={args.out}")
    if args.no_progress:
        overrides.append("run.progress=false")
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as exc:
        print(f"vehicle-cls train: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    try:
        if cfg.model.backend == "keras":
            from vehicle_cls.train.keras import train as train_keras

            result = train_keras(cfg, resume=args.resume, source=args.config)
        else:
            from vehicle_cls.train.trainer import train

            result = train(cfg, resume=args.resume)
    except ConfigError as exc:  # a recipe setting the chosen backend cannot honour
        print(f"vehicle-cls train: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    import os

    if int(os.environ.get("RANK", "0")) != 0:
        return EXIT_OK
    state = "stopped early" if result.stopped_early else "interrupted (run.max_steps)" if result.interrupted else "done"
    print(f"{state}: {result.epochs_completed} epochs, {result.global_step} steps in {result.run_dir}")
    if result.best_dir is not None:
        metric = "n/a" if result.best_metric is None else f"{result.best_metric:.4f}"
        print(f"best {cfg.run.monitor} {metric} at epoch {result.best_epoch}: bundle {result.best_dir}")
    if result.interrupted:
        resume = f"vehicle-cls train --config {args.config} {' '.join(args.overrides)} --resume"
        print(f"continue with: {resume}".replace("  ", " "))
    return EXIT_OK
