"""Throughput of ``Pipeline`` (cropper=None: decode + preprocess on the device + classify), measured
for several settings in ONE process so the ratios are comparable.

    python benchmarks/bench_pipeline.py                       # CPU: fp32 vs bf16 autocast, resnet50 @ 224
    python benchmarks/bench_pipeline.py --device cuda --precisions fp32,fp16,bf16
    python benchmarks/bench_pipeline.py --precisions bf16 --compile --batch-size 8   # torch.compile vs eager
    python benchmarks/bench_pipeline.py --device cuda --precisions bf16 --decodes cpu,device   # nvjpeg vs PIL

Prints images/s per setting and the ratio to the first one; "model_only" rows time the network
alone on ready-made batches (the ceiling: the pipeline should come close, decoding runs beside it).
Settings are timed round robin, best of ``--repeats``. Weights are random (weights=None): speed does
not depend on their values. Inputs are the real 100x100 JPEGs in tests/data/predict, repeated (so
decoding is included, as in real use). ``--compile [MODE]`` adds the same settings with the classifier
run through ``torch.compile`` (a second classifier on a copy of the weights, compiled once during the
warm-up, whose time is reported separately); "reduce-overhead" records CUDA graphs on a GPU.
``--decodes`` times the pipeline settings once per ``Pipeline(decode=...)`` value.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vehicle_cls.classifier import Classifier, Preprocess  # noqa: E402
from vehicle_cls.classifier.compiled import COMPILE_MODES  # noqa: E402
from vehicle_cls.pipeline import Pipeline  # noqa: E402


def time_pipeline(pipe: Pipeline, inputs: list[str], batch_size: int) -> float:
    """images/s of one pass of the pipeline over ``inputs`` (decode + preprocess + classify)."""
    t0 = time.perf_counter()
    preds = pipe(inputs, batch_size=batch_size)
    if pipe.device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    assert len(preds) == len(inputs) and all(p.ok for p in preds)
    return len(inputs) / dt


def time_model_only(clf: Classifier, n: int, batch_size: int, precision: str) -> float:
    """images/s of the network alone on ready-made batches (the ceiling for the pipeline)."""
    x = torch.randn(batch_size, 3, clf.preprocess.input_size, clf.preprocess.input_size, device=clf.device)
    batches = max(1, n // batch_size)
    t0 = time.perf_counter()
    for _ in range(batches):
        clf.predict_proba(x, precision)
    if clf.device.type == "cuda":
        torch.cuda.synchronize()
    return batches * batch_size / (time.perf_counter() - t0)


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
    ap.add_argument("--compile", nargs="?", const="default", choices=COMPILE_MODES, default=None,
                    help="also time the classifier through torch.compile in this mode (default: 'default')")
    ap.add_argument("--decodes", default="auto", help="comma list of Pipeline decode values: auto, cpu, device")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    photos = sorted(str(p) for p in (ROOT / "tests" / "data" / "predict").glob("*.jpg"))
    inputs = (photos * (args.images // len(photos) + 1))[: args.images]
    clf = Classifier.create(args.arch, classes=[f"c{i}" for i in range(196)],
                            preprocess=Preprocess(args.size), device=args.device)
    precisions = args.precisions.split(",")
    compiled = None
    if args.compile:  # its own copy of the weights: the channels_last switching below must not touch it
        compiled = Classifier(copy.deepcopy(clf.model), args.arch, clf.classes, clf.preprocess, args.device)
        compiled.backend.set_compile(args.compile)
    settings = [{"precision": p, "channels_last": True, "model_only": False, "decode": d}
                for p in precisions for d in args.decodes.split(",")]
    if not args.no_channels_last_variant:
        settings.append({"precision": "fp32", "channels_last": False, "model_only": False})
    settings += [{"precision": p, "channels_last": True, "model_only": True} for p in precisions]
    if compiled is not None:  # each compiled setting right after its eager twin: timed back to back
        settings = [v for s in settings for v in ([s, {**s, "compile": args.compile}] if s["channels_last"] else [s])]

    def run(setting: dict, n: int) -> float:
        model = compiled if setting.get("compile") else clf
        fmt = torch.channels_last if setting["channels_last"] else torch.contiguous_format
        model.model.to(memory_format=fmt)
        if setting["model_only"]:
            return time_model_only(model, n, args.batch_size, setting["precision"])
        pipe = Pipeline(None, model, device=args.device, batch_size=args.batch_size,
                        precision=setting["precision"], channels_last=setting["channels_last"],
                        compile=setting.get("compile") or False, decode=setting.get("decode", "auto"))
        return time_pipeline(pipe, inputs[:n], args.batch_size)

    warmup_s = []
    for setting in settings:  # warm-up: one batch each (compiles the compiled settings)
        t0 = time.perf_counter()
        run(setting, args.batch_size)
        warmup_s.append(round(time.perf_counter() - t0, 1))
    runs: list[list[float]] = [[] for _ in settings]
    for rep in range(args.repeats):  # round robin, reversed every other time (ABBA), so a change in
        order = list(range(len(settings)))  # machine load hits every setting alike
        for i in order if rep % 2 == 0 else order[::-1]:
            runs[i].append(run(settings[i], len(inputs)))
    results = [{**setting, "images_per_s": round(max(r), 2), "warmup_s": w}
               for setting, r, w in zip(settings, runs, warmup_s)]
    base = results[0]["images_per_s"]
    for i, r in enumerate(results):
        r["ratio_to_first"] = round(r["images_per_s"] / base, 3)
        if r.get("compile"):  # vs its eager twin, timed just before (after on reversed rounds)
            paired = sorted(c / e for c, e in zip(runs[i], runs[i - 1]))
            r["compiled_vs_eager_median"] = round(statistics.median(paired), 3)
            r["compiled_vs_eager_range"] = [round(paired[0], 3), round(paired[-1], 3)]
    cuda = args.device.startswith("cuda")
    device = torch.cuda.get_device_name() if cuda else f"cpu x{torch.get_num_threads()} threads"
    print(json.dumps({"arch": args.arch, "size": args.size, "batch_size": args.batch_size, "device": device,
                      "torch": torch.__version__, "cpus": os.cpu_count(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
