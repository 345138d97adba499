"""JPEG decoding on the model's device (nvjpeg through ``torchvision.io.decode_jpeg(device="cuda")``).

The background decode threads only read the file and its header (``jpeg_for_device``); the pixels
are decoded for a whole batch at once (``decode_jpegs``, the batched list form nvjpeg prefers) and
stay on the device, where the detector's preprocessing and the classifier's crop cutting use them.
EXIF orientation is applied here (torchvision applies it on the CPU only) exactly as
``ImageOps.exif_transpose`` does. What device decoding cannot take (not a JPEG, CMYK, larger than
``max_decode_side``, no end marker) is left to the CPU decoder, with the reason returned.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from vehicle_cls.io.images import DEFAULT_MAX_PIXELS, read_image_file

DECODES = ("auto", "cpu", "device")
_EXIF_ORIENTATION = 0x0112


@dataclass
class EncodedJpeg:
    """A JPEG's bytes and header, read in a decode thread, waiting for the batched device decode."""

    data: torch.Tensor  # 1-D uint8 on the CPU (decode_jpeg's input, whatever the output device)
    height: int  # stored size, before EXIF orientation
    width: int
    orientation: int = 1  # EXIF orientation 1..8

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) as displayed, i.e. after the EXIF orientation."""
        return (self.width, self.height) if self.orientation in (5, 6, 7, 8) else (self.height, self.width)


def jpeg_for_device(
    source: Any, max_side: int | None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[EncodedJpeg | None, str]:
    """The JPEG at ``source`` (a path or bytes) ready for ``decode_jpegs``, or (None, why the CPU
    decoder must take it). A path that cannot be read raises ``ImageError``, as ``load_image`` does."""
    if isinstance(source, (str, os.PathLike)):
        data = read_image_file(source)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        return None, f"a {type(source).__name__} input, not a path or bytes"
    try:
        header = Image.open(io.BytesIO(data))
        fmt, mode, (width, height) = header.format, header.mode, header.size
        orientation = int(header.getexif().get(_EXIF_ORIENTATION, 1)) if fmt == "JPEG" else 1
    except Exception as exc:
        return None, f"header not read as a JPEG ({type(exc).__name__})"
    if fmt != "JPEG":
        return None, f"{fmt or 'unknown'} format, not JPEG"
    if mode not in ("RGB", "L"):
        return None, f"JPEG in {mode} mode (device decode takes RGB and greyscale)"
    if width * height > max_pixels or width <= 0 or height <= 0:
        return None, f"{width}x{height} is outside the pixel limit"
    if max_side is not None and max(width, height) > max_side:
        return None, f"{width}x{height} is larger than max_decode_side={max_side} (decoded reduced on the CPU)"
    if data.rstrip(b"\0")[-2:] != b"\xff\xd9":
        return None, "no JPEG end marker (truncated or trailing data)"
    if orientation not in range(1, 9):
        orientation = 1  # PIL's exif_transpose ignores unknown values too
    tensor = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return EncodedJpeg(tensor, int(height), int(width), orientation), ""


def apply_orientation(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """A CHW image turned as EXIF ``orientation`` says (the transposes of ``ImageOps.exif_transpose``)."""
    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-2, -1)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return image.transpose(-2, -1).contiguous()
    if orientation == 6:
        return image.transpose(-2, -1).flip(-1)
    if orientation == 7:
        return image.transpose(-2, -1).flip(-2, -1)
    if orientation == 8:
        return image.transpose(-2, -1).flip(-2)
    return image


def decode_jpegs(encoded: list[EncodedJpeg], device: torch.device | str) -> list[torch.Tensor | Exception]:
    """RGB uint8 CHW tensors on ``device`` for ``encoded`` (one batched call; when it fails, one call per
    image), oriented as displayed; an image that cannot be decoded gets its exception instead."""
    from torchvision.io import ImageReadMode, decode_jpeg

    device = torch.device(device)
    if not encoded:
        return []
    outs: list[Any]
    try:
        outs = list(decode_jpeg([e.data for e in encoded], mode=ImageReadMode.RGB, device=device))
    except Exception:  # no partial results from a batch: find the bad ones one by one
        outs = []
        for e in encoded:
            try:
                outs.append(decode_jpeg(e.data, mode=ImageReadMode.RGB, device=device))
            except Exception as exc:
                outs.append(exc)
    result: list[torch.Tensor | Exception] = []
    for e, out in zip(encoded, outs):
        if isinstance(out, torch.Tensor) and tuple(out.shape) != (3, e.height, e.width):
            out = ValueError(f"decoded to {tuple(out.shape)}, header says 3x{e.height}x{e.width}")
        result.append(apply_orientation(out, e.orientation) if isinstance(out, torch.Tensor) else out)
    return result
