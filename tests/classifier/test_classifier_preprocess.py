"""Preprocessing modes against hand computations (numpy / PIL written here), and crops on the device
against a reference crop-then-resize."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vehicle_cls.classifier import Preprocess, crop_resize_on_device, preprocess_images, preprocess_tensor

PHOTOS = Path(__file__).parents[1] / "data" / "predict"
MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def _photo(name: str = "car5.jpg") -> np.ndarray:
    return np.asarray(Image.open(PHOTOS / name).convert("RGB"))


def _wide_photo() -> np.ndarray:
    """A real 100x140 image (landscape), so resize modes differ."""
    a, b = _photo("car5.jpg"), _photo("truck5.jpg")
    return np.ascontiguousarray(np.concatenate([a, b[:, :40]], axis=1))


def _normalise(pixels: np.ndarray, mean=MEAN, std=STD) -> np.ndarray:
    """HxWx3 0..255 -> 3xHxW normalised, by hand."""
    return ((pixels.astype(np.float64) / 255.0 - mean) / std).transpose(2, 0, 1)


def _pil_reference(image: np.ndarray, size: int, mode: str, interpolation: str = "bilinear",
                   crop_fraction: float = 0.875) -> np.ndarray:
    """The documented preprocessing, written independently with PIL + numpy."""
    pil = Image.fromarray(image)
    w, h = pil.size
    resample = Image.BILINEAR if interpolation == "bilinear" else Image.BICUBIC
    if mode == "squash":
        return _normalise(np.asarray(pil.resize((size, size), resample)))
    if mode == "center_crop":
        short = math.floor(size / crop_fraction)
        nw, nh = (int(short * w / h), short) if h <= w else (short, int(short * h / w))
        resized = np.asarray(pil.resize((nw, nh), resample))
        top, left = int(round((nh - size) / 2)), int(round((nw - size) / 2))
        return _normalise(resized[top : top + size, left : left + size])
    scale = size / max(h, w)  # letterbox: mean-coloured square, image centred
    nw, nh = round(w * scale), round(h * scale)
    canvas = np.tile(MEAN * 255.0, (size, size, 1))
    top, left = (size - nh) // 2, (size - nw) // 2
    canvas[top : top + nh, left : left + nw] = np.asarray(pil.resize((nw, nh), resample))
    return _normalise(canvas)


# ---- exact cases (no resampling involved) ---------------------------------------------------
def test_squash_at_native_size_is_exact_normalisation():
    img = _photo()
    out = preprocess_images([img], Preprocess(100, "squash"))
    assert out.shape == (1, 3, 100, 100) and out.dtype == torch.float32
    np.testing.assert_allclose(out[0].numpy(), _normalise(img), atol=1e-5)


def test_center_crop_offsets_exact_when_no_resize_needed():
    # input 56, crop_fraction 0.875 -> shorter side 64: a 64x80 image is not resized, only cropped
    img = np.ascontiguousarray(_wide_photo()[:64, :80])
    out = preprocess_images([img], Preprocess(56, "center_crop"))[0].numpy()
    np.testing.assert_allclose(out, _normalise(img[4:60, 12:68]), atol=1e-5)  # round(8/2), round(24/2)


def test_letterbox_pads_with_mean_exactly_when_no_resize_needed():
    img = np.ascontiguousarray(_photo()[:32, :64])  # 32x64 into 64x64: scale 1, top pad 16
    cfg = Preprocess(64, "letterbox", mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))
    out = preprocess_images([img], cfg)[0].numpy()
    expected = np.zeros((3, 64, 64))
    expected[:, 16:48, :] = _normalise(img, np.array(cfg.mean), np.array(cfg.std))
    np.testing.assert_allclose(out, expected, atol=1e-5)


# ---- resampling against PIL ------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["squash", "center_crop", "letterbox"])
@pytest.mark.parametrize("size", [48, 160])  # down- and up-scaling
@pytest.mark.parametrize("portrait", [False, True])
def test_modes_match_pil_reference(mode, size, portrait):
    img = _wide_photo()
    if portrait:
        img = np.ascontiguousarray(img.transpose(1, 0, 2))
    out = preprocess_images([img, img], Preprocess(size, mode), "cpu")
    ref = _pil_reference(img, size, mode)
    assert out.shape == (2, 3, size, size)
    diff = np.abs(out[1].numpy() - ref)
    assert diff.max() < 0.03, diff.max()  # ~1.7 grey levels: PIL rounds to uint8, we do not
    assert diff.mean() < 0.01


def test_bicubic_matches_pil_reference():
    img = _wide_photo()
    out = preprocess_images([img], Preprocess(48, "center_crop", interpolation="bicubic"))[0].numpy()
    diff = np.abs(out - _pil_reference(img, 48, "center_crop", "bicubic"))
    assert diff.mean() < 0.01 and diff.max() < 0.12


def test_preprocess_tensor_accepts_chw_uint8_like_arrays():
    img = _wide_photo()
    cfg = Preprocess(40, "letterbox")
    a = preprocess_tensor(torch.from_numpy(img).permute(2, 0, 1), cfg)
    b = preprocess_images([img], cfg)[0]
    assert torch.equal(a, b)


def test_preprocess_dict_round_trip_and_validation():
    cfg = Preprocess(448, "letterbox", interpolation="bicubic", crop_fraction=0.9)
    assert Preprocess.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="resize"):
        Preprocess(224, "stretch")
    with pytest.raises(ValueError, match="unknown key preprocess.colour; known: "):
        Preprocess.from_dict({**cfg.to_dict(), "colour": "BGR"})
    with pytest.raises(ValueError, match=r"key preprocess\.interpolaton \(did you mean preprocess\.interpolation\?\)"):
        Preprocess.from_dict({**cfg.to_dict(), "interpolaton": "bicubic"})


# ---- crops on the device ---------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["squash", "center_crop", "letterbox"])
@pytest.mark.parametrize("size", [40, 160])
def test_crop_on_device_matches_crop_then_resize(mode, size):
    img = _wide_photo()
    boxes = [(10, 5, 90, 95), (50, 20, 130, 60), (0, 0, 140, 100)]
    cfg = Preprocess(size, mode)
    out = crop_resize_on_device(torch.from_numpy(img).permute(2, 0, 1), torch.tensor(boxes, dtype=torch.float32), cfg)
    assert out.shape == (3, 3, size, size)
    for crop, (x1, y1, x2, y2) in zip(out.numpy(), boxes):
        ref = _pil_reference(np.ascontiguousarray(img[y1:y2, x1:x2]), size, mode)
        diff = np.abs(crop - ref)
        # roi_align averages bilinear samples: close to PIL's antialiased resize, not bit-equal;
        # near the crop border it also sees the pixels just outside the box (PIL repeats the edge)
        assert diff.mean() < (0.04 if size < 80 else 0.015), diff.mean()
        assert np.percentile(diff, 99) < (0.25 if size < 80 else 0.06), np.percentile(diff, 99)


def test_crop_on_device_detects_a_one_pixel_shift():
    """The tolerance above is tight enough to catch an off-by-one box (so the test can fail)."""
    img = _wide_photo()
    cfg = Preprocess(160, "squash")
    shifted = crop_resize_on_device(torch.from_numpy(img).permute(2, 0, 1), torch.tensor([[11.0, 6, 91, 96]]), cfg)
    ref = _pil_reference(np.ascontiguousarray(img[5:95, 10:90]), 160, "squash")
    assert np.abs(shifted[0].numpy() - ref).mean() > 0.015


def test_crop_on_device_whole_image_is_exactly_preprocess():
    img = _wide_photo()
    cfg = Preprocess(64, "center_crop")
    a = crop_resize_on_device(torch.from_numpy(img).permute(2, 0, 1), None, cfg)
    assert torch.equal(a, preprocess_images([img], cfg))


@pytest.mark.parametrize("mode", ["squash", "center_crop"])
def test_crop_on_device_fractional_boxes_on_a_linear_ramp(mode):
    """Bilinear samples of a linear ramp are exact, so the output is known in closed form."""
    h, w = 120, 160
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    ramp = np.stack([20 + 1.25 * xs, 10 + 1.5 * ys, 30 + 0.5 * xs + 0.75 * ys], axis=0)  # CHW, 0..255
    size, cfg = 24, Preprocess(24, mode, mean=(0, 0, 0), std=(1 / 255, 1 / 255, 1 / 255))
    box = (30.25, 20.5, 110.75, 75.5)  # fractional, well inside the image
    out = crop_resize_on_device(torch.tensor(ramp, dtype=torch.float32), torch.tensor([box]), cfg)[0].numpy()
    x1, y1, x2, y2 = box
    bw, bh = x2 - x1, y2 - y1
    if mode == "squash":
        sx, sy, left, top = bw / size, bh / size, 0, 0
    else:  # shorter side -> floor(24 / 0.875) = 27, longer side int(27 * bw / bh), centre crop
        nh, nw = 27, int(27 * bw / bh)
        sx, sy, left, top = bw / nw, bh / nh, int(round((nw - size) / 2)), int(round((nh - size) / 2))
    j = np.arange(size) + 0.5
    px = x1 + (left + j) * sx - 0.5  # sample position in pixel-index coordinates
    py = y1 + (top + j) * sy - 0.5
    expected = np.stack([
        np.broadcast_to(20 + 1.25 * px[None, :], (size, size)),
        np.broadcast_to(10 + 1.5 * py[:, None], (size, size)),
        30 + 0.5 * px[None, :] + 0.75 * py[:, None],
    ])
    np.testing.assert_allclose(out, expected, atol=1e-3)
