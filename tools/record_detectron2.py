"""Record real detectron2's R101-FPN outputs as parity fixtures for our torch port.

The model-zoo weights cannot be shipped, so detectron2 is run on the deterministic synthetic
weights of :mod:`vehicle_cls.testing.synthetic`, written to a model-zoo ``.pkl`` and loaded through
detectron2's own ``DetectionCheckpointer``; the models are built from detectron2's own model-zoo
configs (``COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml``,
``COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x.yaml``) on the CPU. The inputs are the real
photos of ``tests/data/photos`` upscaled (PIL bicubic) to a few sizes and aspect ratios.
Single images go through ``DefaultPredictor`` (BGR input, ``ResizeShortestEdge``); one batch per
config goes through ``model([...])`` with exactly DefaultPredictor's preprocessing.

Output, in ``tests/data/d2_reference/``:

* ``reference.json``: versions, seed, and for every case its config, test sizes, whether it was
  batched, the input images (photo, size, resample, sha256 of the RGB array) and detection counts;
* ``<case>.npz`` (compressed): per image ``i``: ``boxes_i`` (N,4) float32 xyxy in original pixels,
  ``scores_i`` (N,) float32, ``classes_i`` (N,) int64 contiguous COCO ids, and for the mask config
  ``masks_i`` = ``np.packbits`` of the (N,H,W) bool masks, flattened, with ``mask_shape_i``.

detectron2 is not a dependency of this project and is never vendored in it. Run this tool in an
environment where it is importable, for example::

    PYTHONPATH=/path/to/detectron2-source:. python tools/record_detectron2.py

(``import detectron2`` must work; its C++ extension is not needed for R101-FPN inference, and the
source tree needs ``detectron2/model_zoo/configs`` to point at its top-level ``configs/``.)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # allow `python tools/record_detectron2.py` from a checkout
    sys.path.insert(0, str(ROOT))

from vehicle_cls.testing.synthetic import synthetic_d2_state_dict, write_zoo_pkl

logger = logging.getLogger("record_detectron2")

#: our config name -> detectron2 model-zoo config file.
ZOO_CONFIGS = {
    "faster_rcnn_R_101_FPN_3x": "COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml",
    "mask_rcnn_R_101_FPN_3x": "COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x.yaml",
}
DEFAULT_TEST = (800, 1333)  # detectron2's INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST
SMALL_TEST = (480, 800)
# Buffers a detectron2 model has that checkpoints do not carry (non-persistent or regenerated).
_NOT_IN_CHECKPOINT = ("pixel_mean", "pixel_std", "cell_anchors")


@dataclass(frozen=True)
class Case:
    """One recorded call: an image (or a batch) through one config at one test size."""

    name: str
    config: str
    images: tuple[tuple[str, tuple[int, int]], ...]  # (photo file, (height, width) after upscaling)
    test_size: tuple[int, int]
    batched: bool = False


FASTER, MASK = "faster_rcnn_R_101_FPN_3x", "mask_rcnn_R_101_FPN_3x"
CASES: tuple[Case, ...] = (
    Case("faster_car_800", FASTER, (("car1.jpg", (480, 640)),), DEFAULT_TEST),
    Case("faster_truck_480", FASTER, (("truck10.jpg", (600, 400)),), SMALL_TEST),
    Case("faster_minibus_480", FASTER, (("minibus1.jpg", (333, 500)),), SMALL_TEST),
    Case("faster_juggernaut_480", FASTER, (("juggernaut10.jpg", (480, 640)),), SMALL_TEST),
    Case(
        "faster_batch_480",
        FASTER,
        (("car1.jpg", (480, 640)), ("bike1.jpg", (600, 400)), ("minibus1.jpg", (333, 500))),
        SMALL_TEST,
        batched=True,
    ),
    Case("mask_truck_800", MASK, (("truck10.jpg", (600, 400)),), DEFAULT_TEST),
    Case("mask_car_480", MASK, (("car1.jpg", (333, 500)),), SMALL_TEST),
    Case("mask_bike_480", MASK, (("bike1.jpg", (480, 640)),), SMALL_TEST),
    Case(
        "mask_batch_480",
        MASK,
        (("juggernaut10.jpg", (480, 640)), ("truck10.jpg", (333, 500))),
        SMALL_TEST,
        batched=True,
    ),
)


def load_rgb(photo: Path, size: tuple[int, int]) -> np.ndarray:
    """Open a photo as RGB uint8 HWC and upscale it to ``size`` = (height, width), PIL bicubic."""
    from PIL import Image

    with Image.open(photo) as im:
        im = im.convert("RGB").resize((size[1], size[0]), Image.BICUBIC)
        return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))


def _git_commit(path: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def build_predictor(config: str, weights: Path):
    """Build detectron2's own model for ``config`` on the CPU and load ``weights`` (a zoo .pkl)."""
    import torch
    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.engine import DefaultPredictor

    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(ZOO_CONFIGS[config]))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = str(weights)
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = DEFAULT_TEST
    predictor = DefaultPredictor(cfg)  # loads through DetectionCheckpointer
    assert predictor.input_format == "BGR"
    return predictor, cfg, torch


def check_loaded(model, state: dict[str, np.ndarray]) -> None:
    """Assert the checkpoint's key set is the model's and every tensor was loaded unchanged."""
    model_sd = model.state_dict()
    model_keys = {k for k in model_sd if not any(s in k for s in _NOT_IN_CHECKPOINT)}
    missing, unexpected = model_keys - set(state), set(state) - model_keys
    assert not missing and not unexpected, f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
    for k in model_keys:
        got = model_sd[k].detach().cpu().numpy()
        assert got.shape == state[k].shape and np.array_equal(got, state[k]), f"{k} not loaded as written"


def set_test_size(predictor, test_size: tuple[int, int]) -> None:
    """Make ``predictor`` resize as ``INPUT.MIN_SIZE_TEST/MAX_SIZE_TEST = test_size`` would."""
    from detectron2.data import transforms as T

    predictor.aug = T.ResizeShortestEdge([test_size[0], test_size[0]], test_size[1])


def run_batch(predictor, torch, bgr_images: list[np.ndarray]) -> list[dict]:
    """``model([...])`` on several BGR images with exactly ``DefaultPredictor``'s preprocessing."""
    inputs = []
    for img in bgr_images:
        height, width = img.shape[:2]
        image = predictor.aug.get_transform(img).apply_image(img)
        image = torch.as_tensor(image.astype("float32").transpose(2, 0, 1))
        inputs.append({"image": image, "height": height, "width": width})
    with torch.no_grad():
        return predictor.model(inputs)


def to_arrays(instances, index: int, with_masks: bool) -> dict[str, np.ndarray]:
    inst = instances.to("cpu")
    out = {
        f"boxes_{index}": inst.pred_boxes.tensor.numpy().astype(np.float32),
        f"scores_{index}": inst.scores.numpy().astype(np.float32),
        f"classes_{index}": inst.pred_classes.numpy().astype(np.int64),
    }
    if with_masks:
        masks = inst.pred_masks.numpy().astype(bool)
        out[f"masks_{index}"] = np.packbits(masks.reshape(-1))
        out[f"mask_shape_{index}"] = np.asarray(masks.shape, dtype=np.int64)
    return out


def record(out_dir: Path, photos: Path, seed: int, only: set[str] | None = None) -> dict:
    import detectron2
    import PIL
    import torch
    import torchvision

    out_dir.mkdir(parents=True, exist_ok=True)
    d2_root = Path(detectron2.__file__).resolve().parents[1]
    meta = {
        "description": "detectron2 outputs on synthetic R101-FPN weights; see tools/record_detectron2.py",
        "detectron2_version": detectron2.__version__,
        "detectron2_commit": os.environ.get("DETECTRON2_COMMIT") or _git_commit(d2_root),
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "numpy_version": np.__version__,
        "pillow_version": PIL.__version__,
        "torch_num_threads": torch.get_num_threads(),
        "seed": seed,
        "weights": "vehicle_cls.testing.synthetic.synthetic_d2_state_dict(config, seed)",
        "input": "RGB photo upscaled with PIL bicubic, reversed to BGR for detectron2 (as DefaultPredictor expects)",
        "recorded_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cases": [],
    }
    for config, zoo_config in ZOO_CONFIGS.items():
        cases = [c for c in CASES if c.config == config and (only is None or c.name in only)]
        if not cases:
            continue
        state = synthetic_d2_state_dict(config, seed=seed)
        with tempfile.TemporaryDirectory() as tmp:
            pkl = Path(tmp) / f"{config}_synthetic_seed{seed}.pkl"
            write_zoo_pkl(state, pkl)
            predictor, _, _ = build_predictor(config, pkl)
        check_loaded(predictor.model, state)
        del state
        with_masks = config == MASK
        for case in cases:
            set_test_size(predictor, case.test_size)
            rgbs = [load_rgb(photos / p, size) for p, size in case.images]
            bgrs = [np.ascontiguousarray(rgb[:, :, ::-1]) for rgb in rgbs]
            t0 = time.perf_counter()
            if case.batched:
                outputs = run_batch(predictor, torch, bgrs)
            else:
                outputs = [predictor(bgrs[0])]
            elapsed = time.perf_counter() - t0
            arrays: dict[str, np.ndarray] = {}
            images_meta = []
            for i, ((photo, size), rgb, out) in enumerate(zip(case.images, rgbs, outputs)):
                arrays.update(to_arrays(out["instances"], i, with_masks))
                classes = arrays[f"classes_{i}"]
                images_meta.append(
                    {
                        "photo": photo,
                        "size": list(size),
                        "resample": "bicubic",
                        "rgb_sha256": hashlib.sha256(rgb.tobytes()).hexdigest(),
                        "num_detections": len(classes),
                        "classes": sorted({int(c) for c in classes}),
                    }
                )
                logger.info(
                    "%s[%d] %s %s: %d detections, classes %s, max score %.3f",
                    case.name, i, photo, size, len(classes),
                    np.bincount(classes, minlength=1).nonzero()[0].tolist(),
                    float(arrays[f"scores_{i}"].max(initial=0.0)),
                )
            np.savez_compressed(out_dir / f"{case.name}.npz", **arrays)
            meta["cases"].append(
                {
                    "name": case.name,
                    "config": config,
                    "zoo_config": zoo_config,
                    "min_size_test": case.test_size[0],
                    "max_size_test": case.test_size[1],
                    "batched": case.batched,
                    "file": f"{case.name}.npz",
                    "images": images_meta,
                    "seconds": round(elapsed, 2),
                }
            )
            logger.info("%s: %.1f s", case.name, elapsed)
        del predictor
    with open(out_dir / "reference.json", "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "d2_reference")
    parser.add_argument("--photos", type=Path, default=ROOT / "tests" / "data" / "photos")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", help="record only these case names (for experiments)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        import detectron2  # noqa: F401
    except ImportError:
        logger.error("detectron2 is not importable; put its source on PYTHONPATH (see this file's docstring)")
        return 2
    record(args.out, args.photos, args.seed, set(args.only) if args.only else None)
    total = sum(p.stat().st_size for p in args.out.iterdir() if p.is_file())
    logger.info("wrote %s (%.0f KB)", args.out, total / 1024)
    return 0


if __name__ == "__main__":
    sys.exit(main())
