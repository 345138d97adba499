"""The detector's ROI heads on the CPU: the reference (torchvision ``roi_align``, fc1 as a matmul) vs the
fast copy (``roi_align_bag``, fc1 as a 7x7 conv), on the same features and real proposals, interleaved.

    python benchmarks/bench_roi_heads.py --weights model_final_faster.pkl --images 4
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_seed_loop import SHARED_PHOTOS, pick_photos  # noqa: E402

from vehicle_cls.cropper import Cropper  # noqa: E402
from vehicle_cls.cropper.transforms import batch_images, preprocess_image  # noqa: E402
from vehicle_cls.io.images import load_image  # noqa: E402


def best_times(runs: dict, repeats: int) -> dict[str, float]:
    """Best wall time of each callable in ``runs`` over ``repeats`` interleaved rounds."""
    best: dict[str, float] = {}
    for _ in range(repeats):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)
    return best


def max_diff(runs: dict) -> float:
    """Largest absolute difference between the outputs of the two callables in ``runs``."""
    first, second = (fn() for fn in runs.values())
    return float((first - second).abs().max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, required=True, help="detectron2 faster_rcnn_R_101_FPN_3x .pkl")
    ap.add_argument("--photos", type=Path, default=SHARED_PHOTOS if SHARED_PHOTOS.is_dir() else ROOT / "tests" / "data")
    ap.add_argument("--images", type=int, default=4, help="photos timed (as in bench_seed_loop.py)")
    ap.add_argument("--repeats", type=int, default=4)
    args = ap.parse_args()
    cropper = Cropper.from_checkpoint(args.weights, device="cpu", precision="bf16")
    ref, fast, s = cropper.backend.model, cropper.backend._fast, cropper.settings
    diffs = {"pooled": 0.0, "box_head": 0.0}
    totals = dict.fromkeys(("pool_torchvision", "pool_bag", "fc_head_matmul", "fc_head_conv"), 0.0)
    proposals_seen = 0
    with torch.inference_mode():
        for path in pick_photos(args.photos, args.images):
            image = preprocess_image(load_image(path), s.min_size_test, s.max_size_test)
            batch, sizes = batch_images([image], fast.pixel_mean, fast.backbone.size_divisibility)
            features = fast.backbone(batch.contiguous(memory_format=torch.channels_last))
            proposals = [p[0] for p in fast.proposal_generator(features, sizes)]
            proposals_seen += len(proposals[0])
            feats = [features[f] for f in fast.roi_heads.in_features]
            pools = {"pool_torchvision": lambda: ref.roi_heads.box_pooler(feats, proposals),  # noqa: B023
                     "pool_bag": lambda: fast.roi_heads.box_pooler(feats, proposals)}  # noqa: B023
            pooled = pools["pool_torchvision"]()
            pooled_cl = pooled.contiguous(memory_format=torch.channels_last)  # as the fast pooler gives it
            heads = {"fc_head_matmul": lambda: ref.roi_heads.box_head(pooled),  # noqa: B023
                     "fc_head_conv": lambda: fast.roi_heads.box_head(pooled_cl)}  # noqa: B023
            for runs, key in ((pools, "pooled"), (heads, "box_head")):
                for name, seconds in best_times(runs, args.repeats).items():
                    totals[name] += seconds
                diffs[key] = max(diffs[key], max_diff(runs))
    n = args.images
    print(json.dumps({"threads": torch.get_num_threads(), "photos": n, "proposals_per_photo": proposals_seen / n,
                      "ms_per_photo": {k: round(1000 * v / n, 1) for k, v in totals.items()},
                      "pool_speedup": round(totals["pool_torchvision"] / totals["pool_bag"], 2),
                      "fc_head_speedup": round(totals["fc_head_matmul"] / totals["fc_head_conv"], 2),
                      "max_abs_diff": diffs}, indent=2))


if __name__ == "__main__":
    main()
