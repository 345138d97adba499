"""Drawing results: each vehicle's box, mask, label and score on the image, or a failed input's error
in red (what ``Result.plot`` and ``vehicle-cls predict --save-images`` show)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:  # results imports this module (Result.plot): no runtime import back
    from vehicle_cls.results import Result

PALETTE = ((40, 200, 60), (30, 144, 255), (255, 160, 0), (200, 60, 200), (0, 200, 200), (240, 220, 40))
ERROR_COLOR = (220, 40, 40)


def draw_result(pil: Image.Image, result: Result, line_width: int | None = None, masks: bool = True) -> Image.Image:
    """Annotate a copy of ``pil`` with each vehicle's box (one colour per vehicle), mask and label,
    or the error (red). Boxes are in the coordinates of ``result.image_size``; another image size
    (e.g. an enlarged copy, or the reduced decode kept by the pipeline) is drawn scaled to fit, masks too."""
    pil = pil.convert("RGB").copy()
    sx = sy = 1.0
    if result.image_size is not None:
        sy, sx = pil.height / result.image_size[0], pil.width / result.image_size[1]
    if masks:
        pil = _blend_masks(pil, result)
    draw = ImageDraw.Draw(pil)
    width = line_width or max(1, round(min(pil.size) / 150))
    font = _font(max(10, min(pil.size) // 20))
    if not result.ok:
        _label(draw, (0.0, 0.0), result.error or "", ERROR_COLOR, font)
        return pil
    if not result.vehicles:
        _label(draw, (0.0, 0.0), "no vehicle", ERROR_COLOR, font)
    for i, v in enumerate(result.vehicles):
        color = PALETTE[i % len(PALETTE)]
        text = f"{v.label} {v.score:.2f}" if v.label is not None and v.score is not None else "?"
        if v.fallback:
            text += " (whole image)"
        if v.box is None:
            _label(draw, (0.0, 0.0), text, color, font)
            continue
        box = (v.box[0] * sx, v.box[1] * sy, v.box[2] * sx, v.box[3] * sy)
        draw.rectangle(box, outline=color, width=width)
        _label(draw, (box[0], box[1]), text, color, font)
    return pil


def _blend_masks(pil: Image.Image, result: Result) -> Image.Image:
    """Tint each vehicle's mask, resized to the image when it differs, with its colour (40 % opacity)."""
    arr = None
    for i, v in enumerate(result.vehicles):
        if v.mask is None or v.mask.ndim != 2 or not v.mask.any():
            continue
        mask = np.asarray(v.mask, dtype=bool)
        if mask.shape != (pil.height, pil.width):
            mask = np.asarray(Image.fromarray(mask).resize(pil.size, Image.Resampling.NEAREST), dtype=bool)
        if arr is None:
            arr = np.asarray(pil, dtype=np.float32).copy()
        color = np.asarray(PALETTE[i % len(PALETTE)], dtype=np.float32)
        arr[mask] = 0.6 * arr[mask] + 0.4 * color
    return pil if arr is None else Image.fromarray(arr.round().astype(np.uint8))


def _label(
    draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, color: tuple[int, int, int], font: Any
) -> None:
    """``text`` in white on a ``color`` box just above ``xy`` (below it at the image top)."""
    x, y = xy
    left, top, right, bottom = draw.textbbox((x, y), text, font=font)
    y = max(0.0, y - (bottom - top) - 2)
    left, top, right, bottom = draw.textbbox((x, y), text, font=font)
    draw.rectangle([left - 1, top - 1, right + 1, bottom + 1], fill=color)
    draw.text((x, y), text, fill=(255, 255, 255), font=font)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size bitmap font
        return ImageFont.load_default()
