"""Time our torch R101-FPN cropper against real detectron2, in one process, on the same inputs.

Both run the same weights (by default the synthetic ones of
:mod:`vehicle_cls.testing.synthetic`, written to a model-zoo ``.pkl``; or ``--weights`` a real zoo
file), fp32 on the CPU with the same ``torch.set_num_threads``, on the same image, at detectron2's
default test size (800/1333) and at a smaller one. Calls are interleaved (ours, detectron2, ours,
...) so that load from other processes hits both alike; the table gives the median seconds per
image and the ratio ours/detectron2 measured in this run. detectron2 is optional: without it only
our timings are printed.

    PYTHONPATH=/path/to/detectron2-source:. python benchmarks/bench_cropper.py --threads 2
"""
from __future__ import annotations

import argparse
import functools
import logging
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "tools"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from vehicle_cls import Cropper
from vehicle_cls.testing.synthetic import synthetic_d2_state_dict, write_zoo_pkl

logger = logging.getLogger("bench_cropper")


def load_image(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    """RGB uint8 HWC, upscaled with PIL bicubic to ``size`` = (height, width) when given."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if size:
            im = im.resize((size[1], size[0]), Image.BICUBIC)
        return np.ascontiguousarray(np.asarray(im))


def d2_available() -> bool:
    try:
        import detectron2  # noqa: F401
    except ImportError:
        return False
    return True


def time_calls(fns: dict, repeats: int, warmup: int) -> dict[str, list[float]]:
    """Call each function ``warmup`` then ``repeats`` times, interleaved; seconds per call."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="faster_rcnn_R_101_FPN_3x",
                        choices=["faster_rcnn_R_101_FPN_3x", "mask_rcnn_R_101_FPN_3x"])
    parser.add_argument("--weights", type=Path, help="a detectron2 zoo .pkl (default: synthetic weights)")
    parser.add_argument("--image", type=Path, default=ROOT / "tests" / "data" / "photos" / "car1.jpg")
    parser.add_argument("--resize", default="480x640", help="upscale the image to HxW first ('' to keep it)")
    parser.add_argument("--sizes", nargs="+", default=["800:1333", "480:800"], help="MIN:MAX test sizes")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-detectron2", action="store_true", help="time only our torch backend")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    torch.set_num_threads(args.threads)
    size = tuple(int(v) for v in args.resize.split("x")) if args.resize else None
    rgb = load_image(args.image, size)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    with_d2 = not args.no_detectron2 and d2_available()
    if not with_d2:
        logger.info("detectron2 not importable (or --no-detectron2): timing our backend only")

    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights
        if weights is None:
            weights = Path(tmp) / f"{args.config}_synthetic.pkl"
            write_zoo_pkl(synthetic_d2_state_dict(args.config, seed=0), weights)
        rows = []
        for spec in args.sizes:
            min_size, max_size = (int(v) for v in spec.split(":"))
            ours = Cropper.from_checkpoint(weights, config=args.config, backend="torch", device="cpu",
                                           min_size_test=min_size, max_size_test=max_size)
            fns = {"ours": functools.partial(ours.detect, [rgb])}
            if with_d2:
                from record_detectron2 import build_predictor, set_test_size

                predictor, _, _ = build_predictor(args.config, weights)
                set_test_size(predictor, (min_size, max_size))
                fns["detectron2"] = functools.partial(predictor, bgr)
            logger.info("timing %s at %d/%d ...", args.config, min_size, max_size)
            times = time_calls(fns, args.repeats, args.warmup)
            ours_s = statistics.median(times["ours"])
            d2_s = statistics.median(times["detectron2"]) if with_d2 else None
            s = min(min_size / min(rgb.shape[:2]), max_size / max(rgb.shape[:2]))
            resized = f"{int(rgb.shape[0] * s + 0.5)}x{int(rgb.shape[1] * s + 0.5)}"
            rows.append((f"{min_size}/{max_size}", resized, ours_s, min(times["ours"]), d2_s,
                         min(times["detectron2"]) if with_d2 else None))

    print(f"\n{args.config}, fp32, CPU, torch {torch.__version__}, {args.threads} threads, "
          f"{platform.processor() or platform.machine()}, image {args.image.name} {rgb.shape[0]}x{rgb.shape[1]}, "
          f"median of {args.repeats} (min in brackets)\n")
    print("| test size | resized | ours s/img | detectron2 s/img | ours / detectron2 |")
    print("|---|---|---|---|---|")
    for test, resized, o, omin, d, dmin in rows:
        d_txt = f"{d:.2f} ({dmin:.2f})" if d is not None else "n/a"
        ratio = f"{o / d:.2f}" if d is not None else "n/a"
        print(f"| {test} | {resized} | {o:.2f} ({omin:.2f}) | {d_txt} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
