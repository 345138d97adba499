"""The classifier's input preprocessing, stored in every bundle so inference always matches training.

Three resize modes map an image (or a crop of it) to ``input_size`` x ``input_size``:

* ``squash``: resize both sides to ``input_size`` (aspect ratio not kept; the original notebook);
* ``center_crop``: resize the shorter side to ``floor(input_size / crop_fraction)`` (longer side
  ``int(long * new_short / short)``, as torchvision's ``Resize(int)``), then take the central
  ``input_size`` square (offsets ``round((size - input_size) / 2)``, as ``CenterCrop``);
* ``letterbox``: resize the longer side to ``input_size`` (shorter side ``round(short * scale)``)
  and centre it on a square filled with the mean colour (0 after normalisation), offset
  ``(input_size - new) // 2``.

Resizing is antialiased (bilinear or bicubic with PIL's kernels, via ``torch.nn.functional.interpolate``
with ``antialias=True``) on float pixels in 0..255, clamped to 0..255, then divided by 255 and
normalised with ``mean``/``std``. ``preprocess_images`` is THE inference preprocessing;
``preprocess_tensor`` is the same for one CHW tensor (use it in training's eval transform);
``crop_resize_on_device`` does the same from boxes of a decoded image with ``roi_align``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from vehicle_cls.fromdict import strict_from_dict

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
RESIZE_MODES = ("squash", "center_crop", "letterbox")
INTERPOLATIONS = ("bilinear", "bicubic")

MAX_INPUT_SIZE = 4096  # a 100000 px input would load and then fail allocating (3 x 1e10 floats)
MIN_STD = 1e-3  # smaller divides pixel noise into huge activations (1e-300 gives inf)

ResizeMode = Literal["squash", "center_crop", "letterbox"]
Interpolation = Literal["bilinear", "bicubic"]


@dataclass
class Preprocess:
    """How an RGB uint8 image becomes the classifier's normalised NCHW float input."""

    input_size: int = 224
    resize: ResizeMode = "squash"
    mean: tuple[float, float, float] = IMAGENET_MEAN  # 0-1 RGB
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: Interpolation = "bilinear"
    crop_fraction: float = 0.875  # center_crop only: input_size / shorter side after resize

    def __post_init__(self) -> None:
        if isinstance(self.input_size, bool) or int(self.input_size) != self.input_size:
            raise ValueError(f"Preprocess.input_size must be a whole number of pixels, not {self.input_size!r}")
        self.input_size = int(self.input_size)
        self.mean = tuple(float(v) for v in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(v) for v in self.std)  # type: ignore[assignment]
        self.crop_fraction = float(self.crop_fraction)
        if not 1 <= self.input_size <= MAX_INPUT_SIZE:
            raise ValueError(f"Preprocess.input_size must be in 1..{MAX_INPUT_SIZE} pixels, not {self.input_size}")
        values = (*self.mean, *self.std)
        if len(values) == 6 and not (
            all(math.isfinite(v) for v in values)
            and all(0.0 <= m <= 1.0 for m in self.mean)
            and all(MIN_STD <= s <= 1.0 for s in self.std)
        ):
            raise ValueError(
                f"Preprocess.mean must be in [0, 1] and .std in [{MIN_STD}, 1] (0-1 RGB scale), "
                f"not mean={list(self.mean)} std={list(self.std)}"
            )
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"Preprocess.resize must be one of {RESIZE_MODES}, not {self.resize!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"Preprocess.interpolation must be one of {INTERPOLATIONS}, not {self.interpolation!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("Preprocess.mean and .std must be 3 values (RGB, 0-1), std > 0")
        if not 0.0 < self.crop_fraction <= 1.0:
            raise ValueError(f"Preprocess.crop_fraction must be in (0, 1], not {self.crop_fraction}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists)."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "", prefix: str = "preprocess.") -> Preprocess:
        """Inverse of ``to_dict``; an unknown key is an error naming ``source`` and the key (preprocessing
        must be exact)."""
        return strict_from_dict(cls, d, source=source, prefix=prefix)


def resized_size(height: float, width: float, cfg: Preprocess) -> tuple[int, int]:
    """(h, w) the image is resized to before cropping/padding, for ``cfg.resize``."""
    s = cfg.input_size
    if cfg.resize == "squash":
        return s, s
    if cfg.resize == "center_crop":
        short_target = int(math.floor(s / cfg.crop_fraction))
        short, long = (height, width) if height <= width else (width, height)
        long_target = int(short_target * long / short)
        return (short_target, long_target) if height <= width else (long_target, short_target)
    scale = s / max(height, width)  # letterbox
    return max(1, min(s, int(round(height * scale)))), max(1, min(s, int(round(width * scale))))


def _offsets(nh: int, nw: int, cfg: Preprocess) -> tuple[int, int]:
    """(top, left) of the output square inside the resized image (center_crop, >= 0) or of the
    resized image inside the output square (letterbox, >= 0); (0, 0) for squash."""
    s = cfg.input_size
    if cfg.resize == "center_crop":
        return int(round((nh - s) / 2.0)), int(round((nw - s) / 2.0))
    if cfg.resize == "letterbox":
        return (s - nh) // 2, (s - nw) // 2
    return 0, 0


def _mean_std(cfg: Preprocess, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(cfg.mean, dtype=torch.float32, device=device).view(-1, 3, 1, 1) * 255.0
    std = torch.tensor(cfg.std, dtype=torch.float32, device=device).view(-1, 3, 1, 1) * 255.0
    return mean, std


def _as_chw(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 HxWx3 array, got {image.dtype} {image.shape}")
        if not image.flags.writeable or not image.flags.c_contiguous:  # torch needs writable memory
            image = np.array(image, order="C")
        return torch.from_numpy(image).permute(2, 0, 1)
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an RGB CHW tensor, got shape {tuple(image.shape)}")
    return image


def preprocess_tensor(image: torch.Tensor, cfg: Preprocess) -> torch.Tensor:
    """One RGB CHW image (uint8, or float in 0..255) -> normalised (3, S, S) float32 on its device."""
    img = _as_chw(image).unsqueeze(0).float()
    h, w = img.shape[-2:]
    nh, nw = resized_size(h, w, cfg)
    if (nh, nw) != (h, w):
        img = F.interpolate(img, size=(nh, nw), mode=cfg.interpolation, align_corners=False, antialias=True)
        img = img.clamp_(0.0, 255.0)
    s = cfg.input_size
    top, left = _offsets(nh, nw, cfg)
    mean, std = _mean_std(cfg, img.device)
    if cfg.resize == "center_crop":
        img = img[:, :, top : top + s, left : left + s]
    out = (img - mean) / std
    if cfg.resize == "letterbox":
        canvas = out.new_zeros((1, 3, s, s))  # mean colour
        canvas[:, :, top : top + nh, left : left + nw] = out
        out = canvas
    return out[0].contiguous()


def preprocess_images(
    images: Sequence[np.ndarray | torch.Tensor], cfg: Preprocess, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """RGB uint8 HxWx3 arrays (or CHW tensors) -> normalised (N, 3, S, S) float32 on ``device``."""
    if len(images) == 0:
        return torch.zeros((0, 3, cfg.input_size, cfg.input_size), device=device)
    return torch.stack([preprocess_tensor(_as_chw(im).to(device), cfg) for im in images])


def crop_resize_on_device(image: torch.Tensor, boxes: torch.Tensor | None, cfg: Preprocess) -> torch.Tensor:
    """Crops of one RGB CHW image (uint8 or 0..255 float, any device) -> (K, 3, S, S) normalised.

    ``boxes`` are (K, 4) xyxy in original pixels (continuous coordinates: pixel i spans [i, i+1)).
    Each crop is resized per ``cfg`` with ``torchvision.ops.roi_align`` (bilinear samples averaged
    over each output pixel, adaptive sampling ratio), in one call for all boxes; this matches
    ``preprocess_images`` on the CPU crop within resampling tolerance. ``boxes=None`` is the whole
    image and gives exactly ``preprocess_tensor(image)``.
    """
    from torchvision.ops import roi_align

    if boxes is None:
        return preprocess_tensor(image, cfg).unsqueeze(0)
    img = _as_chw(image).unsqueeze(0).float()
    boxes = torch.as_tensor(boxes, dtype=torch.float32, device=img.device).reshape(-1, 4)
    s = cfg.input_size
    if len(boxes) == 0:
        return img.new_zeros((0, 3, s, s))
    rois, valid = [], []
    for x1, y1, x2, y2 in boxes.tolist():
        w, h = max(x2 - x1, 1e-3), max(y2 - y1, 1e-3)
        nh, nw = resized_size(h, w, cfg)
        top, left = _offsets(nh, nw, cfg)
        sx, sy = w / nw, h / nh  # original pixels per resized pixel
        if cfg.resize == "letterbox":  # output pixel u maps to x1 + (u - left) * sx
            rois.append((x1 - left * sx, y1 - top * sy, x1 + (s - left) * sx, y1 + (s - top) * sy))
            valid.append((top, left, nh, nw))
        else:  # squash (offsets 0, nh = nw = s) or center_crop window of the resized crop
            rois.append((x1 + left * sx, y1 + top * sy, x1 + (left + s) * sx, y1 + (top + s) * sy))
    roi_t = torch.tensor(rois, dtype=torch.float32, device=img.device)
    roi_t = torch.cat([roi_t.new_zeros((len(roi_t), 1)), roi_t], dim=1)
    crops = roi_align(img, roi_t, output_size=(s, s), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    mean, std = _mean_std(cfg, img.device)
    out = (crops - mean) / std
    if cfg.resize == "letterbox":
        keep = torch.zeros((len(out), 1, s, s), dtype=torch.bool, device=img.device)
        for i, (top, left, nh, nw) in enumerate(valid):
            keep[i, :, top : top + nh, left : left + nw] = True
        out = out * keep
    return out.contiguous()
