"""``vehicle-cls export --model DIR --format onnx|torchscript --out PATH``: the models for other runtimes.

``--format onnx --out DIR`` (a path without a suffix) writes the whole pipeline: the detector (a
bundle with a cropper; dynamic image size), the crop op and the classifier, plus manifest.json;
``vehicle_cls.onnx.Pipeline.load(DIR)`` runs it without torch. ``--out FILE.onnx`` / ``FILE.pt``
writes the classifier alone (network + softmax on the preprocessed batch) with a ``FILE.json``
sidecar. ``--check IMAGES...`` runs the export and PyTorch on those images and prints the worst
differences as JSON; an image that cannot be read is reported and the others still compared.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HELP = "export the pipeline (detector + classifier) to ONNX, or the classifier to ONNX/TorchScript"
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``export`` subcommand."""
    p = subparsers.add_parser("export", help=HELP, description=__doc__.split("\n\n", 1)[1])
    p.add_argument("--model", metavar="DIR", required=True, help="model bundle directory")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx", help="(default: onnx)")
    p.add_argument(
        "--out",
        metavar="PATH",
        required=True,
        help="export directory (onnx: the whole pipeline), or FILE.onnx / FILE.pt (the classifier)",
    )
    p.add_argument(
        "--check", nargs="*", metavar="IMAGE", default=None, help="images to compare the export with PyTorch on"
    )
    p.set_defaults(func=run)
    return p


def output_kind(fmt: str, out: str) -> str:
    """ "pipeline" or "classifier" for ``--out``; a suffix that is not the format's is an error up front."""
    suffix = Path(out).suffix.lower()
    if suffix == SUFFIXES[fmt]:
        return "classifier"
    if suffix in SUFFIXES.values() or suffix == ".torchscript":
        want = SUFFIXES[fmt] + (" or a directory" if fmt == "onnx" else "")
        raise ValueError(f"--out {out}: a {suffix} file is not {fmt}; use {want}")
    if fmt == "torchscript":
        raise ValueError(f"--out {out}: TorchScript exports the classifier to a .pt file")
    return "pipeline"


def run(args: argparse.Namespace) -> int:
    """Export, optionally check; returns the exit status."""
    try:
        kind = output_kind(args.format, args.out)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if kind == "pipeline":
        return _run_pipeline(args)
    from vehicle_cls.bundle import read_config
    from vehicle_cls.classifier import Classifier
    from vehicle_cls.export import check_export, export_classifier
    from vehicle_cls.outputs import check_output

    check_output([args.out, f"{args.out}.json"], [args.model, *(args.check or ())])  # never over the bundle
    config = read_config(args.model)
    classifier = Classifier.load(args.model, device="cpu", config=config)
    if config.get("cropper"):
        print("note: only the classifier is exported to a file; give --out a directory to export the detector too")
    out = export_classifier(classifier, args.out, args.format)
    print(f"wrote {out} and {out}.json")
    if args.check is not None:
        result = check_export(classifier, out, args.check)
        for line in result.broken:
            print(f"warning: not compared: {line}", file=sys.stderr)
        print(json.dumps(result.to_dict()))
        return 0 if result.images else 1
    return 0


def _run_pipeline(args: argparse.Namespace) -> int:
    from vehicle_cls.export.pipeline import check_pipeline, export_pipeline
    from vehicle_cls.pipeline import Pipeline

    pipeline = Pipeline.load(args.model, device="cpu", precision="fp32")
    out = export_pipeline(pipeline, args.out)
    detector = "detector, " if pipeline.cropper is not None else ""
    print(f"wrote {out}/ ({detector}crops, classifier, manifest.json)")
    if args.check is not None:
        result = check_pipeline(pipeline, out, args.check)
        for line in result.broken:
            print(f"warning: not compared: {line}", file=sys.stderr)
        print(json.dumps(result.to_dict()))
        return 0 if result.ok else 1
    return 0
