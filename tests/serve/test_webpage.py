"""The page `vehicle-cls serve` shows at GET /, driven in a real headless browser (Debian's chromium).

The server runs on 127.0.0.1 with a tiny classifier and a stand-in detector that finds two boxes in
every photo; what the page shows for a photo is compared with what POST /predict answers for the same
file. Without chromium and chromedriver (or selenium) the browser tests skip on a developer's machine,
saying why; under CI (``CI`` set) they fail instead, since ``.ci/run`` installs them.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from local_servers import UvicornServer

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from vehicle_cls import Classifier, Pipeline  # noqa: E402
from vehicle_cls.classifier import Preprocess  # noqa: E402
from vehicle_cls.cropper import CropPolicy  # noqa: E402
from vehicle_cls.options import InferenceOptions  # noqa: E402
from vehicle_cls.results import Detections  # noqa: E402
from vehicle_cls.serve.app import ServeConfig, create_app  # noqa: E402
from vehicle_cls.testing.stand_ins import StandInCropper  # noqa: E402

PHOTOS = sorted((Path(__file__).parents[1] / "data" / "predict").glob("*.jpg"))
CLASSES = ["bike", "car", "juggernaut", "minibus", "pickup", "truck"]
PALETTE = [(40, 200, 60), (30, 144, 255)]  # the page's first two box colours (vehicle_cls/plotting.py's)
WAIT_S = 120  # for the page's answers; generous: the test machine may be loaded


class TwoBoxes(StandInCropper):
    """A detector stand-in: a car and a truck at fixed fractions of every image."""

    def __init__(self):
        self.policy = CropPolicy(select="all")

    def detect(self, images, batch_size=None):
        out = []
        for im in images:
            h, w = im.shape[:2]
            boxes = [[0.1 * w, 0.2 * h, 0.5 * w, 0.8 * h], [0.55 * w, 0.3 * h, 0.9 * w, 0.9 * h]]
            out.append(Detections(np.round(boxes), [0.9, 0.8], [2, 7], image_size=(h, w)))
        return out


@pytest.fixture(scope="module")
def server():
    import torch

    torch.manual_seed(0)
    clf = Classifier.create("resnet18", classes=CLASSES, weights=None,
                            preprocess=Preprocess(input_size=64, resize="squash"))
    pipe = Pipeline(TwoBoxes(), clf, device="cpu", num_workers=0, precision="fp32")
    # one image per model call: the page's answers and the test's own requests are computed alike, bit for bit
    app = create_app(pipe, ServeConfig(InferenceOptions(batch_size=1, topk=3), max_wait_ms=0))
    with UvicornServer(app) as srv:
        yield srv


def api(url: str, path: Path) -> tuple[int, dict]:
    """What POST /predict answers for ``path`` alone: (status, its one result or the refusal)."""
    resp = httpx.post(url + "/predict", files=[("file", (path.name, path.read_bytes(), "image/jpeg"))], timeout=60)
    body = resp.json()
    return resp.status_code, body[0] if resp.status_code == 200 else body


def test_the_page_is_served_at_the_root_and_needs_nothing_from_elsewhere(server):
    resp = httpx.get(server.url + "/", timeout=30)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    page = resp.text
    assert '<input id="files" type="file"' in page and "multiple" in page and 'id="drop"' in page
    assert "://" not in page and " src=" not in page and "<link" not in page  # no CDN, no second file: works offline
    assert "/" not in httpx.get(server.url + "/openapi.json", timeout=30).json()["paths"]  # not an API route


# ---- in the browser --------------------------------------------------------------------------------------------


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (Debian: apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless chromium through its chromedriver, both Debian's (selenium downloads nothing)."""
    reason = _browser_missing()
    if reason:
        if _in_ci():
            pytest.fail(f"CI must run the browser test: {reason}; .ci/run installs them")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    flags = ["--headless=new", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--disable-sync",
             "--disable-background-networking", "--disable-component-update", "--disable-quic",
             f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"]
    if os.geteuid() == 0:
        flags.append("--no-sandbox")  # chromium refuses to run as root with its sandbox
    for flag in flags:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _sections(driver, count: int) -> list:
    """The page's result sections once ``count`` of them are answered (no longer "pending"), top to bottom."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    def answered(d):
        found = d.find_elements(By.CSS_SELECTOR, "section.result")
        return found if len(found) >= count and all(s.get_attribute("data-state") != "pending" for s in found) else None

    try:
        return WebDriverWait(driver, WAIT_S).until(answered)[:count]
    except TimeoutException:
        shown = [(s.get_attribute("data-source"), s.get_attribute("data-state"))
                 for s in driver.find_elements(By.CSS_SELECTOR, "section.result")]
        pytest.fail(f"the page did not show {count} answered photos within {WAIT_S} s; it shows {shown}")


def _text(element, css: str) -> str:
    from selenium.webdriver.common.by import By

    return element.find_element(By.CSS_SELECTOR, css).get_attribute("textContent")


def _check_shown(driver, section, path: Path, want: dict) -> None:
    """``section`` shows ``want`` (the API's answer for ``path``): its JSON, labels, scores and the drawing."""
    from PIL import Image
    from selenium.webdriver.common.by import By

    assert section.get_attribute("data-state") == "done" and section.get_attribute("data-source") == path.name
    assert json.loads(_text(section, "pre.json")) == want
    items = section.find_elements(By.CSS_SELECTOR, "li.vehicle")
    assert len(items) == len(want["vehicles"]) == 2
    for item, vehicle in zip(items, want["vehicles"]):
        assert _text(item, ".label") == vehicle["label"]
        assert abs(float(_text(item, ".score")) - vehicle["score"]) <= 0.0005 + 1e-9
    canvas = section.find_element(By.TAG_NAME, "canvas")
    height, width = want["image_size"]
    pixels = driver.execute_script(
        "const c = arguments[0]; return [c.width, c.height, Array.from(c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data)];", canvas)
    assert pixels[:2] == [width, height]
    drawn = np.asarray(pixels[2], np.uint8).reshape(height, width, 4)[..., :3].astype(int)
    photo = np.asarray(Image.open(path).convert("RGB"), int)
    for vehicle, color in zip(want["vehicles"], PALETTE):  # each box's bottom edge, in its colour
        x1, _, x2, y2 = (round(v) for v in vehicle["box"])
        assert np.abs(drawn[y2, (x1 + x2) // 2] - color).max() <= 2, (vehicle["box"], drawn[y2, (x1 + x2) // 2])
    x1, y1, x2, y2 = (round(v) for v in want["vehicles"][0]["box"])
    inside = (slice(y1 + 2, y2 - 1), slice(x1 + 2, x2 - 1))  # the photo itself within the first box
    assert np.abs(drawn[inside] - photo[inside]).mean() < 8 and drawn[inside].std() > 5


def test_picked_photos_are_shown_with_their_boxes_labels_and_json_and_a_bad_file_with_its_error(
        browser, server, tmp_path):
    from selenium.webdriver.common.by import By

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    picked = [PHOTOS[0], broken, PHOTOS[1]]
    browser.get(server.url + "/")
    browser.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in picked))
    sections = _sections(browser, len(picked))
    assert [s.get_attribute("data-source") for s in sections] == [p.name for p in picked]
    for section, path in zip(sections, picked):
        status, want = api(server.url, path)
        if path is broken:
            assert status == 422 and section.get_attribute("data-state") == "error"
            assert _text(section, ".error") == want["detail"] and "broken.jpg" in want["detail"]
            assert not section.find_elements(By.TAG_NAME, "canvas")
        else:
            assert status == 200 and want["error"] is None
            _check_shown(browser, section, path, want)
    assert all(name in _text(browser, "#model") for name in CLASSES)  # the model line, from /info


def test_a_dropped_photo_is_shown_like_a_picked_one(browser, server):
    path = PHOTOS[2]
    browser.get(server.url + "/")
    browser.execute_script(
        """const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
        const data = new DataTransfer();
        data.items.add(new File([bytes], arguments[1], { type: "image/jpeg" }));
        document.getElementById("drop").dispatchEvent(
          new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));""",
        base64.b64encode(path.read_bytes()).decode(), path.name)
    (section,) = _sections(browser, 1)
    status, want = api(server.url, path)
    assert status == 200
    _check_shown(browser, section, path, want)
