"""ONNX Runtime vs the torch CPU paths: the R101-FPN detector alone and the whole pipeline.

One process, one run: the same photos (upscaled with PIL bicubic to ``--sizes``, detectron2's
default test size 800/1333 unless ``--min-size``), the same thread count for torch
(``torch.set_num_threads``) and ORT (``intra_op_num_threads``); calls interleaved (torch fp32,
torch fast path, ORT, ...) so load from other processes hits all alike; median seconds per image.
Also prints the agreement ORT vs torch fp32 (max |box| / |score| difference after matching rows by
class and IoU, since near-equal scores may come in another order), the condition for ORT to be a
default. Weights: ``--weights`` a zoo .pkl (e.g. the calibrated ones of ../shared/weights, realistic
detection counts) or the synthetic test weights.

    PYTHONPATH=. python benchmarks/bench_onnx.py --threads 2 --weights /tmp/real_faster.pkl
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vehicle_cls import Classifier, Cropper, Pipeline
from vehicle_cls.export.pipeline import export_pipeline, match_detections
from vehicle_cls.onnx import Pipeline as OnnxPipeline
from vehicle_cls.testing.synthetic import synthetic_d2_state_dict, write_zoo_pkl


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def photos(directory: Path, count: int, sizes: list[tuple[int, int]], out: Path) -> list[Path]:
    """``count`` photos, each at every (height, width) of ``sizes``, written as PNG under ``out``."""
    paths = []
    for src in sorted(directory.rglob("*.jpg"))[:count]:
        with Image.open(src) as im:
            for h, w in sizes:
                path = out / f"{src.stem}_{h}x{w}.png"
                im.convert("RGB").resize((w, h), Image.BICUBIC).save(path)
                paths.append(path)
    return paths


def median_per_image(fns: dict, inputs: list, repeats: int) -> dict[str, float]:
    """Median seconds per input of each ``fn(input)``, calls interleaved, after one warm-up each."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for x in inputs[:1]:
        for fn in fns.values():
            fn(x)
    for _ in range(repeats):
        for x in inputs:
            for name, fn in fns.items():
                t = time.perf_counter()
                fn(x)
                times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--weights", type=Path, help="detectron2 zoo .pkl (default: the synthetic test weights)")
    ap.add_argument("--photos", type=Path, default=ROOT / "tests" / "data" / "photos")
    ap.add_argument("--count", type=int, default=3, help="photos (each at every size)")
    ap.add_argument("--sizes", default="480x640,640x480", help="HxW the photos are upscaled to")
    ap.add_argument("--min-size", type=int, default=800)
    ap.add_argument("--max-size", type=int, default=1333)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--agreement-only", action="store_true", help="skip the timings")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = args.weights
        if weights is None:
            weights = tmp / "synthetic.pkl"
            write_zoo_pkl(synthetic_d2_state_dict(), weights)
        images = photos(args.photos, args.count, sizes, tmp)
        cropper = Cropper.from_checkpoint(weights, device="cpu", min_size_test=args.min_size,
                                          max_size_test=args.max_size)
        classifier = Classifier.create("resnet50", classes=["a", "b", "c", "d", "e", "f"], weights=None)
        exact = Pipeline(cropper, classifier, device="cpu", precision="fp32")
        t = time.perf_counter()
        export_pipeline(exact, tmp / "export")
        export_s = time.perf_counter() - t
        ort_pipe = OnnxPipeline(tmp / "export", threads=args.threads)
        arrays = [np.asarray(Image.open(p).convert("RGB")) for p in images]

        # agreement ORT vs torch fp32 (the reference)
        box = score = 0.0
        same_count = True
        reordered = other = 0
        for a in arrays:
            want, got = cropper.detect([a])[0], ort_pipe.detect(a)
            pairs = match_detections(want, got)
            if pairs is None:  # some detection has no twin: do those the policy can choose (>= 0.5) all match?
                other += 1
                both = match_detections(want, got, min_score=0.5), match_detections(got, want, min_score=0.5)
                same_count &= both[0] is not None and both[1] is not None
                pairs = both[0]
            if pairs:
                i, j = np.asarray(pairs).T
                reordered += int((i != j).sum())
                box = max(box, float(np.abs(want.boxes[i] - got.boxes[j]).max()))
                score = max(score, float(np.abs(want.scores[i] - got.scores[j]).max()))
        if args.agreement_only:
            print(json.dumps({"cpu": cpu_name(), "images": len(images), "sizes": args.sizes,
                              "images_all_detections_matched": len(images) - other,
                              "score_ge_0.5_matched_everywhere": bool(same_count), "rows_in_another_order": reordered,
                              "max_box_diff_px": box, "max_score_diff": score}))
            return

        fast_cropper = Cropper.from_checkpoint(weights, device="cpu", min_size_test=args.min_size,
                                               max_size_test=args.max_size, precision="auto")
        detector = median_per_image({
            "torch fp32": lambda a: cropper.detect([a]),
            f"torch fast ({fast_cropper.backend.precision})": lambda a: fast_cropper.detect([a]),
            "onnxruntime": ort_pipe.detect,
        }, arrays, args.repeats)
        fast = Pipeline(fast_cropper, classifier, device="cpu", precision="auto")
        pipeline = median_per_image({
            "torch fp32": lambda p: exact([p], batch_size=1),
            f"torch fast ({fast.precision})": lambda p: fast([p], batch_size=1),
            "onnxruntime": lambda p: ort_pipe([p]),
        }, images, args.repeats)
    report = {
        "cpu": cpu_name(), "threads": args.threads, "torch": torch.__version__,
        "onnxruntime": __import__("onnxruntime").__version__, "weights": str(args.weights or "synthetic"),
        "images": len(images), "sizes": args.sizes, "test_size": [args.min_size, args.max_size],
        "export_s": round(export_s, 1),
        "agreement_ort_vs_torch_fp32": {"images_all_detections_matched": len(images) - other,
                                        "score_ge_0.5_matched_everywhere": bool(same_count),
                                        "rows_in_another_order": reordered,
                                        "max_box_diff_px": box, "max_score_diff": score},
        "detector_s_per_image": {k: round(v, 3) for k, v in detector.items()},
        "pipeline_s_per_image": {k: round(v, 3) for k, v in pipeline.items()},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
