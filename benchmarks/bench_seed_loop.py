"""The seed project's loop vs our ``Pipeline`` (fp32 and the fast path), same photos, same process.

The seed loop: detectron2's predictor one image at a time (our torch backend in fp32 stands for
it: measured at the same speed, see bench_cropper.py), the largest car/truck/bus box, a numpy crop,
the ResNet50 classifier in fp32 one crop at a time. Against it: ``Pipeline(cropper, classifier,
precision="fp32")`` and ``Pipeline(..., precision="auto")`` (the fast path where the machine has
one). Variants run round robin, ``--repeats`` times, best run kept; peak RSS is sampled per run.
``bf16-all`` also runs the detector's backbone and heads in bf16: faster, but it does not keep
agreement with fp32 (see cropper.fast.DETECTOR_LOW_PRECISION_PARTS); it shows what that costs and buys.
Also measured in the same run: the fast classifier's achieved FLOP/s on ready batches as a fraction
of a plain bf16 (CUDA: fp16) matmul's rate, and the roofline (roofline.py): the pipeline's FLOPs per
image against the machine's fp32 and bf16 conv rates, i.e. the largest speed-up over the seed loop
that the same arithmetic could reach here; each variant's achieved GFLOP/s is reported against it.

    python benchmarks/bench_seed_loop.py --weights model_final_faster.pkl      # 16 photos, CPU
    python benchmarks/bench_seed_loop.py --device cuda --weights ... --images 64

Without ``--weights`` the project's synthetic R101-FPN weights are used (fewer detections than
the calibrated ones of ../shared/weights: pass those for realistic figures). Photos: ``--photos``
(default ../shared/data/vehicle_types when present, else tests/data); the classifier has random
weights (speed does not depend on their values).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vehicle_cls.classifier import Classifier  # noqa: E402
from vehicle_cls.cropper import Cropper, CropPolicy, cut  # noqa: E402
from vehicle_cls.cropper.fast import DETECTOR_PARTS  # noqa: E402
from vehicle_cls.io.images import load_image  # noqa: E402
from vehicle_cls.pipeline import Pipeline  # noqa: E402
from vehicle_cls.runtime import AUTOCAST_DTYPES, resolve_precision  # noqa: E402

from roofline import roofline, sync  # noqa: E402  (benchmarks/roofline.py)

SHARED_PHOTOS = ROOT.parent / "shared" / "data" / "vehicle_types"


class PeakRSS:
    """Peak resident memory (MiB) of this process while the block runs, sampled every 10 ms."""

    def __enter__(self) -> PeakRSS:
        self.peak = _rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _rss_mib())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mib())


def _rss_mib() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pick_photos(folder: Path, n: int) -> list[str]:
    """``n`` photos spread evenly over the sorted list of ``folder``'s JPEGs (all classes)."""
    files = sorted(str(p) for p in folder.rglob("*.jpg"))
    if not files:
        raise SystemExit(f"no .jpg under {folder}")
    step = max(1, len(files) // n)
    return (files[::step] * n)[:n]


def seed_loop(cropper: Cropper, clf: Classifier, paths: list[str]) -> int:
    """detectron2-style: one image at a time, largest vehicle box, numpy crop, one crop at a time, fp32."""
    policy = CropPolicy(select="largest")
    done = 0
    for path in paths:
        image = load_image(path)
        det = cropper.detect([image], grouping="single")[0]
        choice = policy.choose(det)[0]
        crop = cut(image, choice, policy.mask_fill)
        clf.predict_proba_images([crop], "fp32")
        done += 1
    return done


def classifier_flops_fraction(clf: Classifier, precision: str, batch: int, seconds: float) -> dict:
    """Achieved FLOP/s of the classifier on ready batches vs a square matmul in the matching dtype."""
    from torch.utils.flop_counter import FlopCounterMode

    dev = clf.device
    size = clf.preprocess.input_size
    x = torch.randn(batch, 3, size, size, device=dev)
    with FlopCounterMode(display=False) as counter:
        clf.predict_proba(x[:1], "fp32")
    flops_per_image = counter.get_total_flops()

    def rate(fn, work: float) -> float:
        fn()
        sync(dev)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            fn()
            n += 1
        sync(dev)
        return n * work / (time.perf_counter() - t0)

    mm_dtype = torch.float16 if dev.type == "cuda" else torch.bfloat16
    side = 4096 if dev.type == "cuda" else 2048
    a = torch.randn(side, side, device=dev, dtype=mm_dtype)
    b = torch.randn(side, side, device=dev, dtype=mm_dtype)
    matmul = model = 0.0
    for _ in range(3):  # alternate, best of three: load from other processes hits both alike
        matmul = max(matmul, rate(lambda: torch.mm(a, b), 2.0 * side**3))
        model = max(model, rate(lambda: clf.predict_proba(x, precision), flops_per_image * batch))
    return {"precision": precision, "batch": batch, "gflop_per_image": round(flops_per_image / 1e9, 2),
            "classifier_gflops": round(model / 1e9, 1), f"{mm_dtype}_matmul_gflops".replace("torch.", ""):
            round(matmul / 1e9, 1), "fraction": round(model / matmul, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, help="detectron2 faster_rcnn_R_101_FPN_3x .pkl (default: synthetic)")
    ap.add_argument("--photos", type=Path, default=SHARED_PHOTOS if SHARED_PHOTOS.is_dir() else ROOT / "tests" / "data")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    ap.add_argument("--variants", default="seed,fp32,auto,bf16-all",
                    help="comma list of seed, fp32, auto, bf16, fp16, bf16-all (the whole detector in bf16: "
                         "faster, but does NOT keep agreement with fp32)")
    ap.add_argument("--matmul-seconds", type=float, default=2.0, help="per timing burst (3 bursts each)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    paths = pick_photos(args.photos, args.images)
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights
        if weights is None:
            from vehicle_cls.testing.synthetic import synthetic_d2_state_dict, write_zoo_pkl

            weights = Path(tmp) / "synthetic.pkl"
            write_zoo_pkl(synthetic_d2_state_dict("faster_rcnn_R_101_FPN_3x", seed=0), weights)
        cropper = Cropper.from_checkpoint(weights, device=device)
    clf = Classifier.create("resnet50", classes=[f"c{i}" for i in range(6)], weights=None, device=device)

    def run(variant: str, photos: list[str]) -> tuple[float, float]:
        """(images/s, peak RSS MiB) of one pass; switching the cropper's precision is not timed."""
        if variant == "seed":
            cropper.set_precision("fp32")
            clf.model.to(memory_format=torch.contiguous_format)
            work = lambda: seed_loop(cropper, clf, photos)  # noqa: E731
        else:
            precision = variant.removesuffix("-all")
            pipe = Pipeline(cropper, clf, device=device, batch_size=args.batch_size, precision=precision,
                            channels_last=variant != "fp32")
            if variant.endswith("-all"):
                cropper.set_precision(precision, parts=DETECTOR_PARTS)

            def work() -> int:
                preds = pipe(photos)
                assert all(p.ok for p in preds), [p.error for p in preds if not p.ok]
                return len(preds)
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            n = work()
            sync(device)
            dt = time.perf_counter() - t0
        return n / dt, mem.peak

    variants = args.variants.split(",")
    resolved = {v: "fp32" if v == "seed" else resolve_precision(v.removesuffix("-all"), device) for v in variants}
    for v in variants:  # warm-up: first-call allocations
        run(v, paths[:2])
    best = {v: 0.0 for v in variants}
    peak = {v: 0.0 for v in variants}
    for _ in range(args.repeats):  # round robin: load from other processes hits every variant alike
        for v in variants:
            ips, mib = run(v, paths)
            best[v] = max(best[v], ips)
            peak[v] = max(peak[v], mib)
    base = best.get("seed") or next(iter(best.values()))
    rows = [{"variant": v, "precision": resolved[v], "images_per_s": round(best[v], 3),
             "ratio_to_seed": round(best[v] / base, 2), "peak_rss_mib": round(peak[v])} for v in variants]
    fast = resolve_precision("auto", device)
    flops = classifier_flops_fraction(clf, fast, 32, args.matmul_seconds)
    cropper.set_precision("fp32")
    roof = roofline(cropper, load_image(paths[0]), flops["gflop_per_image"], 1.0 / base,
                    AUTOCAST_DTYPES.get(fast) or torch.bfloat16, seconds=args.matmul_seconds / 2)
    per_image = roof["detector_gflop_per_image"] + roof["classifier_gflop_per_image"]
    for row in rows:
        row["achieved_gflops"] = round(row["images_per_s"] * per_image, 1)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {os.cpu_count()} cpus")
    print(json.dumps({"device": name, "torch": torch.__version__, "weights": str(args.weights or "synthetic"),
                      "photos": f"{len(paths)} from {args.photos}", "batch_size": args.batch_size,
                      "repeats": args.repeats, "load_avg_1min": round(os.getloadavg()[0], 2), "results": rows,
                      "classifier_vs_matmul": flops, "roofline": roof}, indent=2))
    if device.type == "cuda":
        print(json.dumps({"cuda_peak_mib": round(torch.cuda.max_memory_allocated(device) / 2**20)}))


if __name__ == "__main__":
    main()
