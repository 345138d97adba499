"""The FastAPI application: POST /predict (batched), GET /health, /info and /metrics, and GET / (a page
that sends photos to /predict and shows each with its boxes, labels, scores and JSON: ``static/index.html``).

``create_app(pipeline, ServeConfig(...))`` builds the app around one model instance. /predict takes
multipart file parts or JSON base64 (see ``uploads``) and answers a JSON list with one object per
image, what ``vehicle-cls predict`` writes per line (``index``, where results carry one, is the
image's position in the request). A request with one image that cannot
be decoded gets 422; in a request with several, a bad image only sets its own entry's ``error``.
Refused requests (too large, too many images, wrong content type, truncated, not sent within
``Limits.body_timeout_s``) get a 4xx with a one-line ``detail``. Each image's cost is bounded before
the model sees it (``uploads.refuse_oversized``: decoded pixels, aspect ratio), and a model failure is
retried image by image, so one request never fails another; error bodies carry no server paths and
no library internals (the server log has them).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import logging
import os
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.requests import ClientDisconnect

from vehicle_cls.errors import one_line
from vehicle_cls.io.inputs import NamedInput
from vehicle_cls.options import InferenceOptions
from vehicle_cls.serve.batcher import Batcher, ModelError
from vehicle_cls.serve.uploads import Limits, UploadError, refuse_oversized, sources_from_form, sources_from_json

logger = logging.getLogger(__name__)


@dataclass
class ServeConfig:
    """The inference options (``batch_size``: images per model call, ``topk``), batching wait, request limits."""

    options: InferenceOptions = field(default_factory=InferenceOptions)
    max_wait_ms: float = 10.0
    limits: Limits = field(default_factory=Limits)

    @property
    def max_batch_size(self) -> int:
        return self.options.batch_size


@dataclass
class RequestStats:
    """Per-app request counters (for /metrics)."""

    requests: int = 0
    ok: int = 0
    refused: int = 0  # 4xx
    failed: int = 0  # 5xx
    images: int = 0
    started: float = field(default_factory=time.time)


def model_info(pipeline: Any) -> dict[str, Any]:
    """What /info reports about the model: classes, preprocessing, cropper, device, decoding limit."""
    clf = pipeline.classifier
    preprocess = getattr(clf, "preprocess", None)
    cropper = getattr(pipeline, "cropper", None)
    return _without_server_paths(
        {
            "arch": getattr(clf, "arch", None),
            "backend": clf.backend.name,
            "classes": list(clf.classes),
            "num_classes": len(clf.classes),
            "preprocessing": preprocess.to_dict() if preprocess is not None else None,
            "cropper": cropper.to_config() if cropper is not None else None,
            "device": str(pipeline.device),
            "precisions": pipeline.precisions,  # what each model runs
            "max_decode_side": pipeline.options.max_decode_side,  # larger JPEGs are decoded reduced
        }
    )


def _without_server_paths(value: Any) -> Any:
    """``value`` with every absolute file path cut to its file name (clients need not know the server's
    directories, e.g. where the bundle's detector weights lie)."""
    if isinstance(value, dict):
        return {k: _without_server_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_server_paths(v) for v in value]
    if isinstance(value, str) and os.path.isabs(value):
        return os.path.basename(value.rstrip("/\\"))
    return value


_INTERNAL = re.compile(r"\((\w+(?:Error|Exception)): .*\)$")


def public_error(error: str) -> str:
    """A per-image error as a client sees it: "detector failed (RuntimeError: <torch internals>)" keeps
    the exception type only (the server log has the rest); decoding reasons are kept whole."""
    return _INTERNAL.sub(r"(\1; details in the server log)", error)


def index_page() -> str:
    """The page served at GET / (package data: one file, script and style inline, nothing fetched from elsewhere)."""
    return (importlib.resources.files("vehicle_cls.serve") / "static" / "index.html").read_text(encoding="utf-8")


def create_app(pipeline: Any, config: ServeConfig | None = None) -> FastAPI:
    """An app serving ``pipeline`` (a ``Pipeline``: ``pipeline(named_inputs, batch_size=, topk=)`` returns one
    object with ``to_dict()`` per input, carrying its name and its position in the request)."""
    from vehicle_cls import __version__

    cfg = config or ServeConfig()
    batcher = Batcher(
        lambda sources: pipeline(sources, batch_size=len(sources), topk=cfg.options.topk),
        max_batch_size=cfg.max_batch_size,
        max_wait_ms=cfg.max_wait_ms,
    )
    stats = RequestStats()
    info = model_info(pipeline)
    page = index_page()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        logger.info(
            "serving %s on %s (batches up to %d, %g ms)",
            info["arch"],
            info["device"],
            cfg.max_batch_size,
            cfg.max_wait_ms,
        )
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="vehicle-cls", version=__version__, lifespan=lifespan)
    app.state.batcher = batcher
    app.state.stats = stats

    def refuse(status: int, detail: str) -> JSONResponse:
        stats.refused += 1
        return JSONResponse({"detail": one_line(detail)}, status_code=status)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        """The page: pick or drop photos, see each one annotated with its labels, scores and JSON."""
        return HTMLResponse(page)

    @app.get("/health")
    async def health() -> JSONResponse:
        """200 while the model worker runs, 503 otherwise."""
        ok = batcher.running
        return JSONResponse({"status": "ok" if ok else "unavailable"}, status_code=200 if ok else 503)

    @app.get("/info")
    async def get_info() -> dict[str, Any]:
        """The model (classes, preprocessing, cropper, device), batching and limits."""
        return {
            **info,
            "version": __version__,
            "topk": cfg.options.topk,
            "batching": {"max_batch_size": cfg.max_batch_size, "max_wait_ms": cfg.max_wait_ms},
            "limits": asdict(cfg.limits),
        }

    @app.get("/metrics")
    async def metrics() -> dict[str, Any]:
        """Request and model-call counters: model_calls < images means requests were batched."""
        return {
            **{k: v for k, v in asdict(stats).items() if k != "started"},
            "uptime_seconds": round(time.time() - stats.started, 3),
            "queued": batcher.queued(),
            **batcher.stats.to_dict(),
        }

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        """One JSON object per image, in upload order."""
        stats.requests += 1
        try:
            sources = await _read_sources(request, cfg.limits)
        except UploadError as exc:
            return refuse(exc.status, exc.detail)
        sources = refuse_oversized(sources, cfg.limits, pipeline.options.max_decode_side)
        stats.images += len(sources)
        try:
            results = await batcher.submit(sources)
        except ModelError:  # on this request's image alone (the batcher retried a failed batch image by image)
            return refuse(422, "the model failed on an image of this request; the server log has the reason")
        except RuntimeError as exc:  # not running / shutting down
            stats.failed += 1
            return JSONResponse({"detail": one_line(exc)}, status_code=503)
        for result in results:
            if result.get("error"):
                public = public_error(result["error"])
                if public != result["error"]:
                    logger.warning("%s", result["error"])
                result["error"] = public
        if len(results) == 1 and results[0].get("error"):
            return refuse(422, results[0]["error"])
        stats.ok += 1
        return JSONResponse(results)

    return app


async def _read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The body, at most ``limit`` bytes, all of it within ``timeout_s`` (a stalled client is answered
    408 and its bytes dropped); a client that goes away is one log line, not a traceback."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise UploadError(413, f"request body is {int(declared) / 2**20:.1f} MB, over the {limit / 2**20:.1f} MB limit")
    chunks, size = [], 0
    stream = request.stream().__aiter__()
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), max(deadline - time.monotonic(), 0.0))
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            raise UploadError(408, f"request body not received within {timeout_s:g} s ({size} bytes arrived)") from None
        except ClientDisconnect:
            client = request.client.host if request.client else "client"
            logger.info("%s went away while sending its request (%d bytes read)", client, size)
            raise UploadError(400, "client disconnected before the request body was complete") from None
        size += len(chunk)
        if size > limit:
            raise UploadError(413, f"request body is over the {limit / 2**20:.1f} MB limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _check_multipart_complete(body: bytes, content_type: str) -> None:
    """A multipart body must end with its closing boundary: one cut inside a file part is a truncated
    upload (the parser would silently drop the part and report "no image")."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if match and not body.rstrip(b"\r\n").endswith(b"--" + match.group(1).encode("latin-1") + b"--"):
        raise UploadError(400, "truncated upload: the multipart body ends before its closing boundary")


async def _read_sources(request: Request, limits: Limits) -> list[NamedInput]:
    """The request's images as named inputs indexed by position (reads at most ``limits.max_body_bytes()``)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("multipart/form-data", "application/json"):
        raise UploadError(
            415,
            f"content type {kind or '(none)'!r} is not supported: "
            "send multipart/form-data files or application/json base64",
        )
    body = await _read_body(request, limits.max_body_bytes(), limits.body_timeout_s)
    if kind == "application/json":
        return sources_from_json(body, limits)
    _check_multipart_complete(body, request.headers.get("content-type", ""))

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=10_000, max_fields=10_000)
    except Exception as exc:  # starlette's multipart parser: malformed body
        raise UploadError(400, f"cannot parse the multipart body ({getattr(exc, 'detail', exc)})") from None
    try:
        return await sources_from_form(form, limits)
    finally:
        await form.close()
