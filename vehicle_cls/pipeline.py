"""``Pipeline``: decode -> (detect + choose crops) -> prepare crops on the device -> classify.

Owns batching, device placement, error isolation and the bundle (classifier + cropper section).
Images are decoded by a thread pool fed by a producer thread (so neither disk, generator nor video
decoding stalls the model), and every input image (every video frame) yields exactly one
``Result`` with all the vehicles found in it, in input order, with ``error`` set instead of
raising when it cannot be read. Decoded pixels are bounded (``max_batch_pixels``): a batch is cut
early and decoding waits when the images held exceed the budget. Large JPEGs are decoded reduced
(``max_decode_side``); boxes and ``image_size`` are still reported in original pixels (the decoding
stage is ``vehicle_cls.io.decode``). On CUDA, JPEGs can be decoded on the device in batches (``decode``,
see ``device_decode``), and the classifier's
batch is sized to free device memory unless fixed (``classifier_batch_size``, see ``batching``).
"""
from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vehicle_cls.bundle import BundlePart, bundle_path, read_config
from vehicle_cls.classifier import Classifier
from vehicle_cls.classifier.inference import CropJob, classify_crops, label_crops
from vehicle_cls.cropper.choose import Chosen, detect_and_choose
from vehicle_cls.crops import DEFAULT_MASK_FILL, WHOLE_IMAGE, CropChoice, clamp_box, unscale_box
from vehicle_cls.io.decode import Decoded, Decoder, PixelBudget
from vehicle_cls.io.device_decode import DECODES
from vehicle_cls.io.inputs import count_images, expand_inputs, expands, is_single_source
from vehicle_cls.progress import progress_bar
from vehicle_cls.results import Result
from vehicle_cls.runtime import resolve_device, resolve_precision

logger = logging.getLogger(__name__)

DEFAULT_MAX_BATCH_PIXELS = 100_000_000  # ~300 MB of RGB; a 4000x3000 photo is 12 M
# ~3x the detector's 1333 px test size and more than a classifier crop (224-448 px input) needs: a
# 13000 px JPEG is decoded at 1/2 (6500 px, a quarter of the pixels); JPEGs under 8192 px at full size
DEFAULT_MAX_DECODE_SIDE = 4096
CROPPER_DIR = "cropper"  # custom detector weights are copied here inside the bundle


class Pipeline:
    """Find the vehicles in each input with ``cropper`` (or take whole images / given boxes) and
    classify the crops with ``classifier``, in batches, on ``device``."""

    def __init__(
        self,
        cropper: Any = None,
        classifier: Classifier | None = None,
        device: str | torch.device | None = None,
        batch_size: int = 16,
        num_workers: int = 2,
        precision: str = "auto",
        channels_last: bool = True,
        frame_stride: int = 1,
        max_batch_pixels: int = DEFAULT_MAX_BATCH_PIXELS,
        max_decode_side: int | None = DEFAULT_MAX_DECODE_SIDE,
        decode: str = "auto",
        classifier_batch_size: int | None = None,
        compile: bool | str = False,
    ):
        """``max_decode_side``: decode a JPEG (path or bytes) whose longer side exceeds it at the JPEG
        decoder's 1/2, 1/4 or 1/8 scale that stays >= it (None: always full size); results still use
        original pixels. ``decode``: "cpu" (PIL), "device" (JPEG paths/bytes decoded in batches on
        ``device`` by torchvision, nvjpeg on CUDA; anything else on the CPU) or "auto" (device decode
        on CUDA with bf16/fp16 where the detector takes device images). ``classifier_batch_size``:
        crops per classifier call (None: sized to free memory on CUDA, ``batch_size`` on the CPU).
        ``compile``: run the classifier through ``torch.compile`` (True or a mode, e.g.
        "reduce-overhead" for CUDA graphs; see ``TorchBackend.set_compile``)."""
        if isinstance(cropper, Classifier):  # Pipeline(clf) or Pipeline(clf, cropper): the order swapped
            raise TypeError("Pipeline(cropper, classifier): a Classifier was passed as the first argument, which is "
                            "the cropper (None: whole images); write Pipeline(cropper, clf) or Pipeline(classifier=clf)")
        if classifier is None:
            raise ValueError("Pipeline needs a classifier (Classifier.create(...) or Classifier.load(dir))")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        if max_batch_pixels < 1:
            raise ValueError(f"max_batch_pixels must be >= 1, not {max_batch_pixels}")
        if max_decode_side is not None and max_decode_side < 1:
            raise ValueError(f"max_decode_side must be >= 1 or None, not {max_decode_side}")
        if decode not in DECODES:
            raise ValueError(f"decode must be one of {DECODES}, not {decode!r}")
        if classifier_batch_size is not None and classifier_batch_size < 1:
            raise ValueError(f"classifier_batch_size must be >= 1 or None, not {classifier_batch_size}")
        self.cropper = cropper
        self.classifier = classifier
        self.device = resolve_device(device) if device is not None else classifier.device
        # one precision for both models; "auto": bf16/fp16 where runtime says it pays (cropper.fast keeps
        # fp32 wherever low precision would change the detections), else fp32, the exact reference
        self.precision = resolve_precision(precision, self.device)
        if cropper is not None and hasattr(cropper, "set_precision"):
            try:
                cropper.set_precision(self.precision)
            except ValueError:  # e.g. the detectron2 backend: fp32 only
                if precision != "auto":
                    raise
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.frame_stride = int(frame_stride)
        self.max_batch_pixels = int(max_batch_pixels)
        self.max_decode_side = None if max_decode_side is None else int(max_decode_side)
        self.decode = decode
        self.classifier_batch_size = classifier_batch_size
        classifier.to(self.device)
        if channels_last:
            classifier.engine.use_channels_last()
        if compile:
            if not hasattr(classifier.engine, "set_compile"):
                raise ValueError(f"compile needs the torch classifier backend, not {classifier.backend!r}")
            classifier.engine.set_compile(compile)

    def __repr__(self) -> str:
        return (f"Pipeline(cropper={self.cropper!r}, classifier={self.classifier!r}, device={str(self.device)!r}, "
                f"batch_size={self.batch_size}, precision={self.precision!r})")

    # ---- persistence ------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """Write the bundle: the classifier plus this pipeline's cropper section (null: no cropper), all
        in one directory swap. Detector weights that are not a model-zoo name are copied into
        ``directory/cropper/`` and recorded by that relative path, so the bundle can be moved."""
        cropper = None if self.cropper is None else _cropper_part(self.cropper)
        return self.classifier.save(directory, cropper=cropper)

    @classmethod
    def load(cls, directory: str | os.PathLike, device: str | torch.device = "auto", cropper: Any = True,
             **kwargs: Any) -> Pipeline:
        """Open a bundle; the cropper is rebuilt from ``config.json["cropper"]`` (``cropper=False``:
        classify whole images; or pass a ``Cropper`` to use instead). ``kwargs`` go to ``Pipeline``."""
        device = resolve_device(device)
        config = read_config(directory)
        classifier = Classifier.load(directory, device=device, config=config)
        if cropper is True:
            section = config.get("cropper")
            cropper = _cropper_from_section(section, Path(directory), device) if section else None
        elif cropper is False:
            cropper = None
        return cls(cropper, classifier, device=device, **kwargs)

    # ---- inference --------------------------------------------------------------------------
    def __call__(
        self,
        inputs: Any,
        batch_size: int | None = None,
        topk: int = 5,
        boxes: Sequence[Any] | None = None,
        keep_images: bool = False,
        frame_stride: int | None = None,
        progress: bool = False,
    ) -> list[Result]:
        """One ``Result`` per input image (per video frame), in input order (see ``stream``)."""
        return list(self.stream(inputs, batch_size, topk, boxes, keep_images, frame_stride, progress))

    def stream(
        self,
        inputs: Any,
        batch_size: int | None = None,
        topk: int = 5,
        boxes: Sequence[Any] | None = None,
        keep_images: bool = False,
        frame_stride: int | None = None,
        progress: bool = False,
    ) -> Iterator[Result]:
        """Yield one ``Result`` per input image as batches finish, in input order.

        ``inputs``: one image, a path, a folder, a glob, a video file, or a list/generator of those.
        ``boxes``: one entry per image (after folders/globs/videos are expanded): None (whole image),
        (x1, y1, x2, y2), or a (K, 4) array (one vehicle per box); the cropper is then not used.
        ``keep_images`` keeps the decoded image on each result (for ``plot``).
        """
        bs = int(batch_size or self.batch_size)
        if topk < 1:
            raise ValueError(f"topk must be >= 1, not {topk}")
        box_list = _box_list(boxes, inputs)
        items = expand_inputs(inputs, frame_stride or self.frame_stride)
        total = count_images(inputs)  # folders and globs listed up front, so the bar has a total
        budget = PixelBudget(self.max_batch_pixels)
        decoder = Decoder(self.device, self.num_workers, self.max_decode_side, self._decodes_on_device(),
                          explicit=self.decode == "device")
        bar = progress_bar(total, progress, "predict", "img")
        try:
            batch: list[tuple[int, Decoded]] = []
            pixels = count = 0
            for index, decoded in enumerate(decoder.stream(items, max(2 * bs, 4), budget)):
                count = index + 1
                batch.append((index, decoded))
                pixels += decoded.pixels
                if len(batch) == bs or pixels >= self.max_batch_pixels:
                    yield from self._process(decoder, batch, box_list, topk, keep_images)
                    bar.update(len(batch))
                    budget.release(pixels)
                    batch, pixels = [], 0
            if batch:
                yield from self._process(decoder, batch, box_list, topk, keep_images)
                bar.update(len(batch))
                budget.release(pixels)
            if box_list is not None and count < len(box_list):
                logger.warning("boxes has %d entries but the inputs gave only %d images", len(box_list), count)
        finally:
            bar.close()

    def _decodes_on_device(self) -> bool:
        """Whether JPEGs are decoded on ``device`` (``decode`` "device", or "auto" where it pays: CUDA,
        bf16/fp16, a torch classifier and a detector that preprocesses device tensors, or none)."""
        if self.decode != "auto":
            return self.decode == "device"
        takes_device_images = self.cropper is None or bool(
            getattr(getattr(self.cropper, "backend", None), "device_images", False))
        return (self.device.type == "cuda" and self.precision in ("bf16", "fp16")
                and self.classifier.backend == "torch" and takes_device_images)

    # ---- one batch --------------------------------------------------------------------------
    def _detector_input(self, dec: Decoded) -> Any:
        """The image as the cropper takes it: the device tensor (HWC view) where the detector
        preprocesses on the device, else the RGB array."""
        tensor = dec.tensor
        on_device = tensor is not None and tensor.device.type != "cpu"
        if on_device and getattr(getattr(self.cropper, "backend", None), "device_images", False):
            return tensor.permute(1, 2, 0)  # type: ignore[union-attr]
        return dec.array()

    def _process(
        self, decoder: Decoder, batch: list[tuple[int, Decoded]], box_list: list[Any] | None, topk: int, keep_images: bool
    ) -> list[Result]:
        decoder.finish_on_device([dec for _, dec in batch])
        results = [self._result(index, dec, keep_images) for index, dec in batch]
        good = [pos for pos, r in enumerate(results) if r.ok]
        choices: dict[int, list[Any]] = {}
        if box_list is not None:
            for pos in good:
                index, dec = batch[pos]
                try:
                    choices[pos] = _choices_from_boxes(box_list, index, dec.size, dec.scale)
                except ValueError as exc:
                    results[pos].error = f"{dec.item.name}: {exc}"
        elif self.cropper is not None:
            for pos, chosen in zip(good, self._choose([self._detector_input(batch[p][1]) for p in good])):
                if chosen.error is not None:
                    results[pos].error = f"{batch[pos][1].item.name}: {chosen.error}"
                else:
                    choices[pos] = chosen.choices
        else:
            choices = {pos: [WHOLE_IMAGE] for pos in good}

        engine = self.classifier.engine
        jobs: dict[int, CropJob] = {}
        for pos, chosen in choices.items():  # an empty choice (no vehicle, no fallback): ok, no vehicles
            dec = batch[pos][1]
            image = dec.image if dec.image is not None or engine.name == "torch" else dec.array()
            jobs[pos] = CropJob(image, chosen, dec.tensor, dec.scale)
        probs = classify_crops(engine, list(jobs.values()), fill=self._mask_fill(), precision=self.precision,
                               batch_size=self._classifier_batch_size())
        for (pos, job), rows in zip(jobs.items(), probs):
            try:
                results[pos].vehicles = label_crops(rows, job, self.classifier.classes, topk)
            except ValueError as exc:  # e.g. NaN probabilities: this input fails, the batch goes on
                results[pos].error = f"{results[pos].source}: {exc}"
        return results

    def _result(self, index: int, dec: Decoded, keep: bool) -> Result:
        item = dec.item
        if dec.error is not None:
            return Result.failed(item.name, index, dec.error, item.frame, item.timestamp)
        return Result(item.name, index, frame=item.frame, timestamp=item.timestamp,
                      image_size=dec.size, image=dec.array() if keep else None)

    def _choose(self, images: list[Any]) -> list[Chosen]:
        """The cropper's crop choices per image; a failure is isolated to the image that caused it."""
        return detect_and_choose(self.cropper, images, batch_size=max(1, len(images)))

    def _mask_fill(self) -> tuple[int, int, int]:
        """The RGB that blanks pixels outside a mask: the cropper policy's, else the default."""
        policy = getattr(self.cropper, "policy", None)
        return tuple(getattr(policy, "mask_fill", DEFAULT_MASK_FILL))  # type: ignore[return-value]

    def _classifier_batch_size(self) -> int | None:
        """Crops per classifier call: ``classifier_batch_size`` (unset: as many as free memory allows on
        CUDA, see ``TorchBackend.classify``; ``batch_size`` elsewhere)."""
        size = self.classifier_batch_size
        if size is None and not (self.device.type == "cuda" and self.classifier.engine.name == "torch"):
            size = self.batch_size
        return size


def _is_zoo_name(weights: str) -> bool:
    from vehicle_cls.weights import KNOWN_WEIGHTS

    return weights in KNOWN_WEIGHTS


def _cropper_part(cropper: Any) -> BundlePart:
    """The cropper's share of the bundle: its section, and its weights unless they are a zoo name (a
    copy of its weights file, or its state saved once as safetensors, under ``cropper/``)."""
    section = dict(cropper.to_config())
    source = str(section.get("weights", ""))
    if _is_zoo_name(source):
        return BundlePart(section)
    if os.path.isfile(source):
        name = f"{CROPPER_DIR}/{Path(source).name}"
        part = BundlePart(section, {name: lambda path: shutil.copyfile(source, path)})
    elif hasattr(cropper, "save_weights"):
        name = f"{CROPPER_DIR}/weights.safetensors"
        part = BundlePart(section, {name: cropper.save_weights})
    else:
        raise ValueError(f"cropper weights {source!r} are neither a zoo name nor a file; cannot put them in the bundle")
    section["weights"] = name
    return part


def _cropper_from_section(section: dict[str, Any], directory: Path, device: torch.device) -> Any:
    """The bundle's cropper; weights given by a relative path are read from inside the bundle."""
    from vehicle_cls.cropper import Cropper

    section = dict(section)
    weights = str(section.get("weights", ""))
    if not _is_zoo_name(weights):
        section["weights"] = bundle_path(directory, weights)
    try:
        return Cropper.from_config(section, device=device)
    except Exception as exc:
        raise RuntimeError(f"{directory}: cannot build the bundle's cropper: {exc} "
                           "(or pass cropper=False / --no-crop to classify whole images)") from exc


def _box_list(boxes: Sequence[Any] | None, inputs: Any) -> list[Any] | None:
    """``boxes`` as a list, checked against the input count when that is known up front."""
    if boxes is None:
        return None
    box_list = list(boxes)
    if is_single_source(inputs):
        known = None if expands(inputs) else 1
    elif isinstance(inputs, (list, tuple)):
        known = None if any(expands(x) for x in inputs) else len(inputs)
    else:
        known = None
    if known is not None and known != len(box_list):
        raise ValueError(f"boxes has {len(box_list)} entries but there are {known} inputs (one entry per image)")
    return box_list


def _choices_from_boxes(box_list: list[Any], index: int, hw: tuple[int, int],
                        scale: tuple[float, float] = (1.0, 1.0)) -> list[CropChoice]:
    """Crop choices for image ``index`` from user boxes (original pixels ``hw``), clamped to the image
    and mapped onto the decoded image (``scale``: (x, y) original pixels per decoded pixel)."""
    if index >= len(box_list):
        raise ValueError(f"no box given for image {index} (boxes has {len(box_list)} entries)")
    entry = box_list[index]
    if entry is None:
        return [WHOLE_IMAGE]
    arr = np.asarray(entry, dtype=np.float64)
    if arr.size % 4 or arr.ndim > 2 or (arr.ndim == 2 and arr.shape[1] != 4) or not np.isfinite(arr).all():
        raise ValueError(f"a boxes entry must be None, (x1, y1, x2, y2) or a Kx4 array, got shape {arr.shape}")
    h, w = hw
    chosen = []
    for given in arr.reshape(-1, 4):
        box = clamp_box(given, hw)
        if box[2] - box[0] < 1 or box[3] - box[1] < 1:
            raise ValueError(f"box {[float(v) for v in given]} is empty or outside the {w}x{h} image")
        if scale == (1.0, 1.0):
            chosen.append(CropChoice(box))
        else:
            chosen.append(CropChoice(unscale_box(box, scale), given_box=box))
    return chosen
