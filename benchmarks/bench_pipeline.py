"""Throughput of ``Pipeline`` (cropper=None: decode + preprocess on the device + classify), measured
for several settings in ONE process so the ratios are comparable.

    python benchmarks/bench_pipeline.py                       # CPU: fp32 vs bf16 autocast, resnet50 @ 224
    python benchmarks/bench_pipeline.py --device cuda --precisions fp32,fp16,bf16

Prints images/s per setting and the ratio to the first one; "model_only" rows time the network
alone on ready-made batches (the ceiling: the pipeline should come close, decoding runs beside it). Weights are random (weights=None):
speed does not depend on their values. Inputs are the real 100x100 JPEGs in tests/data/predict,
repeated (so decoding is included, as in real use).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vehicle_cls.classifier import Classifier, Preprocess  # noqa: E402
from vehicle_cls.pipeline import Pipeline  # noqa: E402


def bench(pipe: Pipeline, inputs: list[str], batch_size: int, repeats: int) -> float:
    """Best images/s over ``repeats`` runs (after one warm-up batch)."""
    pipe(inputs[:batch_size], batch_size=batch_size)
    if pipe.device.type == "cuda":
        torch.cuda.synchronize()
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        preds = pipe(inputs, batch_size=batch_size)
        if pipe.device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        assert len(preds) == len(inputs) and all(p.ok for p in preds)
        best = max(best, len(inputs) / dt)
    return best


def bench_model_only(clf: Classifier, n: int, batch_size: int, repeats: int, precision: str) -> float:
    """Best images/s of the network alone on ready-made batches (the ceiling for the pipeline)."""
    x = torch.randn(batch_size, 3, clf.preprocess.input_size, clf.preprocess.input_size, device=clf.device)
    clf.predict_proba(x, precision)
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(0, n, batch_size):
            clf.predict_proba(x, precision)
        if clf.device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, (n // batch_size * batch_size) / (time.perf_counter() - t0))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--images", type=int, default=64, help="images per timed run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precisions", default="fp32,bf16", help="comma list of fp32, bf16, fp16")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    ap.add_argument("--no-channels-last-variant", action="store_true",
                    help="skip the extra fp32 run without channels_last")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    photos = sorted(str(p) for p in (ROOT / "tests" / "data" / "predict").glob("*.jpg"))
    inputs = (photos * (args.images // len(photos) + 1))[: args.images]
    clf = Classifier.create(args.arch, classes=[f"c{i}" for i in range(196)],
                            preprocess=Preprocess(args.size), device=args.device)
    settings = [(p, True) for p in args.precisions.split(",")]
    if not args.no_channels_last_variant:
        settings.append(("fp32", False))
    results = []
    for precision, channels_last in settings:
        if not channels_last:
            clf.model.to(memory_format=torch.contiguous_format)
        pipe = Pipeline(None, clf, device=args.device, batch_size=args.batch_size, precision=precision,
                        channels_last=channels_last)
        ips = bench(pipe, inputs, args.batch_size, args.repeats)
        results.append({"precision": precision, "channels_last": channels_last, "images_per_s": round(ips, 2)})
    clf.model.to(memory_format=torch.channels_last)
    for precision in args.precisions.split(","):
        ips = bench_model_only(clf, args.images, args.batch_size, args.repeats, precision)
        results.append({"precision": precision, "channels_last": True, "model_only": True,
                        "images_per_s": round(ips, 2)})
    base = results[0]["images_per_s"]
    for r in results:
        r["ratio_to_first"] = round(r["images_per_s"] / base, 3)
    cuda = args.device.startswith("cuda")
    device = torch.cuda.get_device_name() if cuda else f"cpu x{torch.get_num_threads()} threads"
    print(json.dumps({"arch": args.arch, "size": args.size, "batch_size": args.batch_size, "device": device,
                      "torch": torch.__version__, "cpus": os.cpu_count(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
