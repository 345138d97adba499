"""Inputs people bring: OpenCV (BGR) frames through from_bgr, http(s) URLs fetched with time and size
limits (a local server), and the swapped Pipeline(classifier) call named clearly."""
from __future__ import annotations

import http.server
import io
import re
import time

import numpy as np
import pytest
from PIL import Image

from local_servers import serve_http
from vehicle_cls import Classifier, Pipeline, from_bgr
from vehicle_cls.classifier import Preprocess
from vehicle_cls.io import urls
from vehicle_cls.io.images import ImageError, load_image
from vehicle_cls.io.inputs import expand_inputs


def _jpeg(colour=(200, 30, 10), size=(48, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


PHOTO = _jpeg()


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):  # noqa: N802 - http.server's name
        if self.path.startswith("/photo.png"):
            self._answer(200, PHOTO)
        elif self.path == "/huge":
            self.send_response(200)
            self.send_header("Content-Length", str(10**9))
            self.end_headers()
        elif self.path == "/endless":  # no length, bytes forever
            self.send_response(200)
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"x" * 65536)
            except OSError:
                pass
        elif self.path == "/slow":  # a byte now and then: every read returns, the whole never ends
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(100):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass
        else:
            self._answer(404, b"no")

    def _answer(self, code, body):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server():
    with serve_http(_Handler) as url:
        yield url


def test_url_is_fetched_and_decoded(server):
    image = load_image(f"{server}/photo.png?size=large&v=2")  # "?" must not make it a glob
    assert image.shape == (32, 48, 3) and tuple(image[0, 0]) == (200, 30, 10)


@pytest.mark.parametrize("path, reason", [
    ("/missing.jpg", "HTTP 404"),
    ("/huge", "exceeds the"),
])
def test_url_errors_are_one_line(server, path, reason):
    with pytest.raises(ImageError) as info:
        load_image(server + path)
    assert reason in str(info.value) and str(info.value).startswith(server + path) and "\n" not in str(info.value)
    assert "no such file" not in str(info.value)


def test_url_size_limit_without_a_length(server):
    with pytest.raises(urls.URLFetchError, match="exceeds the 1000000 byte limit"):
        urls.fetch_url(f"{server}/endless", max_bytes=1_000_000)


def test_url_total_time_limit(server):
    """Every read returns within the per-read timeout; the total limit still stops the fetch."""
    with pytest.raises(urls.URLFetchError) as info:
        urls.fetch_url(f"{server}/slow", timeout=0.5)
    received = int(re.fullmatch(r"timed out after 0.5 s \((\d+) bytes received\)", str(info.value)).group(1))
    assert received < 100  # stopped before the server's 100 bytes were all sent


def test_unreachable_url_is_one_line():
    with pytest.raises(ImageError, match=r"^http://127\.0\.0\.1:9/x\.jpg: cannot fetch"):
        load_image("http://127.0.0.1:9/x.jpg")


def test_url_inputs_are_not_expanded():
    items = list(expand_inputs(["https://example.com/a.jpg?x=1", "http://example.com/b*.jpg"]))
    assert [i.source for i in items] == ["https://example.com/a.jpg?x=1", "http://example.com/b*.jpg"]
    assert all(i.error is None for i in items)


@pytest.fixture(scope="module")
def clf() -> Classifier:
    return Classifier.create("resnet18", classes=["a", "b", "c"], weights=None, device="cpu",
                             preprocess=Preprocess(input_size=32, resize="squash"))


def test_pipeline_reads_urls_with_per_item_errors(server, clf):
    pipe = Pipeline(None, clf, device="cpu", num_workers=1)
    ok, missing = pipe([f"{server}/photo.png", f"{server}/missing.jpg"])
    assert ok.ok and ok.image_size == (32, 48) and ok.source == f"{server}/photo.png"
    assert not missing.ok and "HTTP 404" in missing.error


def test_from_bgr_turns_an_opencv_frame_into_rgb():
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0] = 255  # red
    bgr = rgb[..., ::-1].copy()
    assert np.array_equal(from_bgr(bgr), rgb)
    assert np.array_equal(load_image(bgr), bgr)  # without it the array is read as RGB (blue here)
    bgra = np.concatenate([bgr, np.full((4, 6, 1), 255, np.uint8)], axis=2)
    assert np.array_equal(from_bgr(bgra), rgb)
    with pytest.raises(ImageError, match="from_bgr takes an OpenCV frame"):
        from_bgr(np.zeros((4, 6), np.uint8))


def test_from_bgr_matches_opencv():
    cv2 = pytest.importorskip("cv2")
    frame = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    assert np.array_equal(from_bgr(frame), cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))


def test_pipeline_swapped_call_says_which_argument_is_which(clf):
    with pytest.raises(TypeError, match=r"Classifier was passed as the first argument.*Pipeline\(classifier=clf\)"):
        Pipeline(clf)
    with pytest.raises(TypeError, match="first argument"):
        Pipeline(clf, None)
    assert Pipeline(classifier=clf, device="cpu").cropper is None


def test_count_images_lists_folders_and_globs(tmp_path):
    from vehicle_cls.io.inputs import count_images

    for name in ("a.jpg", "b.png", "sub/c.jpg"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(PHOTO)
    (tmp_path / "empty").mkdir()
    inputs = [tmp_path, str(tmp_path / "*.jpg"), tmp_path / "empty", "missing.jpg", np.zeros((2, 2, 3), np.uint8)]
    assert count_images(inputs) == 3 + 1 + 1 + 1 + 1 == len(list(expand_inputs(inputs)))
    assert count_images(tmp_path) == 3 and count_images("https://x/y.jpg?z") == 1
    assert count_images(iter([tmp_path])) is None  # a generator is not read ahead
    (tmp_path / "clip.mp4").write_bytes(b"")
    assert count_images([tmp_path]) is None  # a video's frame count needs the decoder


def test_folder_progress_bar_has_a_total(tmp_path, clf, monkeypatch):
    import vehicle_cls.pipeline as pipeline_module

    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(PHOTO)
    totals = []
    real = pipeline_module.progress_bar
    monkeypatch.setattr(pipeline_module, "progress_bar", lambda total, *a, **k: totals.append(total) or real(total, False))
    assert len(Pipeline(None, clf, device="cpu")(tmp_path, progress=True)) == 3
    assert totals == [3]
