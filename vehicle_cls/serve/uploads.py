"""Turn an HTTP request body into named image inputs, enforcing the size and count limits.

Two request forms: ``multipart/form-data`` (every file part is one image) and ``application/json``
(a list of base64 strings, or ``{"images": [...]}`` whose items are base64 strings or
``{"name": ..., "data": <base64>}``). Limits raise ``UploadError`` (status + one-line message);
each image is a ``NamedInput`` (its file name, its position in the request); an entry that is
present but unreadable (bad base64) stays in the list with an ``Undecodable`` source, so the pipeline
reports it in that entry's ``error`` and the rest of the request still runs.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from vehicle_cls.errors import VehicleClsError, one_line
from vehicle_cls.io.images import ImageError, check_encoded
from vehicle_cls.io.inputs import NamedInput

MB = 1024 * 1024


SERVE_MAX_DECODE_SIDE = 2048  # the service decodes a JPEG over this reduced (an 8000 px photo at 1/2 or 1/4)


@dataclass(frozen=True)
class Limits:
    """What one request may carry and cost: files, bytes, decoded pixels per image, seconds to send it."""

    max_files: int = 16
    max_file_bytes: int = 10 * MB
    max_pixels: int = 40_000_000  # per image as decoded (a large JPEG counts reduced); two 10000^2 PNGs cost 2.6 GB
    body_timeout_s: float = 60.0  # the whole body must arrive within this (a stalled upload held its memory forever)

    def max_body_bytes(self) -> int:
        """Largest body worth reading: every file at its limit, base64-inflated, plus form overhead."""
        return self.max_files * (self.max_file_bytes * 4 // 3 + 4096) + 65536


class UploadError(VehicleClsError):
    """A request the service refuses as a whole: HTTP ``status`` and a one-line ``detail``."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = one_line(detail)


class Undecodable:
    """An entry that never was an image file (e.g. invalid base64): reading it raises its reason."""

    def __init__(self, name: str, reason: str):
        self.name = name
        self.reason = reason

    def read(self) -> bytes:
        raise ImageError(self.name, self.reason)


def _mb(n: int) -> str:
    return f"{n / MB:.1f} MB"


def check_count(n: int, limits: Limits) -> None:
    if n == 0:
        raise UploadError(400, "no image in the request: send multipart file parts or a JSON list of base64 strings")
    if n > limits.max_files:
        raise UploadError(400, f"too many images in one request: {n} (the limit is {limits.max_files})")


def check_size(name: str, size: int, limits: Limits) -> None:
    if size > limits.max_file_bytes:
        raise UploadError(413, f"{name}: {_mb(size)} is over the {_mb(limits.max_file_bytes)} per-image limit")


def refuse_oversized(sources: list[NamedInput], limits: Limits, max_side: int | None) -> list[NamedInput]:
    """``sources`` with each image whose header shows a size over the limits (``io.images.check_encoded``:
    pixels as decoded with ``max_side``, aspect ratio) replaced by an ``Undecodable`` naming why, so it
    fails alone and never reaches the model."""
    out = []
    for source in sources:
        if isinstance(source.data, bytes):
            try:
                check_encoded(source.name, source.data, max_side, limits.max_pixels)
            except ImageError as exc:
                source = NamedInput(source.name, Undecodable(source.name, exc.reason), source.index)
        out.append(source)
    return out


def sources_from_json(body: bytes, limits: Limits) -> list[NamedInput]:
    """Sources from a JSON body (see the module docstring)."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UploadError(400, f"request body is not valid JSON ({exc})") from None
    except RecursionError:
        raise UploadError(400, "request body is JSON nested too deeply") from None
    items = payload.get("images") if isinstance(payload, dict) else payload
    if not isinstance(items, list):
        raise UploadError(400, 'JSON body must be a list of base64 strings or {"images": [...]}')
    check_count(len(items), limits)
    sources: list[NamedInput] = []
    for i, item in enumerate(items):
        name, data = f"image[{i}]", item
        if isinstance(item, dict):
            name, data = str(item.get("name") or name), item.get("data")
        if not isinstance(data, str):
            reason = 'not a base64 string (give a string or {"name", "data"})'
            sources.append(NamedInput(name, Undecodable(name, reason), i))
            continue
        if "," in data[:100] and data.startswith("data:"):  # a data: URL
            data = data.split(",", 1)[1]
        check_size(name, len(data) * 3 // 4, limits)
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            sources.append(NamedInput(name, Undecodable(name, f"invalid base64 ({exc})"), i))
            continue
        sources.append(NamedInput(name, raw, i))
    return sources


async def sources_from_form(form: Any, limits: Limits) -> list[NamedInput]:
    """Sources from a parsed multipart form: every file part, in order."""
    files = [(key, value) for key, value in form.multi_items() if hasattr(value, "read") and hasattr(value, "filename")]
    check_count(len(files), limits)
    sources = []
    for i, (_, upload) in enumerate(files):
        name = upload.filename or f"image[{i}]"
        data = await upload.read()
        check_size(name, len(data), limits)
        sources.append(NamedInput(name, data, i))
    return sources
