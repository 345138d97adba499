"""``vehicle-cls export --model DIR --format onnx|torchscript --out FILE``: the classifier for other runtimes.

Writes the network + softmax (input: the preprocessed NCHW batch) and a ``FILE.json`` sidecar with the
class names and the preprocessing; with ``--check IMAGES...`` it runs the export and PyTorch on those
images and prints the largest absolute probability difference.
"""
from __future__ import annotations

import argparse
import json
from typing import Any

HELP = "export the classifier to ONNX or TorchScript (and check it against PyTorch)"


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``export`` subcommand."""
    p = subparsers.add_parser("export", help=HELP, description=__doc__.split("\n\n", 1)[1])
    p.add_argument("--model", metavar="DIR", required=True, help="model bundle directory")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx", help="(default: onnx)")
    p.add_argument("--out", metavar="FILE", required=True, help="output file (.onnx or .pt)")
    p.add_argument("--check", nargs="*", metavar="IMAGE", default=None,
                   help="images to compare the export with PyTorch on (max abs probability difference)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Export, optionally check; returns the exit status."""
    from vehicle_cls.bundle import read_config
    from vehicle_cls.classifier import Classifier
    from vehicle_cls.export import check_export, export_classifier
    from vehicle_cls.outputs import check_output

    check_output([args.out, f"{args.out}.json"], [args.model, *(args.check or ())])  # never over the bundle
    config = read_config(args.model)
    classifier = Classifier.load(args.model, device="cpu", config=config)
    if config.get("cropper"):
        print("note: only the classifier is exported; the bundle's cropper (detector) stays in PyTorch")
    out = export_classifier(classifier, args.out, args.format)
    print(f"wrote {out} and {out}.json")
    if args.check:
        result = check_export(classifier, out, args.check)
        print(json.dumps(result.to_dict()))
    return 0
