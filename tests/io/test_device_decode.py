"""JPEG decode on the model's device (vehicle_cls.io.device_decode, ``Pipeline(decode=...)``).

The same code runs with ``device="cpu"`` (torchvision's libjpeg decoder), which checks the plumbing
here against PIL (what ``load_image`` uses): pixels, EXIF orientation, per-item errors and fallbacks.
The nvjpeg decode itself needs CUDA (``-m gpu``).
"""
from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vehicle_cls.classifier import Classifier, Preprocess
from vehicle_cls.io.device_decode import decode_jpegs, jpeg_for_device
from vehicle_cls.io.images import ImageError, load_image
from vehicle_cls.pipeline import Pipeline

DATA = Path(__file__).parents[1] / "data"
PHOTOS = sorted(str(p) for p in DATA.glob("*/*.jpg")) + sorted(str(p) for p in DATA.glob("vehicle_photos/*/*.jpg"))


def _without_quantisation_tables(data: bytes) -> bytes:
    """A JPEG with its DQT segments removed: the header still reads, both decoders fail on the pixels."""
    out, i = bytearray(data[:2]), 2
    while i < len(data):
        marker, length = data[i + 1], int.from_bytes(data[i + 2 : i + 4], "big")
        if marker == 0xDA:  # start of scan: the rest is entropy-coded data
            return bytes(out + data[i:])
        if marker != 0xDB:
            out += data[i : i + 2 + length]
        i += 2 + length
    raise AssertionError("no start of scan")


def _rotated_jpeg(path: Path, orientation: int) -> Path:
    """A real photo cut to 100x60 (so a transpose shows), saved with EXIF ``orientation``."""
    image = Image.open(PHOTOS[0]).convert("RGB").crop((0, 20, 100, 80))
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, quality=92, exif=exif.tobytes())
    return path


def test_there_are_real_photos():
    assert len(PHOTOS) >= 20


def test_cpu_decode_equals_pil():
    encoded = [jpeg_for_device(p, None)[0] for p in PHOTOS]
    assert all(e is not None for e in encoded)
    for path, tensor in zip(PHOTOS, decode_jpegs(encoded, "cpu")):
        assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.uint8
        # torchvision's and Pillow's libjpeg-turbo give the same pixels (measured max difference: 0)
        np.testing.assert_array_equal(tensor.permute(1, 2, 0).numpy(), load_image(path), err_msg=path)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_as_load_image(tmp_path, orientation):
    path = _rotated_jpeg(tmp_path / f"o{orientation}.jpg", orientation)
    encoded, reason = jpeg_for_device(str(path), None)
    assert encoded is not None, reason
    expected = load_image(str(path))  # PIL's ImageOps.exif_transpose
    assert encoded.shape == expected.shape[:2]
    (tensor,) = decode_jpegs([encoded], "cpu")
    np.testing.assert_array_equal(tensor.permute(1, 2, 0).numpy(), expected)
    if orientation != 1:  # the test would notice an orientation left out
        assert not np.array_equal(load_image(str(path), exif_transpose=False), expected)


def test_what_device_decode_leaves_to_the_cpu(tmp_path):
    data = Path(PHOTOS[0]).read_bytes()
    png = io.BytesIO()
    Image.open(PHOTOS[0]).save(png, format="PNG")
    cmyk = io.BytesIO()
    Image.open(PHOTOS[0]).convert("CMYK").save(cmyk, format="JPEG")
    cases = {
        "PNG format": png.getvalue(),
        "CMYK": cmyk.getvalue(),
        "end marker": data[: len(data) // 2],
        "header": b"not an image at all",
    }
    for expected, source in cases.items():
        encoded, reason = jpeg_for_device(source, None)
        assert encoded is None and expected in reason, (expected, reason)
    encoded, reason = jpeg_for_device(PHOTOS[0], max_side=64)  # 100x100 > 64: reduced decode on the CPU
    assert encoded is None and "max_decode_side=64" in reason
    encoded, reason = jpeg_for_device(io.BytesIO(data), None)
    assert encoded is None and "BytesIO" in reason
    assert jpeg_for_device(data, max_side=100)[0] is not None and jpeg_for_device(Path(PHOTOS[0]), None)[0] is not None
    with pytest.raises(ImageError, match="no such file"):
        jpeg_for_device(str(tmp_path / "missing.jpg"), None)


def test_a_bad_image_in_a_device_batch_does_not_lose_the_others():
    bad = _without_quantisation_tables(Path(PHOTOS[0]).read_bytes())
    encoded = [jpeg_for_device(p, None)[0] for p in PHOTOS[:3]]
    bad_encoded = jpeg_for_device(bad, None)[0]
    assert bad_encoded is not None  # its header reads: only the decode finds out
    out = decode_jpegs([encoded[0], bad_encoded, encoded[1], encoded[2]], "cpu")
    assert isinstance(out[1], Exception)
    for path, tensor in zip(PHOTOS[:3], (out[0], out[2], out[3])):
        np.testing.assert_array_equal(tensor.permute(1, 2, 0).numpy(), load_image(path))


@pytest.fixture(scope="module")
def clf():
    torch.manual_seed(0)
    model = Classifier.create("resnet18", classes=[f"c{i}" for i in range(5)], preprocess=Preprocess(48),
                              device="cpu")
    with torch.no_grad():
        model.model.fc[-1].weight.mul_(20)  # spread the probabilities so differences show
    return model


def _summary(results):
    return [(r.source, r.error, r.image_size, [(v.box, v.class_index) for v in r]) for r in results]


def test_pipeline_device_decode_matches_cpu_decode(clf, tmp_path, caplog):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(_without_quantisation_tables(Path(PHOTOS[0]).read_bytes()))
    rotated = _rotated_jpeg(tmp_path / "rotated.jpg", 6)
    png = tmp_path / "photo.png"
    Image.open(PHOTOS[1]).save(png)
    inputs = [PHOTOS[0], str(bad), str(rotated), Path(PHOTOS[2]).read_bytes(), str(png), PHOTOS[3],
              str(tmp_path / "missing.jpg"), load_image(PHOTOS[4])]
    boxes = [(10, 10, 60, 90), None, (0, 0, 60, 100), None, None, [(5, 5, 50, 50), (20, 30, 90, 95)], None, None]
    cpu = Pipeline(None, clf, device="cpu", batch_size=4, num_workers=2, decode="cpu")(
        inputs, boxes=boxes, keep_images=True)
    with caplog.at_level(logging.INFO, logger="vehicle_cls.io.decode"):
        dev = Pipeline(None, clf, device="cpu", batch_size=4, num_workers=2, decode="device")(
            inputs, boxes=boxes, keep_images=True)
    assert _summary(dev) == _summary(cpu)
    assert [r.ok for r in dev] == [True, False, True, True, True, True, False, True]
    assert dev[1].error == cpu[1].error and "\n" not in dev[1].error and str(bad) in dev[1].error
    assert dev[2].image_size == (100, 60)  # EXIF-rotated like load_image
    for a, b in zip(dev, cpu):
        if a.ok:
            np.testing.assert_array_equal(a.image, b.image)
            np.testing.assert_allclose([p for v in a for _, p in v.topk], [p for v in b for _, p in v.topk], atol=1e-6)
    logged = caplog.text
    assert "photo.png: decoded on the CPU: PNG format" in logged
    assert "bad.jpg: device decode failed" in logged


def test_pipeline_decodes_on_device_only_where_asked(clf, monkeypatch):
    calls = []
    import vehicle_cls.io.decode as decoding_module

    real = decoding_module.decode_jpegs

    def spy(encoded, device):
        calls.append(len(encoded))
        return real(encoded, device)

    monkeypatch.setattr(decoding_module, "decode_jpegs", spy)
    photos = PHOTOS[:5]
    auto = Pipeline(None, clf, device="cpu", batch_size=4, decode="auto")(photos)  # CPU: "auto" stays on PIL
    assert calls == [] and all(r.ok for r in auto)
    dev = Pipeline(None, clf, device="cpu", batch_size=4, decode="device")(photos)
    assert calls == [4, 1]  # one batched call per pipeline batch
    assert _summary(dev) == _summary(auto)
    with pytest.raises(ValueError, match="decode must be one of"):
        Pipeline(None, clf, device="cpu", decode="gpu")


def test_cropper_takes_hwc_tensors():
    """The cropper accepts a decoded HWC uint8 tensor (what the pipeline hands it from a device decode)."""
    from vehicle_cls.cropper.cropper import _decode

    array = load_image(PHOTOS[0])
    tensor = torch.from_numpy(array.copy())
    assert _decode(tensor) is tensor
    assert isinstance(_decode(torch.zeros(3, 4, 5, dtype=torch.uint8)), np.ndarray)  # CHW: load_image's reading


# ---- CUDA ------------------------------------------------------------------------------------
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@cuda
def test_nvjpeg_decode_close_to_pil_and_pipeline_agrees(tmp_path):
    rotated = _rotated_jpeg(tmp_path / "rotated.jpg", 8)
    paths = PHOTOS + [str(rotated)]
    out = decode_jpegs([jpeg_for_device(p, None)[0] for p in paths], "cuda")
    for path, tensor in zip(paths, out):
        assert isinstance(tensor, torch.Tensor) and tensor.device.type == "cuda"
        diff = np.abs(tensor.permute(1, 2, 0).cpu().numpy().astype(int) - load_image(path).astype(int))
        # nvjpeg's IDCT and chroma upsampling are not libjpeg's: allow a few levels, on average under one
        assert diff.mean() < 1.0 and diff.max() <= 16, (path, diff.mean(), diff.max())
    torch.manual_seed(0)
    gpu = Classifier.create("resnet18", classes=[f"c{i}" for i in range(5)], preprocess=Preprocess(64),
                            device="cuda")
    pipe = Pipeline(None, gpu, device="cuda", precision="bf16")
    assert pipe._decodes_on_device()  # "auto" on CUDA with bf16 and no cropper
    dev = pipe(paths, keep_images=True)
    cpu_decode = Pipeline(None, gpu, device="cuda", precision="bf16", decode="cpu")(paths)
    assert [r.image_size for r in dev] == [r.image_size for r in cpu_decode] and all(r.ok for r in dev)
    assert isinstance(dev[0].image, np.ndarray)  # keep_images: a CPU copy
