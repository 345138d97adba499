"""``vehicle-cls serve --model DIR``: an HTTP service that batches concurrent requests on one model.

Needs the ``serve`` extra (FastAPI + uvicorn); both are imported only when the command runs.
"""

from __future__ import annotations

import argparse
from typing import Any

from vehicle_cls.cli.options import add_option_arguments, options_from_args

HELP = "serve a model bundle over HTTP (batched; needs the serve extra)"
DESCRIPTION = """Serve a model bundle over HTTP with request batching (pip install vehicle-cls[serve]).

  GET  /          a page: drop or pick photos, see each with its boxes, labels, scores and JSON
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
    p = subparsers.add_parser(
        "serve", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", metavar="DIR", required=True, help="model bundle directory")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=10.0,
        help="how long the first image waits for a batch to fill (default: 10)",
    )
    p.add_argument("--max-files", type=int, default=16, help="images per request (default: 16)")
    p.add_argument("--max-file-mb", type=float, default=10.0, help="size limit per image in MB (default: 10)")
    p.add_argument(
        "--max-megapixels",
        type=float,
        default=40.0,
        help="decoded pixels per image, in millions (default: 40; a large JPEG counts as decoded reduced)",
    )
    # --batch-size (alias --max-batch-size): images per model call, concurrent requests batched up to it
    add_option_arguments(p, skip=("frame_stride",), aliases={"batch_size": ("--max-batch-size",)})
    p.set_defaults(func=run)
    return p


def import_serving() -> Any:
    """``uvicorn``, or an ImportError that names the extra to install."""
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise ImportError(
            f"vehicle-cls serve needs FastAPI and uvicorn: pip install vehicle-cls[serve] ({exc})"
        ) from exc
    return uvicorn


def run(args: argparse.Namespace) -> int:
    """Load the bundle and serve until interrupted."""
    uvicorn = import_serving()
    for name in ("max_files", "port"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if args.max_wait_ms < 0 or args.max_file_mb <= 0 or args.max_megapixels <= 0:
        raise ValueError("--max-wait-ms must be >= 0, --max-file-mb and --max-megapixels > 0")
    from vehicle_cls.serve.uploads import SERVE_MAX_DECODE_SIDE, Limits

    # the service decodes large JPEGs reduced unless --max-decode-side says otherwise
    default = {} if "max_decode_side" in vars(args) else {"max_decode_side": SERVE_MAX_DECODE_SIDE}
    options = options_from_args(args, **default)

    from vehicle_cls.pipeline import Pipeline
    from vehicle_cls.serve.app import ServeConfig, create_app

    pipe = Pipeline.load(args.model, options)
    config = ServeConfig(
        options=pipe.options,
        max_wait_ms=args.max_wait_ms,
        limits=Limits(
            max_files=args.max_files,
            max_file_bytes=int(args.max_file_mb * 2**20),
            max_pixels=int(args.max_megapixels * 1e6),
        ),
    )
    uvicorn.run(create_app(pipe, config), host=args.host, port=args.port, log_level="info")
    return 0
