"""``vehicle-cls eval``: metrics and a report for a classifier bundle on a labelled dataset.

    vehicle-cls eval --model runs/x/best --split test --out reports/full          # the run's own test split
    vehicle-cls eval --model runs/x/best --data car_data --split test --crop gt --out reports/gt
    vehicle-cls eval --model runs/x/best --data car_data --crop cache --cache crops/ --out reports/detector
    vehicle-cls eval --compare reports/full reports/detector reports/gt --out reports/compare
    vehicle-cls eval --compare runs/torch runs/keras --out reports/torch_vs_keras   # two training runs
    vehicle-cls eval --detector --data annotations.json --images val2017 --out reports/boxes  # the cropper's box AP

``--compare`` takes report folders and training run directories alike: a run (``best/`` +
``splits.json``) is first evaluated on its own ``--split`` (its report goes under ``--out``), and runs
compared together must hold the same samples in that split. ``--detector [ZOO_NAME|CHECKPOINT]`` scores
the cropper's detector instead: COCO box AP/AP50/AP75 on a COCO annotation file's boxes
(``train.box_ap``), written to ``box_ap.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from vehicle_cls.cli import EXIT_ERROR, EXIT_OK, EXIT_SOME_INPUTS_FAILED
from vehicle_cls.cli.crop import DEFAULT_ZOO


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a classifier bundle (top-1/top-5, per class, confusion, report)",
        description="Evaluate a classifier bundle on a labelled dataset and write report.md/report.json "
        "with plots; or compare several reports side by side with --compare.",
    )
    p.add_argument("--model", metavar="DIR", help="classifier bundle (e.g. runs/x/best)")
    p.add_argument("--data", metavar="PATH|URI", help="dataset (folder, CSV, s3://...); default: the run's own splits")
    p.add_argument("--layout", default="auto", help="dataset layout (default: auto)")
    p.add_argument(
        "--split",
        default=None,
        help="split to evaluate, refused when --data has no such split (default: test; a --data "
        "without a test split is evaluated whole, reported as split 'all')",
    )
    p.add_argument(
        "--crop",
        default="none",
        metavar="none|gt|cache",
        help="whole images, ground-truth boxes, or the detector crops of --cache DIR (a crop cache "
        "made by `vehicle-cls crop`; --crop DIR also works)",
    )
    p.add_argument("--cache", metavar="DIR", help="crop cache folder for --crop cache")
    p.add_argument("--out", required=True, metavar="DIR", help="report folder")
    p.add_argument("--name", help="name of this evaluation in reports (default: derived)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--device", default="auto", help="auto (CUDA when available, else CPU), cpu, cuda, ... (default: auto)"
    )
    from vehicle_cls.runtime import AUTOCAST_DTYPES  # the precisions, listed once

    # fp32 by default, as evaluate(): the reference figures; "auto" is not offered for the same reason
    p.add_argument("--precision", default="fp32", choices=tuple(AUTOCAST_DTYPES))
    p.add_argument(
        "--compare",
        nargs="+",
        metavar="REPORT_OR_RUN_DIR",
        help="write a side-by-side comparison of these reports or training runs (torch or Keras) instead",
    )
    det = p.add_argument_group("detector box AP (--detector)")
    det.add_argument(
        "--detector",
        nargs="?",
        const=DEFAULT_ZOO,
        metavar="ZOO_NAME|CHECKPOINT",
        help=f"score the cropper's detector on --data's COCO boxes instead (default: {DEFAULT_ZOO})",
    )
    det.add_argument("--detector-config", help="config of a --detector checkpoint (default: its zoo name's)")
    det.add_argument("--images", metavar="DIR", help="folder of the COCO file's images (default: the file's folder)")
    det.add_argument(
        "--classes", nargs="+", default=["car", "truck", "bus"], help="detector classes scored (default: car truck bus)"
    )
    det.add_argument(
        "--match",
        choices=("auto", "name", "agnostic"),
        default="auto",
        help="pair detector classes with categories by name, or score every box as one 'vehicle' "
        "(default auto: by name when a category is named like a detector class)",
    )
    det.add_argument("--min-size-test", type=int, default=None, help="detector input shorter side (default 800)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vehicle_cls.train.report import write_comparison

    if args.crop == "cache":
        if not args.cache:
            print(
                "vehicle-cls eval: error: --crop cache needs --cache DIR (made by `vehicle-cls crop`)", file=sys.stderr
            )
            return EXIT_ERROR
        args.crop = args.cache
    from vehicle_cls.data.s3 import is_s3_uri
    from vehicle_cls.outputs import check_output

    inputs = [x for x in (args.model, args.data, args.cache, *(args.compare or ())) if x and not is_s3_uri(x)]
    check_output(args.out, inputs, directory=True)
    if args.detector:
        return _detector_ap(args)
    if args.compare:
        args.split = args.split or "test"
        paths = write_comparison(_compare_reports(args), args.out)
        print(paths["markdown"].read_text(encoding="utf-8"))
        print(f"comparison: {paths['markdown']} and {paths['json']}")
        return EXIT_OK
    if not args.model:
        print("vehicle-cls eval: error: --model DIR is required (or --compare REPORT_DIR ...)", file=sys.stderr)
        return EXIT_ERROR
    from vehicle_cls.classifier import Classifier
    from vehicle_cls.train.report import write_report

    clf = Classifier.load(args.model, device=args.device)
    samples, classes, where = _samples(args, clf)
    name = args.name or f"{args.split} / crop={args.crop if args.crop in ('none', 'gt') else 'cache'}"
    info = {"model": str(args.model), "dataset": where, "split": args.split}
    result = _evaluate(args, clf, samples, classes, name, info, progress=sys.stderr.isatty())
    if result.metrics.num_samples == 0:  # no silent "top-1 0.00%": nothing was scored
        first = f"; first: {result.failed[0][0]}: {result.failed[0][1]}" if result.failed else ""
        print(
            f"vehicle-cls eval: error: no image of {where} could be scored ({len(result.failed)} unreadable"
            f"{first}); no report written",
            file=sys.stderr,
        )
        return EXIT_ERROR
    history = (clf.training or {}).get("history")
    files = write_report(result, args.out, history=history)
    print_summary(result)
    print(f"report: {files['markdown']} (JSON: {files['json']})")
    return EXIT_OK


def _detector_ap(args: argparse.Namespace) -> int:
    """``--detector``: COCO box AP of the cropper on ``--data``'s boxes, printed and written to box_ap.json."""
    import json
    from pathlib import Path

    from vehicle_cls.data import open_dataset
    from vehicle_cls.fileio import atomic_write_text
    from vehicle_cls.train.box_ap import box_ap

    if not args.data:
        print("vehicle-cls eval: error: --detector needs --data ANNOTATIONS.json (COCO boxes)", file=sys.stderr)
        return EXIT_ERROR
    dataset = open_dataset(args.data, "coco", split=None, images_dir=args.images)
    result = box_ap(
        _build_detector(args),
        dataset,  # type: ignore[arg-type]
        classes=args.classes,
        class_agnostic={"auto": None, "name": False, "agnostic": True}[args.match],
    )
    info = {"detector": args.detector, "dataset": str(args.data), "problems": [str(p) for p in dataset.problems]}
    out = atomic_write_text(Path(args.out) / "box_ap.json", json.dumps({**result.to_dict(), **info}, indent=2) + "\n")
    print(result.summary())
    for image, why in result.skipped[:10]:
        print(f"  left out: {image}: {why}")
    print(f"metrics: {out}")
    return EXIT_SOME_INPUTS_FAILED if result.skipped or dataset.problems else EXIT_OK


def _build_detector(args: argparse.Namespace):
    """The ``Cropper`` of ``--detector``: a checkpoint file, or a zoo name downloaded once."""
    from pathlib import Path

    from vehicle_cls.cropper import Cropper, CropPolicy

    common = {"device": args.device, "policy": CropPolicy(classes=tuple(args.classes)), "precision": args.precision}
    if args.min_size_test is not None:
        common["min_size_test"] = args.min_size_test
    path = Path(args.detector)
    if path.is_file():
        return Cropper.from_checkpoint(path, config=args.detector_config or DEFAULT_ZOO, **common)
    if path.suffix or len(path.parts) > 1:  # meant as a file, not a zoo name
        raise FileNotFoundError(f"--detector {path}: no such checkpoint file")
    return Cropper.from_zoo(args.detector, **common)


def _samples(args: argparse.Namespace, clf):
    """The samples to evaluate: from --data, or the split recorded in the training run."""
    from pathlib import Path

    if args.data:
        from vehicle_cls.data import open_dataset
        from vehicle_cls.data.layouts import MissingSplitError

        try:  # an asked-for split the data does not have is refused, never every image labelled with it
            ds = open_dataset(args.data, args.layout, split=args.split or "test", require_split=True)
        except MissingSplitError:
            if args.split is not None:
                raise
            ds = open_dataset(args.data, args.layout, split=None)
        args.split = ds.split or "all"
        return ds, ds.classes, args.data
    args.split = args.split or "test"
    from vehicle_cls.train.splits import DataSplits

    run_dir = (clf.training or {}).get("run_dir")
    candidates = [Path(args.model).parent / "splits.json"] + ([Path(run_dir) / "splits.json"] if run_dir else [])
    for path in candidates:
        if path.is_file():
            splits = DataSplits.load(path)
            samples = getattr(splits, args.split, None) if args.split in ("train", "val", "test") else None
            if samples is None:
                raise ValueError(f"{path}: the run has no {args.split!r} split; pass --data")
            return samples, splits.classes, f"{path}:{args.split}"
    raise ValueError(f"{args.model}: no --data given and no splits.json of its training run found")


def _compare_reports(args: argparse.Namespace) -> list:
    """The report folders to compare: report folders as given, training runs evaluated on ``--split``
    into ``--out/<run name>`` first (one-line error when the runs' splits hold different samples)."""
    from pathlib import Path

    from vehicle_cls.classifier import Classifier
    from vehicle_cls.train.report import write_report
    from vehicle_cls.train.splits import DataSplits

    reports, reference = [], None
    for item in args.compare:
        run_dir = Path(item)
        if not ((run_dir / "best").is_dir() and (run_dir / "splits.json").is_file()):
            reports.append(item)  # a report folder (load_report names it if it is neither)
            continue
        splits = DataSplits.load(run_dir / "splits.json")
        samples = getattr(splits, args.split, None) if args.split in ("train", "val", "test") else None
        if samples is None:
            raise ValueError(f"{run_dir / 'splits.json'}: the run has no {args.split!r} split; choose --split val")
        key = [(s.path, s.label) for s in samples]
        if reference is None:
            reference = (run_dir, key)
        elif key != reference[1]:
            raise ValueError(
                f"{run_dir} and {reference[0]}: their {args.split} splits hold different samples; "
                "compare runs trained with the same data section and split_seed"
            )
        clf = Classifier.load(run_dir / "best", device=args.device)
        name = f"{run_dir.name} ({clf.backend.name})"
        info = {
            "model": str(run_dir / "best"),
            "dataset": f"{run_dir / 'splits.json'}:{args.split}",
            "split": args.split,
            "backend": clf.backend.name,
        }
        result = _evaluate(args, clf, samples, splits.classes, name, info)
        out = Path(args.out) / "runs" / run_dir.name
        write_report(result, out, history=(clf.training or {}).get("history"))
        print_summary(result)
        reports.append(out)
    return reports


def print_summary(result) -> None:
    """Top-1/top-5 and per-class accuracy as a few lines."""
    m = result.metrics
    print(
        f"{result.name}: {m.num_samples} images, top-1 {m.top1:.2%}, top-5 {m.top5:.2%}, "
        f"mean per-class {m.mean_class_accuracy:.2%}" + (f", {len(result.failed)} unreadable" if result.failed else "")
    )
    width = max(len(c) for c in m.classes) if m.classes else 0
    for c, n, a in zip(m.classes, m.per_class_count, m.per_class_accuracy):
        if n:
            print(f"  {c:<{width}}  {a:7.2%}  ({n} images)")


def _evaluate(
    args: argparse.Namespace,
    clf: Any,
    samples: Any,
    classes: Any,
    name: str,
    info: dict[str, Any],
    progress: bool = False,
) -> Any:
    """``train.evaluate.evaluate`` with the command's crop, batch, worker and precision flags (one mapping
    for a single model and for each run of ``--compare``)."""
    from vehicle_cls.train.evaluate import evaluate

    return evaluate(
        clf,
        samples,
        dataset_classes=classes,
        crop=args.crop,
        batch_size=args.batch_size,
        num_workers=args.workers,
        precision=args.precision,
        name=name,
        info=info,
        progress=progress,
    )
