"""``vehicle-cls crop``: crop every image of a dataset once (detector or ground-truth boxes) into a cache."""

from __future__ import annotations

import argparse

from vehicle_cls.cli import EXIT_OK, EXIT_SOME_INPUTS_FAILED

DEFAULT_ZOO = "faster_rcnn_R_101_FPN_3x"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "crop",
        help="crop a dataset once with the detector (or its ground-truth boxes) into a resumable cache",
        description=(
            "Run the Cropper over DATASET and store the crops plus manifest.jsonl in --out. "
            "Re-running with the same --out resumes: items already in the manifest are skipped. "
            "Train on the result with `--data OUT` (layout 'crops')."
        ),
    )
    p.add_argument("dataset", metavar="DATASET", help="dataset folder, CSV file or s3://bucket/prefix")
    p.add_argument("--out", required=True, help="cache folder for crops/, manifest.jsonl and cache.json")
    p.add_argument("--layout", default="auto", help="auto, stanford, kaggle, folders, csv, seed_csv (default: auto)")
    p.add_argument("--split", default="train", help="dataset split to crop (default: train)")
    p.add_argument(
        "--mode",
        choices=("detector", "gt"),
        default="detector",
        help="detector: run the Cropper; gt: crop the annotated boxes (default: detector)",
    )
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--checkpoint", help="detector checkpoint (.pkl/.pth in detectron2 model-zoo format)")
    weights.add_argument("--zoo", help=f"detector model-zoo name, downloaded once (default: {DEFAULT_ZOO})")
    p.add_argument(
        "--config",
        default=None,
        help="detector config for --checkpoint (faster_rcnn_R_101_FPN_3x or mask_rcnn_R_101_FPN_3x)",
    )
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "detectron2"))
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: cpu)")
    p.add_argument("--min-size-test", type=int, default=None, help="detector input shorter side (default 800)")
    p.add_argument("--max-size-test", type=int, default=None, help="detector input longer-side cap (default 1333)")
    pol = p.add_argument_group("crop policy (detector mode)")
    pol.add_argument(
        "--classes", nargs="+", default=["car", "truck", "bus"], help="COCO classes kept (default: car truck bus)"
    )
    pol.add_argument("--min-score", type=float, default=0.5)
    pol.add_argument("--select", choices=("largest", "score", "all"), default="largest")
    pol.add_argument("--margin", type=float, default=0.0, help="fraction of the box width/height added on each side")
    pol.add_argument("--square", action="store_true", help="grow the box to a square")
    pol.add_argument(
        "--no-fallback",
        action="store_true",
        help="record an error instead of keeping the whole image when nothing is found",
    )
    pol.add_argument("--mask", action="store_true", help="blank pixels outside the instance mask (mask model only)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument(
        "--format", dest="image_format", choices=("jpg", "png"), default="jpg", help="crop files: JPEG q95 or PNG"
    )
    p.add_argument("--retry-errors", action="store_true", help="retry items the manifest records as failed")
    p.add_argument("--endpoint-url", default=None, help="S3 endpoint for s3:// datasets (default: AWS_ENDPOINT_URL)")
    p.add_argument("--cache-dir", default=None, help="where s3:// datasets are mirrored")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def _cropper(args: argparse.Namespace):
    from vehicle_cls.cropper import Cropper, CropPolicy

    policy = CropPolicy(
        classes=tuple(args.classes),
        min_score=args.min_score,
        select=args.select,
        margin=args.margin,
        square=args.square,
        fallback=not args.no_fallback,
        mask=args.mask,
    )
    common = {"backend": args.backend, "device": args.device, "policy": policy}
    for name in ("min_size_test", "max_size_test"):
        if getattr(args, name) is not None:
            common[name] = getattr(args, name)
    if args.checkpoint:
        if args.config:
            common["config"] = args.config
        return Cropper.from_checkpoint(args.checkpoint, **common)
    return Cropper.from_zoo(args.zoo or args.config or DEFAULT_ZOO, **common)


def run(args: argparse.Namespace) -> int:
    from vehicle_cls.data import CropCache, open_dataset
    from vehicle_cls.data.s3 import is_s3_uri
    from vehicle_cls.outputs import check_output

    if not is_s3_uri(args.dataset):
        check_output(args.out, [args.dataset], directory=True)
    dataset = open_dataset(
        args.dataset, args.layout, args.split, cache_dir=args.cache_dir, endpoint_url=args.endpoint_url
    )
    cropper = _cropper(args) if args.mode == "detector" else None
    cache = CropCache(args.out)
    stats = cache.build(
        dataset,
        cropper,
        args.mode,
        batch_size=args.batch_size,
        image_format=args.image_format,
        retry_errors=args.retry_errors,
        progress=not args.no_progress,
    )
    print(
        f"{dataset.name}: {stats.total} images; {stats.cropped} cropped now ({stats.fallback} whole-image fallbacks), "
        f"{stats.already_done} already done, {stats.failed} failed; {len(dataset.problems)} malformed entries skipped"
    )
    for line in stats.errors[:10]:
        print(f"  failed: {line}")
    print(f"manifest: {cache.manifest_path}")
    return EXIT_SOME_INPUTS_FAILED if stats.failed or dataset.problems else EXIT_OK
