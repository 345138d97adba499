"""load_image: every input kind decodes to the expected pixels, or fails with one ImageError naming it."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vehicle_cls.io.images import ImageError, describe_source, iter_image_files, load_image


def _jpeg_bytes(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=95, **kw)
    return buf.getvalue()


def _png_bytes(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", **kw)
    return buf.getvalue()


def _half_red(width=40, height=20) -> Image.Image:
    """Left half red, right half blue."""
    arr = np.zeros((height, width, 3), np.uint8)
    arr[:, : width // 2] = (255, 0, 0)
    arr[:, width // 2 :] = (0, 0, 255)
    return Image.fromarray(arr)


def _truncated_mid_scan() -> bytes:
    noise = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    data = _jpeg_bytes(Image.fromarray(noise))
    return data[: int(len(data) * 0.7)]


# ---------------------------------------------------------------- the bad-input table
def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda t: _write(t, "empty.jpg", b""), "empty file"),
        (lambda t: b"", "empty file"),
        (lambda t: _write(t, "cut.jpg", _jpeg_bytes(_half_red(200, 200))[:600]), "truncated"),
        (lambda t: _write(t, "cut2.jpg", _truncated_mid_scan()), "truncated"),
        (lambda t: _write(t, "notes.jpg", b"this is a text file, not a JPEG\n" * 10), "not a recognised image"),
        (lambda t: t, "is a directory"),
        (lambda t: t / "missing.jpg", "no such file"),
    ],
    ids=["empty-file", "zero-bytes", "truncated-header", "truncated-scan", "text-as-jpg", "directory", "missing-path"],
)
def test_bad_inputs_raise_one_error_naming_the_input(tmp_path, make, reason):
    source = make(tmp_path)
    with pytest.raises(ImageError) as info:
        load_image(source)
    message = str(info.value)
    assert reason in message
    assert "\n" not in message
    assert message.startswith(describe_source(source))
    if isinstance(source, Path):
        assert str(source) in message


def test_oversize_image_refused_before_decoding(tmp_path):
    path = _write(tmp_path, "big.png", _png_bytes(Image.new("RGB", (300, 200))))
    with pytest.raises(ImageError, match=r"300x200 = 60000 pixels, over the limit of 50000"):
        load_image(path, max_pixels=50_000)
    assert load_image(path, max_pixels=60_000).shape == (200, 300, 3)


def _png_claiming_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge size (a decompression bomb's header)."""
    data = bytearray(_png_bytes(Image.new("L", (1, 1))))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return bytes(data)


def test_decompression_bomb_header_is_refused(tmp_path):
    path = _write(tmp_path, "bomb.png", _png_claiming_size(60_000, 60_000))
    with pytest.raises(ImageError, match="bomb.png: .*(too large|over the limit)"):
        load_image(path)


# ---------------------------------------------------------------- modes decode to the right pixels
def test_rgba_png_composited_on_white(tmp_path):
    arr = np.zeros((2, 2, 4), np.uint8)
    arr[0, 0] = (200, 100, 50, 255)  # opaque
    arr[0, 1] = (200, 100, 50, 0)  # fully transparent -> background
    arr[1, 0] = (0, 0, 0, 128)  # half black over white
    arr[1, 1] = (10, 20, 30, 255)
    path = _write(tmp_path, "alpha.png", _png_bytes(Image.fromarray(arr, "RGBA")))
    out = load_image(path)
    assert out.tolist() == [[[200, 100, 50], [255, 255, 255]], [[127, 127, 127], [10, 20, 30]]]
    assert load_image(path, background=(0, 0, 0))[0, 1].tolist() == [0, 0, 0]


def test_palette_png_with_transparency(tmp_path):
    image = Image.new("P", (3, 1))
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    image.putdata([0, 1, 2])
    path = _write(tmp_path, "palette.png", _png_bytes(image, transparency=1))
    assert load_image(path).tolist() == [[[255, 0, 0], [255, 255, 255], [0, 0, 255]]]
    opaque = _write(tmp_path, "palette_opaque.png", _png_bytes(image))
    assert load_image(opaque).tolist() == [[[255, 0, 0], [0, 255, 0], [0, 0, 255]]]


def test_cmyk_jpeg_converted_to_rgb(tmp_path):
    cmyk = np.zeros((16, 32, 4), np.uint8)
    cmyk[:, :16] = (255, 0, 0, 0)  # pure cyan -> (0, 255, 255)
    cmyk[:, 16:] = (0, 0, 0, 255)  # pure black -> (0, 0, 0)
    path = _write(tmp_path, "cmyk.jpg", _jpeg_bytes(Image.fromarray(cmyk, "CMYK")))
    assert Image.open(path).mode == "CMYK"
    out = load_image(path).astype(int)
    np.testing.assert_allclose(out[8, 4], [0, 255, 255], atol=6)
    np.testing.assert_allclose(out[8, 28], [0, 0, 0], atol=6)


def test_16bit_png_scaled_to_8bit(tmp_path):
    arr = np.array([[0, 65535, 128 * 257, 1000]], dtype=np.uint16)
    path = _write(tmp_path, "deep.png", _png_bytes(Image.fromarray(arr)))
    out = load_image(path)
    expected = np.round(arr.astype(float) / 257).astype(np.uint8)  # 65535 -> 255
    assert out.shape == (1, 4, 3)
    assert out[..., 0].tolist() == expected.tolist()
    assert (out[..., 0] == out[..., 2]).all()


def test_grayscale_repeats_channel(tmp_path):
    arr = np.array([[0, 77, 255]], np.uint8)
    path = _write(tmp_path, "gray.png", _png_bytes(Image.fromarray(arr, "L")))
    assert load_image(path).tolist() == [[[0, 0, 0], [77, 77, 77], [255, 255, 255]]]


def test_exif_orientation_applied(tmp_path):
    image = _half_red(40, 20)  # stored landscape: red on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = _write(tmp_path, "rotated.jpg", _jpeg_bytes(image, exif=exif.tobytes()))
    out = load_image(path)
    assert out.shape == (40, 20, 3)  # displayed portrait
    assert out[5, 10, 0] > 200 and out[5, 10, 2] < 50  # stored left side is now the top
    assert out[35, 10, 2] > 200 and out[35, 10, 0] < 50
    assert load_image(path, exif_transpose=False).shape == (20, 40, 3)


# ---------------------------------------------------------------- source kinds
def test_path_str_bytes_fileobj_and_pil_agree(tmp_path):
    image = _half_red()
    png = _png_bytes(image)
    path = _write(tmp_path, "x.png", png)
    expected = np.asarray(image)
    for source in (path, str(path), png, bytearray(png), io.BytesIO(png), image):
        out = load_image(source)
        assert out.dtype == np.uint8 and out.flags.c_contiguous
        np.testing.assert_array_equal(out, expected)
    with open(path, "rb") as fh:
        np.testing.assert_array_equal(load_image(fh), expected)


def test_text_mode_file_object_refused(tmp_path):
    path = _write(tmp_path, "x.png", _png_bytes(_half_red()))
    with open(path, encoding="latin-1") as fh, pytest.raises(ImageError, match="binary mode"):
        load_image(fh)


def test_numpy_channel_orders_and_dtypes():
    rgb = np.asarray(_half_red())
    np.testing.assert_array_equal(load_image(rgb), rgb)
    np.testing.assert_array_equal(load_image(rgb[:, :, ::-1].copy(), channel_order="BGR"), rgb)
    np.testing.assert_array_equal(load_image(rgb.astype(np.float32) / 255.0), rgb)
    gray_bool = np.array([[True, False]])
    assert load_image(gray_bool).tolist() == [[[255] * 3, [0] * 3]]
    bgra = np.zeros((1, 1, 4), np.uint8)
    bgra[0, 0] = (255, 0, 0, 255)  # opaque blue in BGRA
    assert load_image(bgra, channel_order="BGR").tolist() == [[[0, 0, 255]]]


def test_torch_chw_tensor():
    rgb = np.array(_half_red())
    chw = torch.from_numpy(rgb).permute(2, 0, 1)
    np.testing.assert_array_equal(load_image(chw), rgb)
    np.testing.assert_array_equal(load_image(chw.float() / 255), rgb)


@pytest.mark.parametrize(
    "array, reason",
    [
        (np.zeros((4, 4, 5), np.uint8), "C in 1..4"),
        (np.full((2, 2, 3), np.nan, np.float32), "NaN"),
        (np.zeros((0, 4, 3), np.uint8), "no pixels"),
        (np.zeros((2, 2, 3), np.complex64), "unsupported pixel type"),
    ],
)
def test_bad_arrays(array, reason):
    with pytest.raises(ImageError, match=reason) as info:
        load_image(array)
    assert str(info.value).startswith("<ndarray shape=")


def test_unsupported_source_type():
    with pytest.raises(ImageError, match="unsupported image source type int"):
        load_image(42)


def test_iter_image_files_sorted_by_extension(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.JPG", "a.png", "sub/c.jpeg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    names = [p.relative_to(tmp_path).as_posix() for p in iter_image_files(tmp_path)]
    assert names == ["a.png", "b.JPG", "sub/c.jpeg"]
    assert [p.name for p in iter_image_files(tmp_path, recursive=False)] == ["a.png", "b.JPG"]
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / ".ipynb_checkpoints" / "a.png").write_bytes(b"x")
    (tmp_path / "._b.jpg").write_bytes(b"x")
    assert len(list(iter_image_files(tmp_path))) == 5
    visible = [p.relative_to(tmp_path).as_posix() for p in iter_image_files(tmp_path, skip_hidden=True)]
    assert visible == ["a.png", "b.JPG", "sub/c.jpeg"]
