"""Agreement of the fast paths with fp32 on real photos: the detector (realistic weights) and the classifier.

Detector: fp32 reference vs ``set_precision("bf16")`` (the default fast path) and, with
``--all-bf16``, the whole detector in bf16: per photo, every score >= 0.5 detection of the reference
needs a same-class detection with IoU >= 0.98, and the crop the default policy chooses must be the
same box (IoU >= 0.98). Classifier: the calibrated ResNet50 of tests/cropper/test_fastpath.py (BN statistics
measured on the photos), fp32 vs its bf16 inference copy, top-1 equality.

    python benchmarks/study_agreement.py --weights model_final_faster.pkl --photos 24 --classifier-photos 320
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from bench_seed_loop import SHARED_PHOTOS, pick_photos  # noqa: E402

from vehicle_cls.classifier.fast import prepare_classifier  # noqa: E402
from vehicle_cls.cropper import Cropper, CropPolicy  # noqa: E402
from vehicle_cls.cropper.fast import DETECTOR_PARTS  # noqa: E402
from vehicle_cls.io.images import load_image  # noqa: E402


def detector_study(weights: Path, images: list[np.ndarray], all_bf16: bool) -> dict:
    from test_fastpath import agreement

    cropper = Cropper.from_checkpoint(weights)
    settings = {"fast": None, **({"all-bf16": DETECTOR_PARTS} if all_bf16 else {})}
    outs: dict[str, list] = {"fp32": [], **{k: [] for k in settings}}
    secs = dict.fromkeys(outs, 0.0)
    for image in images:  # interleaved per photo, so machine load hits all alike
        for name in outs:
            if name == "fp32":
                cropper.set_precision("fp32")
            else:
                cropper.set_precision("bf16", parts=settings[name])
            t0 = time.perf_counter()
            outs[name].append(cropper.detect([image])[0])
            secs[name] += time.perf_counter() - t0
    ref = outs["fp32"]
    result = {"photos": len(images), "detections_ge_0.5": int(sum((d.scores >= 0.5).sum() for d in ref))}
    for name in settings:
        problems, same_crop = agreement(ref, outs[name], CropPolicy())
        result[name] = {"speedup": round(secs["fp32"] / secs[name], 2), "detections_off": len(problems),
                        "same_crop": round(same_crop, 3), "first_problems": problems[:3]}
    return result


def classifier_study(images: list[np.ndarray]) -> dict:
    from test_fastpath import _calibrated_resnet50

    from vehicle_cls.classifier.preprocess import Preprocess, preprocess_images

    model, _ = _calibrated_resnet50(images[:64])
    x = preprocess_images(images, Preprocess(160), "cpu")
    fast = prepare_classifier(model, "cpu", "bf16")
    with torch.inference_mode():
        ref = torch.cat([model(x[i : i + 32]).softmax(1) for i in range(0, len(x), 32)])
        out = torch.cat([fast(x[i : i + 32].bfloat16().contiguous(memory_format=torch.channels_last)).float().softmax(1)
                         for i in range(0, len(x), 32)])
    return {"photos": len(x), "top1_equal": round(float((ref.argmax(1) == out.argmax(1)).float().mean()), 4),
            "max_abs_prob_diff": round(float((out - ref).abs().max()), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, required=True, help="faster_rcnn_R_101_FPN_3x .pkl (realistic weights)")
    ap.add_argument("--photo-dir", type=Path, default=SHARED_PHOTOS if SHARED_PHOTOS.is_dir() else ROOT / "tests" / "data")
    ap.add_argument("--photos", type=int, default=24)
    ap.add_argument("--classifier-photos", type=int, default=320)
    ap.add_argument("--all-bf16", action="store_true", help="also measure the whole detector in bf16")
    args = ap.parse_args()
    det_images = [load_image(p) for p in pick_photos(args.photo_dir, args.photos)]
    clf_images = [load_image(p) for p in pick_photos(args.photo_dir, args.classifier_photos)]
    print(json.dumps({"threads": torch.get_num_threads(), "detector": detector_study(args.weights, det_images,
                                                                                    args.all_bf16),
                      "classifier": classifier_study(clf_images)}, indent=2))


if __name__ == "__main__":
    main()
