"""Reliability of image reading (issue #9 items 1, 9, 13): special files never hang, odd files get a
reason that says what is wrong, and huge JPEGs decode reduced when the caller needs fewer pixels."""
from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vehicle_cls.io import images
from vehicle_cls.io.images import ImageError, iter_image_files, load_image

PHOTOS = Path(__file__).parents[1] / "data" / "predict"
needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")


def _release(fifo: Path) -> None:
    """Unblock a reader stuck on ``fifo`` (old code): open its write end and close it (EOF)."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


def _call_with_deadline(fn, fifo: Path, seconds: float = 20.0):
    """Run ``fn`` in a thread; fail (instead of hanging the suite) when it does not return in time."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    hung = thread.is_alive()
    if hung:
        _release(fifo)
        thread.join(5)
    assert not hung, f"reading {fifo} blocked for {seconds} s"
    return box


@needs_fifo
def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    box = _call_with_deadline(lambda: load_image(fifo), fifo)
    assert isinstance(box.get("error"), ImageError), box
    message = str(box["error"])
    assert str(fifo) in message and "not a regular file" in message and "FIFO" in message
    assert "\n" not in message


@needs_fifo
def test_folder_with_a_fifo_goes_on(tmp_path, caplog):
    (tmp_path / "a.jpg").write_bytes((PHOTOS / "car5.jpg").read_bytes())
    os.mkfifo(tmp_path / "b.jpg")
    with caplog.at_level(logging.WARNING, logger="vehicle_cls.io.images"):
        files = list(iter_image_files(tmp_path))
    assert files == [tmp_path / "a.jpg"]
    assert any("b.jpg" in r.getMessage() and "not a regular file" in r.getMessage() for r in caplog.records)


@needs_fifo
def test_input_folder_walk_skips_a_fifo_with_a_video_name_and_says_so(tmp_path, caplog):
    """Pipeline inputs walk folders with the same walker as datasets: a FIFO named like a video
    (whose opening by OpenCV would block) is skipped with a warning, the image still comes through."""
    from vehicle_cls.io.inputs import expand_inputs

    (tmp_path / "a.jpg").write_bytes((PHOTOS / "car5.jpg").read_bytes())
    os.mkfifo(tmp_path / "clip.mp4")
    with caplog.at_level(logging.WARNING, logger="vehicle_cls.io.images"):
        items = list(expand_inputs(tmp_path))
    assert [i.name for i in items] == [str(tmp_path / "a.jpg")] and items[0].error is None
    assert any("clip.mp4" in r.getMessage() and "FIFO" in r.getMessage() for r in caplog.records)


@needs_fifo
def test_pipeline_gives_the_fifo_an_error_and_classifies_the_rest(tmp_path):
    from vehicle_cls import Pipeline
    from vehicle_cls.classifier import Classifier, Preprocess

    torch.manual_seed(0)
    clf = Classifier.create("resnet18", classes=["a", "b"], preprocess=Preprocess(32, "squash"))
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    pipe = Pipeline(None, clf, device="cpu")
    box = _call_with_deadline(lambda: list(pipe([str(fifo), str(PHOTOS / "car5.jpg")], batch_size=2)), fifo)
    assert "error" not in box, box
    bad, good = box["value"]
    assert bad.error is not None and "not a regular file" in bad.error
    assert good.error is None and good.best.label in ("a", "b")


@needs_fifo
def test_cli_predict_does_not_hang_on_a_fifo(tmp_path):
    from vehicle_cls.classifier import Classifier, Preprocess

    torch.manual_seed(0)
    model = tmp_path / "model"
    Classifier.create("resnet18", classes=["a", "b"], preprocess=Preprocess(32, "squash")).save(model)
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    script = ("import argparse, sys; from vehicle_cls.cli import predict; "
              "p = argparse.ArgumentParser(prog='vehicle-cls'); predict.register(p.add_subparsers()); "
              "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))")
    out = tmp_path / "preds.jsonl"
    try:
        run = subprocess.run([sys.executable, "-c", script, "predict", str(fifo), str(PHOTOS / "car5.jpg"),
                              "--model", str(model), "--out", str(out)],
                             capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        _release(fifo)
        pytest.fail("vehicle-cls predict hung on a FIFO")
    assert run.returncode == 3, run.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert "not a regular file" in rows[0]["error"] and rows[1]["error"] is None


def test_symlink_loop_and_broken_link_say_so(tmp_path):
    loop = tmp_path / "loop.jpg"
    loop.symlink_to(loop)
    with pytest.raises(ImageError, match="symbolic link loop"):
        load_image(loop)
    broken = tmp_path / "broken.jpg"
    broken.symlink_to(tmp_path / "gone.jpg")
    with pytest.raises(ImageError, match="broken symbolic link.*gone.jpg"):
        load_image(broken)


def test_heic_names_the_missing_plugin(tmp_path):
    # the start of a real HEIC file: an ISO-BMFF 'ftyp' box with brand 'heic' (compatible mif1, heic)
    head = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00\x00\x01\x00meta" + bytes(256)
    path = tmp_path / "IMG_0001.HEIC"
    path.write_bytes(head)
    with pytest.raises(ImageError, match="pillow-heif") as info:
        load_image(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("fmt", ["GIF", "TIFF"])
def test_multi_frame_image_logs_that_it_uses_frame_one(tmp_path, caplog, fmt):
    frames = [Image.new("RGB", (16, 12), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    path = tmp_path / f"anim.{fmt.lower()}"
    frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:])
    with caplog.at_level(logging.WARNING, logger="vehicle_cls.io.images"):
        pixels = load_image(path)
    assert tuple(pixels[0, 0]) == (255, 0, 0) or pixels[0, 0, 0] > 200  # frame 1 (GIF palette may shift)
    messages = [r.getMessage() for r in caplog.records]
    assert any(str(path) in m and "3 frames" in m and "first frame" in m for m in messages), messages


def _big_jpeg(tmp_path: Path, width: int, height: int) -> Path:
    yy, xx = np.mgrid[0:height, 0:width]
    array = np.stack([(xx * 255 // width), (yy * 255 // height), np.full_like(xx, 90)], -1).astype(np.uint8)
    path = tmp_path / "big.jpg"
    Image.fromarray(array).save(path, quality=90)
    return path


def test_max_side_decodes_a_large_jpeg_reduced(tmp_path):
    path = _big_jpeg(tmp_path, 4000, 3000)
    full = load_image(path)
    pixels, size = images.load_image_reduced(path, 800)
    assert size == (4000, 3000)
    # the JPEG decoder's own 1/4 scale: the smallest of 1/2, 1/4, 1/8 whose longer side stays >= 800
    assert pixels.shape == (750, 1000, 3)
    assert load_image(path, max_side=800).shape == (750, 1000, 3)
    # the reduced decode is the image, not garbage: close to a box-filtered full decode
    pooled = full.reshape(750, 4, 1000, 4, 3).mean(axis=(1, 3))
    assert np.abs(pooled - pixels.astype(np.float64)).mean() < 4.0
    assert load_image(path, max_side=5000).shape == full.shape  # never upscaled, never below max_side


def test_max_side_keeps_the_original_size_under_exif_rotation(tmp_path):
    path = _big_jpeg(tmp_path, 1600, 800)
    image = Image.open(path)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    rotated = tmp_path / "rotated.jpg"
    image.save(rotated, exif=exif, quality=90)
    pixels, size = images.load_image_reduced(rotated, 400)
    assert size == (800, 1600)
    assert pixels.shape == (400, 200, 3)  # 1/4 scale: 400x200, turned upright (its longer side 400 = max_side)


def test_max_side_on_non_jpeg_and_arrays_is_full_size(tmp_path):
    png = tmp_path / "x.png"
    Image.new("RGB", (300, 200), (1, 2, 3)).save(png)
    pixels, size = images.load_image_reduced(png, 50)
    assert pixels.shape == (200, 300, 3) and size == (300, 200)
    array = np.zeros((20, 30, 3), np.uint8)
    assert images.load_image_reduced(array, 10)[1] == (30, 20)
    with pytest.raises(ValueError, match="max_side"):
        load_image(io.BytesIO(png.read_bytes()), max_side=0)


@needs_fifo
def test_stanford_header_probe_skips_a_fifo(tmp_path):
    from vehicle_cls.data.stanford import _image_size

    fifo = tmp_path / "00001.jpg"
    os.mkfifo(fifo)
    box = _call_with_deadline(lambda: _image_size(fifo), fifo)
    assert box == {"value": None}
