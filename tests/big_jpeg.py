"""A large JPEG with one bright rectangle, and a thresholding cropper that finds it (an oracle independent
of the pipeline) and records the sizes of the images it was given: for ``--max-decode-side`` tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from vehicle_cls.testing.stand_ins import StandInCropper

BIG_W, BIG_H = 3200, 2000
BRIGHT = (1200, 600, 2000, 1400)  # the "vehicle": x1, y1, x2, y2 (exclusive) in original pixels


def write_big_jpeg(path: Path) -> Path:
    """Save the test image at ``path`` (a dark field with the bright rectangle)."""
    from PIL import Image

    pixels = np.full((BIG_H, BIG_W, 3), 40, np.uint8)
    x1, y1, x2, y2 = BRIGHT
    pixels[y1:y2, x1:x2] = (230, 200, 50)
    Image.fromarray(pixels).save(path, quality=95)
    return path


class BrightCropper(StandInCropper):
    """Stands in for the bundle's detector: the bright rectangle's bounding box, in the given image's pixels."""

    def __init__(self):
        from vehicle_cls.cropper import CropPolicy

        self.policy, self.shapes = CropPolicy(select="all"), []

    def to_config(self) -> dict:
        return {"config": "bright-threshold (test stand-in)"}

    def detect(self, images, batch_size=None):
        from vehicle_cls.results import Detections

        out = []
        for im in images:
            self.shapes.append(tuple(im.shape[:2]))
            ys, xs = np.nonzero(im.mean(axis=2) > 120)
            out.append(Detections([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], [0.9], [2],
                                  image_size=im.shape[:2]))
        return out


def with_bright_cropper(bundle: Path, monkeypatch) -> BrightCropper:
    """Give the bundle a cropper section and make ``Cropper.from_config`` build a ``BrightCropper``."""
    import json

    from vehicle_cls import cropper as cropper_pkg

    config = json.loads((bundle / "config.json").read_text())
    config["cropper"] = {"config": "faster_rcnn_R_101_FPN_3x", "weights": "faster_rcnn_R_101_FPN_3x"}
    (bundle / "config.json").write_text(json.dumps(config))
    cropper = BrightCropper()
    monkeypatch.setattr(cropper_pkg.Cropper, "from_config", staticmethod(lambda d, device="cpu", **kw: cropper))
    return cropper
