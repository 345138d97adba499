"""The exported pipeline on ONNX Runtime: decode -> detect (detector.onnx) -> choose (``CropPolicy``)
-> crop (crops.onnx) -> classify (classifier.onnx) -> ``Result``; numpy, pillow and onnxruntime only."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vehicle_cls.cropper.policy import CropPolicy
from vehicle_cls.crops import WHOLE_IMAGE, CropChoice
from vehicle_cls.errors import one_line
from vehicle_cls.io.images import load_image
from vehicle_cls.io.inputs import expand_inputs
from vehicle_cls.onnx import preprocess as pre
from vehicle_cls.results import Detections, Result, label_vehicle

MANIFEST = "manifest.json"  # written by vehicle_cls.export.pipeline (same name, kept in sync by the tests)


def import_onnxruntime() -> Any:
    """``onnxruntime``, or an ImportError that names the extra to install."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ImportError(f"the ONNX runtime needs onnxruntime: pip install vehicle-cls[onnx] ({exc})") from exc
    return onnxruntime


class Pipeline:
    """An export directory's graphs in ONNX Runtime sessions (CPU unless ``providers`` says otherwise)."""

    def __init__(self, directory: str | os.PathLike, threads: int | None = None, providers: list[str] | None = None):
        ort = import_onnxruntime()
        self.directory = Path(directory)
        path = self.directory / MANIFEST
        try:
            manifest = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{self.directory}: not an ONNX export directory ({one_line(exc)})") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != "vehicle_cls-onnx":
            raise ValueError(f"{path}: not a vehicle_cls ONNX export manifest")
        self.manifest = manifest
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        providers = providers or ["CPUExecutionProvider"]

        def session(name: str) -> Any:
            return ort.InferenceSession(str(self.directory / name), options, providers=providers)

        clf = manifest["classifier"]
        self.classes: list[str] = list(clf["classes"])
        self.preprocessing: dict[str, Any] = clf["preprocessing"]
        self.classifier = session(clf["file"])
        self.crops = session(manifest["crops"]["file"])
        det = manifest.get("detector")
        self.detector = None if det is None else session(det["file"])
        self.settings: dict[str, Any] = {} if det is None else det["test_settings"]
        self.mask_on = bool(det and det["mask_on"])
        self.policy = None if det is None else CropPolicy.from_dict(det["policy"], source=str(path))

    @classmethod
    def load(cls, directory: str | os.PathLike, threads: int | None = None) -> Pipeline:
        """Open an export directory (``vehicle-cls export --format onnx --out DIR``)."""
        return cls(directory, threads)

    def __repr__(self) -> str:
        return f"vehicle_cls.onnx.Pipeline({str(self.directory)!r}, detector={self.detector is not None})"

    # ---- stages ---------------------------------------------------------------------------
    def detect(self, image: np.ndarray) -> Detections:
        """The detector's output for one RGB uint8 image, in original pixels (as ``Cropper.detect``)."""
        if self.detector is None:
            raise ValueError(f"{self.directory} has no detector (exported without a cropper)")
        s = self.settings
        h, w = image.shape[:2]
        x = pre.detector_input(image, s["min_size_test"], s["max_size_test"])
        out = self.detector.run(None, {"image": x, "original_size": np.array([h, w], np.int64)})
        masks = None
        if self.mask_on:
            masks = pre.paste_masks(out[3], out[0], h, w, s["mask_threshold"])
        return Detections(out[0], out[1], out[2].astype(np.int64), masks, (h, w))

    def choose(self, image: np.ndarray) -> list[CropChoice]:
        """The crops to classify: the policy's choice on the detections, or the whole image."""
        if self.policy is None:
            return [WHOLE_IMAGE]
        return list(self.policy.choose(self.detect(image)))

    def classify(self, image: np.ndarray, choices: list[CropChoice]) -> np.ndarray:
        """(K, classes) probabilities of the chosen crops (the torch classifier's crop preprocessing)."""
        cfg = self.preprocessing
        inputs: list[np.ndarray | None] = [None] * len(choices)
        plain = [i for i, c in enumerate(choices) if c.box is not None and c.mask is None]
        if plain:
            for i, crop in zip(plain, self._crop(image, [choices[i].box for i in plain])):
                inputs[i] = crop
        fill = np.asarray(self.policy.mask_fill if self.policy else (124, 116, 104), np.uint8)
        for i, c in enumerate(choices):
            if inputs[i] is not None:
                continue
            source = image if c.mask is None else np.where(np.asarray(c.mask, bool)[..., None], image, fill)
            inputs[i] = pre.whole_image(source, cfg) if c.box is None else self._crop(source, [c.box])[0]
        if not inputs:
            return np.zeros((0, len(self.classes)), np.float32)
        return self.classifier.run(None, {"input": np.stack(inputs)})[0]  # type: ignore[arg-type]

    def _crop(self, image: np.ndarray, boxes: list[Any]) -> np.ndarray:
        cfg = self.preprocessing
        rois, valid = pre.crop_rois(boxes, cfg)
        x = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)[None]
        crops = self.crops.run(None, {"image": x, "rois": rois})[0]
        return pre.letterbox_mask(pre.normalize(crops, cfg), valid, cfg)

    # ---- the pipeline ---------------------------------------------------------------------
    def __call__(self, inputs: Any, topk: int = 5) -> list[Result]:
        """One ``Result`` per input image, in order (paths, folders, globs, arrays; see ``stream``)."""
        return list(self.stream(inputs, topk))

    def stream(self, inputs: Any, topk: int = 5) -> Iterator[Result]:
        """Yield one ``Result`` per input; a failure is that input's ``error`` (one line), the rest go on."""
        if topk < 1:
            raise ValueError(f"topk must be >= 1, not {topk}")
        for index, item in enumerate(expand_inputs(inputs)):
            if item.error is not None:
                yield Result.failed(item.name, index, item.error, item.frame, item.timestamp)
                continue
            try:
                image = item.image if item.image is not None else load_image(item.source)
            except Exception as exc:
                yield Result.failed(item.name, index, f"{item.name}: {one_line(exc)}", item.frame, item.timestamp)
                continue
            result = Result(
                item.name,
                index,
                frame=item.frame,
                timestamp=item.timestamp,
                image_size=(int(image.shape[0]), int(image.shape[1])),
            )
            try:
                choices = self.choose(image)
                probs = self.classify(image, choices)
                result.vehicles = [
                    label_vehicle(row, self.classes, topk, c.box, c.detection, c.mask, c.fallback)
                    for row, c in zip(probs, choices)
                ]
            except Exception as exc:
                result.error = f"{item.name}: {type(exc).__name__}: {one_line(exc)}"
            yield result
