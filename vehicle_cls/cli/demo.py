"""``vehicle-cls demo [--out DIR]``: train and evaluate a vehicle-type classifier on the shipped photos
(CPU, minutes)."""

from __future__ import annotations

import argparse

from vehicle_cls.cli import EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="train + evaluate a vehicle-type classifier on the shipped photos (no downloads, CPU)",
        description="Train a ResNet-18 from scratch on the shipped CC BY 4.0 vehicle-type photos, evaluate it "
        "on held-out test photos it never trained on, and write a report and annotated predictions.",
    )
    p.add_argument("--out", default="demo_output", metavar="DIR", help="output folder (default: demo_output)")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs")
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads (default: torch's, one per core of this machine)"
    )
    p.add_argument(
        "--baseline", action="store_true", help="the seed notebook's recipe instead: no augmentation, squashed input"
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vehicle_cls.train.demo import run_demo

    d = run_demo(
        args.out, baseline=args.baseline, epochs=args.epochs, threads=args.threads, progress=not args.no_progress
    )
    from vehicle_cls.train.demo import recorded_comparison

    what = "baseline (no augmentation)" if args.baseline else "demo"
    print(
        f"\n{what}: test top-1 accuracy {d.top1:.1%} on {d.test_images} held-out photos "
        f"(never trained on), {d.seconds:.0f} s in all; training {d.train_seconds:.0f} s wall, "
        f"{d.train_cpu_seconds:.0f} s process CPU"
    )
    for name, acc in d.per_class.items():
        print(f"  {name:<11} {'n/a' if acc is None else f'{acc:.1%}'}")
    print("recorded on the same test photos (mean over seeds, 95 % interval):")
    print("\n".join(recorded_comparison()))
    print(f"report:       {d.report_dir / 'report.md'}")
    print(f"predictions:  {d.predictions_dir}/ (annotated test photos)")
    print(f"model bundle: {d.bundle_dir} (vehicle-cls predict --model {d.bundle_dir} IMAGE ...)")
    return EXIT_OK
