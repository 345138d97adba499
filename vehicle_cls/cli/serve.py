"""``vehicle-cls serve --model DIR``: an HTTP service that batches concurrent requests on one model.

Needs the ``serve`` extra (FastAPI + uvicorn); both are imported only when the command runs.
"""
from __future__ import annotations

import argparse
from typing import Any

from vehicle_cls.cli.predict import add_pipeline_options, pipeline_options

HELP = "serve a model bundle over HTTP (batched; needs the serve extra)"
DESCRIPTION = """Serve a model bundle over HTTP with request batching (pip install vehicle-cls[serve]).

  POST /predict   multipart files, or JSON: a list of base64 strings or {"images": [{"name", "data"}]}
                  -> a JSON list, one object per image (the lines `vehicle-cls predict` writes)
  GET  /health    200 when ready       GET /info   classes, preprocessing, cropper, device, limits
  GET  /metrics   requests, images, model calls, batch sizes

Concurrent requests share model calls of up to --max-batch-size images, waiting at most
--max-wait-ms for a batch to fill. Too large: 413; too many images or no image: 400; wrong
content type: 415; a single image that cannot be decoded: 422 (in a multi-image request only its
own entry has "error" set). Each image's cost is bounded before the model sees it: JPEGs over 2048 px
are decoded reduced (--max-decode-side), larger decoded sizes (--max-megapixels) and strips (one side
over 50 times the other) are refused for that image; a body not sent within 60 s gets 408."""


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``serve`` subcommand."""
    p = subparsers.add_parser("serve", help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", metavar="DIR", required=True, help="model bundle directory")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... or auto (default: auto)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                   help="auto (default): the fast path where it keeps agreement with fp32 (bf16 on CPUs with "
                        "native bf16 and on CUDA); fp32: the exact reference")
    p.add_argument("--no-crop", action="store_true", help="classify whole images (ignore the bundle's cropper)")
    p.add_argument("--max-batch-size", type=int, default=16, help="images per model call (default: 16)")
    p.add_argument("--max-wait-ms", type=float, default=10.0,
                   help="how long the first image waits for a batch to fill (default: 10)")
    p.add_argument("--max-files", type=int, default=16, help="images per request (default: 16)")
    p.add_argument("--max-file-mb", type=float, default=10.0, help="size limit per image in MB (default: 10)")
    p.add_argument("--max-megapixels", type=float, default=40.0,
                   help="decoded pixels per image, in millions (default: 40; a large JPEG counts as decoded reduced)")
    p.add_argument("--topk", type=int, default=5, help="classes listed per image (default: 5)")
    p.add_argument("--num-workers", type=int, default=2, help="image decoding threads (default: 2)")
    add_pipeline_options(p)
    p.set_defaults(func=run)
    return p


def import_serving() -> Any:
    """``uvicorn``, or an ImportError that names the extra to install."""
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise ImportError("vehicle-cls serve needs FastAPI and uvicorn: "
                          f"pip install vehicle-cls[serve] ({exc})") from exc
    return uvicorn


def run(args: argparse.Namespace) -> int:
    """Load the bundle and serve until interrupted."""
    uvicorn = import_serving()
    for name in ("max_batch_size", "max_files", "topk", "port"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if args.max_wait_ms < 0 or args.max_file_mb <= 0 or args.max_megapixels <= 0:
        raise ValueError("--max-wait-ms must be >= 0, --max-file-mb and --max-megapixels > 0")
    options = pipeline_options(args)

    from vehicle_cls.pipeline import Pipeline
    from vehicle_cls.runtime import resolve_device
    from vehicle_cls.serve.app import ServeConfig, create_app
    from vehicle_cls.serve.uploads import SERVE_MAX_DECODE_SIDE, Limits

    options.setdefault("max_decode_side", SERVE_MAX_DECODE_SIDE)  # the service decodes large JPEGs reduced

    device = str(resolve_device(args.device))
    pipe = Pipeline.load(args.model, device=device, cropper=not args.no_crop, precision=args.precision,
                         batch_size=args.max_batch_size, num_workers=args.num_workers, **options)
    config = ServeConfig(max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms, topk=args.topk,
                         limits=Limits(max_files=args.max_files, max_file_bytes=int(args.max_file_mb * 2**20),
                                       max_pixels=int(args.max_megapixels * 1e6)))
    uvicorn.run(create_app(pipe, config), host=args.host, port=args.port, log_level="info")
    return 0
