"""``vehicle-cls predict PATHS... --model DIR``: classify images, folders, globs and videos.

Writes JSON Lines (one object per input, with ``error`` for inputs that failed) to ``--out`` or,
when stdout is not a terminal, to stdout; prints a readable table on a terminal. Exit status 0 when
every input succeeded, 3 (``EXIT_SOME_INPUTS_FAILED``) when some failed (their lines are still
written), 1 when the command could not run, 2 for bad usage.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

HELP = "classify the vehicle in images, folders, globs or videos"
DESCRIPTION = """Classify the vehicle in images, folders, glob patterns and video files with a model bundle.

Writes JSON Lines (one object per input, with "error" set for inputs that failed) to --out, or to
stdout when stdout is not a terminal; prints a readable table on a terminal.
Exit status: 0 every input succeeded; 3 some inputs failed (their lines are still written);
1 the command could not run (bad bundle, missing weights); 2 bad usage."""


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``predict`` subcommand."""
    p = subparsers.add_parser("predict", help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders, glob patterns or video files")
    p.add_argument("--model", metavar="DIR", help="model bundle directory (written by training or Classifier.save)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... or auto (default: cpu)")
    p.add_argument("--batch-size", type=int, default=16, help="images per batch (default: 16)")
    p.add_argument("--topk", type=int, default=5, help="classes listed per prediction (default: 5)")
    p.add_argument("--out", metavar="FILE.jsonl", help="write JSON Lines here (default: stdout when not a terminal)")
    p.add_argument("--save-vis", metavar="DIR", help="save annotated images into DIR")
    p.add_argument("--no-crop", action="store_true", help="classify whole images (ignore the bundle's cropper)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="autocast precision of the classifier (default: fp32)")
    p.add_argument("--frame-stride", type=int, default=1, help="video: classify every N-th frame (default: 1)")
    p.add_argument("--num-workers", type=int, default=2, help="image decoding threads (default: 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def resolve_device(name: str) -> str:
    """``auto`` -> cuda when available, else cpu; anything else unchanged."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run(args: argparse.Namespace) -> int:
    """Run the subcommand; returns the exit status."""
    from vehicle_cls.cli import EXIT_OK, EXIT_SOME_INPUTS_FAILED, EXIT_USAGE

    if not args.model:
        print("vehicle-cls predict: error: --model DIR is required: a model bundle directory "
              "(config.json + model.safetensors, written by `vehicle-cls train` or Classifier.save)",
              file=sys.stderr)
        return EXIT_USAGE
    for name in ("batch_size", "topk", "frame_stride"):
        if getattr(args, name) < 1:
            print(f"vehicle-cls predict: error: --{name.replace('_', '-')} must be >= 1", file=sys.stderr)
            return EXIT_USAGE

    import json
    from pathlib import Path

    from tqdm.auto import tqdm

    from vehicle_cls.classifier import Classifier
    from vehicle_cls.pipeline import Pipeline

    device = resolve_device(args.device)
    classifier = Classifier.load(args.model, device=device)
    cropper = None
    if classifier.cropper_config and not args.no_crop:
        from vehicle_cls.cropper import Cropper

        try:
            cropper = Cropper.from_config(classifier.cropper_config, device=device)
        except Exception as exc:
            raise RuntimeError(f"cannot build the bundle's cropper: {exc} "
                               "(or pass --no-crop to classify whole images)") from exc
    pipe = Pipeline(cropper, classifier, device=device, batch_size=args.batch_size, num_workers=args.num_workers,
                    precision=args.precision, frame_stride=args.frame_stride)
    tty = sys.stdout.isatty()
    out: TextIO | None = None
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        out = open(args.out, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    elif not tty:
        out = sys.stdout
    vis_dir = Path(args.save_vis) if args.save_vis else None
    if vis_dir is not None:
        vis_dir.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress and sys.stderr.isatty()
    total = failed = 0
    vis_names: set[str] = set()
    try:
        if tty:
            print(_table_header(args.topk))
        for pred in pipe.stream(args.paths, topk=args.topk, keep_images=vis_dir is not None, progress=progress):
            total += 1
            failed += not pred.ok
            if out is not None:
                out.write(json.dumps(pred.to_dict()) + "\n")
                out.flush()
            if tty:  # tqdm.write keeps the progress bar (on stderr) below the table
                tqdm.write(_table_row(pred), file=sys.stdout)
            if vis_dir is not None and pred.ok:  # a failed input has no pixels to draw on
                _save_vis(pred, vis_dir, vis_names)
    finally:
        if out is not None and out is not sys.stdout:
            out.close()
    print(f"{total} predictions, {failed} failed" + (f"; JSON Lines in {args.out}" if args.out else ""),
          file=sys.stderr)
    return EXIT_SOME_INPUTS_FAILED if failed else EXIT_OK


def _table_header(topk: int) -> str:
    return f"{'source':40}  {'label':32}  {'score':>6}  box / error"


def _table_row(pred: Any) -> str:
    source = pred.source if len(pred.source) <= 40 else "..." + pred.source[-37:]
    if pred.frame is not None:
        source = f"{source}#{pred.frame}"
    if not pred.ok:
        return f"{source:40}  {'ERROR':32}  {'':>6}  {pred.error}"
    label = pred.label if pred.label is not None else "(no vehicle)"
    score = "" if pred.score is None else f"{pred.score:.3f}"
    where = "whole image" if pred.box is None else "[" + ", ".join(f"{v:.0f}" for v in pred.box) + "]"
    if pred.fallback:
        where += " (fallback)"
    return f"{source:40}  {label[:32]:32}  {score:>6}  {where}"


def _save_vis(pred: Any, vis_dir: Any, used: set[str]) -> None:
    """Annotated image per prediction: <stem>[_f<frame>][_<n>].jpg, never overwriting within a run."""
    import logging
    from pathlib import Path

    stem = Path(pred.source).stem if pred.source and not pred.source.startswith("<") else "image"
    base = stem + (f"_f{pred.frame:06d}" if pred.frame is not None else "")
    name, n = base, 1
    while name in used:
        name, n = f"{base}_{n}", n + 1
    used.add(name)
    try:
        pred.plot(pred.image if pred.image is not None else None).save(vis_dir / f"{name}.jpg", quality=90)
    except Exception as exc:  # never stop the run for a picture
        logging.getLogger(__name__).warning("%s: no annotated image (%s)", pred.source, exc)
