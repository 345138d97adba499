"""detectron2's test-time input pipeline: RGB -> BGR, PIL bilinear resize, mean subtraction, pad to 32."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

#: detectron2's MODEL.PIXEL_MEAN for the MSRA-initialised R101 models (BGR order, 0-255 scale).
PIXEL_MEAN_BGR = (103.530, 116.280, 123.675)


def resized_shape(height: int, width: int, short_edge: int = 800, max_size: int = 1333) -> tuple[int, int]:
    """(new_h, new_w) as ResizeShortestEdge.get_output_shape computes it (``int(x + 0.5)``)."""
    size = short_edge * 1.0
    scale = size / min(height, width)
    if height < width:
        newh, neww = size, scale * width
    else:
        newh, neww = scale * height, size
    if max(newh, neww) > max_size:
        scale = max_size * 1.0 / max(newh, neww)
        newh = newh * scale
        neww = neww * scale
    return int(newh + 0.5), int(neww + 0.5)


def resize_bgr(image_bgr: np.ndarray, new_h: int, new_w: int) -> np.ndarray:
    """Resize an HxWx3 uint8 image with PIL bilinear (antialiased when shrinking), like detectron2."""
    pil = Image.fromarray(np.ascontiguousarray(image_bgr))
    return np.asarray(pil.resize((new_w, new_h), Image.Resampling.BILINEAR))


def preprocess_image(image_rgb: np.ndarray, short_edge: int = 800, max_size: int = 1333) -> torch.Tensor:
    """RGB uint8 HxWx3 -> resized BGR float32 CHW tensor (not yet normalized)."""
    h, w = image_rgb.shape[:2]
    new_h, new_w = resized_shape(h, w, short_edge, max_size)
    resized = resize_bgr(image_rgb[:, :, ::-1], new_h, new_w)
    return torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1))).float()


def batch_images(
    images: list[torch.Tensor], pixel_mean: torch.Tensor, size_divisibility: int = 32
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Subtract the mean, then zero-pad bottom/right to a common size divisible by ``size_divisibility``."""
    sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
    max_h = max(s[0] for s in sizes)
    max_w = max(s[1] for s in sizes)
    if size_divisibility > 1:
        max_h = (max_h + size_divisibility - 1) // size_divisibility * size_divisibility
        max_w = (max_w + size_divisibility - 1) // size_divisibility * size_divisibility
    batch = images[0].new_zeros((len(images), images[0].shape[0], max_h, max_w))
    for im, pad in zip(images, batch):
        pad[:, : im.shape[-2], : im.shape[-1]].copy_(im - pixel_mean)
    return batch, sizes


def preprocess_on_device(
    image_rgb: np.ndarray | torch.Tensor, short_edge: int, max_size: int, device: torch.device | str
) -> torch.Tensor:
    """``preprocess_image`` on ``device`` (the CUDA path): RGB uint8 HxWx3 -> resized BGR float32 CHW.

    The upload is pinned and non-blocking; the resize is torch's bilinear (antialiased when
    shrinking) rounded to whole 0..255 levels like PIL's uint8 output: within a level or two of
    PIL, not bit-equal, so the exact fp32 CPU reference keeps using PIL.
    """
    device = torch.device(device)
    h, w = image_rgb.shape[:2]
    new_h, new_w = resized_shape(h, w, short_edge, max_size)
    if isinstance(image_rgb, torch.Tensor):
        tensor = image_rgb
    else:
        array = np.ascontiguousarray(image_rgb)
        tensor = torch.from_numpy(array if array.flags.writeable else array.copy())
    if device.type == "cuda" and tensor.device.type == "cpu":
        tensor = tensor.pin_memory()
    tensor = tensor.to(device, non_blocking=True).permute(2, 0, 1).flip(0).float()[None]
    shrink = new_h < h or new_w < w
    out = F.interpolate(tensor, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=shrink)
    return out[0].round_().clamp_(0, 255)
