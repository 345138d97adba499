"""``Pipeline``: decode -> (detect + choose crops) -> crop and resize on the device -> classify.

Owns batching, device placement and error isolation. Images are decoded by a thread pool fed by a
producer thread (so neither disk, generator nor video decoding stalls the model), results come back
in input order, and every input yields exactly one ``Prediction`` (one per vehicle when the
cropper's policy selects "all"), with ``error`` set instead of raising when it cannot be read.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vehicle_cls.classifier import Classifier, crop_resize_on_device
from vehicle_cls.cropper.policy import apply_crop
from vehicle_cls.images import ImageError, load_image
from vehicle_cls.inputs import InputItem, expand_inputs, expands, is_single_source
from vehicle_cls.results import Detection, Prediction
from vehicle_cls.runtime import resolve_precision

logger = logging.getLogger(__name__)

DEFAULT_MASK_FILL = (124, 116, 104)


@dataclass
class _Decoded:
    """A decoded input (or why it failed), produced by the background workers."""

    item: InputItem
    image: np.ndarray | None = None  # RGB uint8 HxWx3
    tensor: torch.Tensor | None = None  # CHW uint8 view of ``image``; pinned for CUDA
    error: str | None = None


@dataclass
class _Choice:
    """A crop to classify (duck-typed like the cropper's ``CropChoice``)."""

    box: tuple[float, float, float, float] | None
    detection: Detection | None = None
    fallback: bool = False
    mask: np.ndarray | None = None


class _Raised:
    def __init__(self, exc: BaseException):
        self.exc = exc


_END = object()


class Pipeline:
    """Find the vehicle(s) in each input with ``cropper`` (or take whole images / given boxes) and
    classify the crops with ``classifier``, in batches, on ``device``."""

    def __init__(
        self,
        cropper: Any = None,
        classifier: Classifier | None = None,
        device: str | torch.device | None = None,
        batch_size: int = 16,
        num_workers: int = 2,
        precision: str = "fp32",
        channels_last: bool = True,
        frame_stride: int = 1,
    ):
        if classifier is None:
            raise ValueError("Pipeline needs a classifier (Classifier.create(...) or Classifier.load(dir))")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        self.cropper = cropper
        self.classifier = classifier
        self.device = torch.device(device) if device is not None else classifier.device
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        # one precision for both models; "auto": bf16/fp16 where runtime says it pays (fastpath keeps
        # fp32 wherever low precision would change the detections), else fp32, the exact reference
        self.precision = resolve_precision(precision, self.device)
        if cropper is not None and hasattr(cropper, "set_precision"):
            try:
                cropper.set_precision(self.precision)
            except ValueError:  # e.g. the detectron2 backend: fp32 only
                if precision != "auto":
                    raise
        self.frame_stride = int(frame_stride)
        classifier.to(self.device)
        if channels_last and classifier.model is not None:
            classifier.model.to(memory_format=torch.channels_last)

    def __repr__(self) -> str:
        return (f"Pipeline(cropper={self.cropper!r}, classifier={self.classifier!r}, device={str(self.device)!r}, "
                f"batch_size={self.batch_size}, precision={self.precision!r})")

    # ---- persistence ------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """Write the classifier bundle with this pipeline's cropper settings (null: no cropper)."""
        self.classifier.cropper_config = self.cropper.to_config() if self.cropper is not None else None
        return self.classifier.save(directory)

    @classmethod
    def load(
        cls, directory: str | os.PathLike, device: str | torch.device = "cpu", cropper: Any = True, **kwargs: Any
    ) -> Pipeline:
        """Open a bundle; the cropper is rebuilt from ``config.json["cropper"]`` (``cropper=False``:
        classify whole images; or pass a ``Cropper`` to use instead)."""
        classifier = Classifier.load(directory, device=device)
        if cropper is True:
            cropper = None
            if classifier.cropper_config:
                from vehicle_cls.cropper import Cropper

                cropper = Cropper.from_config(classifier.cropper_config, device=device)
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
    ) -> list[Prediction]:
        """Predictions for all inputs, in input order (see ``stream``)."""
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
    ) -> Iterator[Prediction]:
        """Yield predictions as batches finish, in input order.

        ``inputs``: one image, a path, a folder, a glob, a video file, or a list/generator of those.
        ``boxes``: one entry per image (after folders/globs/videos are expanded): None (whole image),
        (x1, y1, x2, y2), or a (K, 4) array (one prediction per box); the cropper is then not used.
        ``keep_images`` keeps the decoded image on each prediction (for ``plot``).
        """
        bs = int(batch_size or self.batch_size)
        if topk < 1:
            raise ValueError(f"topk must be >= 1, not {topk}")
        box_list = _box_list(boxes, inputs)
        items = expand_inputs(inputs, frame_stride or self.frame_stride)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            total = None
            if isinstance(inputs, (list, tuple)) and not any(expands(x) for x in inputs):
                total = len(inputs)
            bar = tqdm(total=total, unit="img", desc="predict", dynamic_ncols=True)
        try:
            batch: list[tuple[int, _Decoded]] = []
            count = 0
            for index, decoded in enumerate(self._decoded(items, prefetch=max(2 * bs, 4))):
                count = index + 1
                batch.append((index, decoded))
                if len(batch) == bs:
                    yield from self._process(batch, box_list, topk, keep_images)
                    if bar is not None:
                        bar.update(len(batch))
                    batch = []
            if batch:
                yield from self._process(batch, box_list, topk, keep_images)
                if bar is not None:
                    bar.update(len(batch))
            if box_list is not None and count < len(box_list):
                logger.warning("boxes has %d entries but the inputs gave only %d images", len(box_list), count)
        finally:
            if bar is not None:
                bar.close()

    # ---- background decoding ----------------------------------------------------------------
    def _decode(self, item: InputItem) -> _Decoded:
        if item.error is not None:
            return _Decoded(item, error=item.error)
        try:
            image = item.image if item.image is not None else load_image(item.source)
        except ImageError as exc:
            return _Decoded(item, error=str(exc))
        except Exception as exc:  # a decoder bug must not end the batch either
            return _Decoded(item, error=f"{item.name}: {type(exc).__name__}: {exc}")
        if not image.flags.writeable:  # torch wants writable memory; decoders may hand out read-only views
            image = image.copy()
        tensor = torch.from_numpy(image).permute(2, 0, 1)
        if self.device.type == "cuda":
            tensor = tensor.contiguous().pin_memory()
        return _Decoded(item, image=image, tensor=tensor)

    def _decoded(self, items: Iterator[InputItem], prefetch: int) -> Iterator[_Decoded]:
        """Decode ``items`` in order; with workers, a producer thread keeps ``prefetch`` in flight."""
        if self.num_workers <= 0:
            for item in items:
                yield self._decode(item)
            return
        pending: queue.Queue[Any] = queue.Queue(maxsize=prefetch)
        stop = threading.Event()
        pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="vehicle_cls-decode")

        def put(obj: Any) -> bool:
            while not stop.is_set():
                try:
                    pending.put(obj, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for item in items:
                    if not put(pool.submit(self._decode, item)):
                        return
                put(_END)
            except BaseException as exc:  # e.g. the user's generator raised: re-raised below
                put(_Raised(exc))
            finally:
                close = getattr(items, "close", None)
                if close is not None:
                    close()

        producer = threading.Thread(target=produce, name="vehicle_cls-inputs", daemon=True)
        producer.start()
        try:
            while True:
                obj = pending.get()
                if obj is _END:
                    return
                if isinstance(obj, _Raised):
                    raise obj.exc
                assert isinstance(obj, Future)
                yield obj.result()
        finally:
            stop.set()
            producer.join()
            pool.shutdown(wait=True, cancel_futures=True)

    # ---- one batch --------------------------------------------------------------------------
    def _process(
        self, batch: list[tuple[int, _Decoded]], box_list: list[Any] | None, topk: int, keep_images: bool
    ) -> list[Prediction]:
        results: list[list[Prediction]] = [[] for _ in batch]
        choices: dict[int, list[Any]] = {}
        good = []
        for pos, (_, dec) in enumerate(batch):
            if dec.error is not None:
                results[pos] = [Prediction.failed(dec.item.name, dec.error, dec.item.frame)]
            else:
                good.append(pos)
        if box_list is not None:
            for pos in list(good):
                index, dec = batch[pos]
                try:
                    choices[pos] = _choices_from_boxes(box_list, index, dec.image.shape[:2])
                except ValueError as exc:
                    results[pos] = [Prediction.failed(dec.item.name, f"{dec.item.name}: {exc}", dec.item.frame)]
                    good.remove(pos)
        elif self.cropper is not None:
            for pos, (chosen, error) in zip(list(good), self._choose([batch[p][1].image for p in good])):
                if error is not None:
                    dec = batch[pos][1]
                    results[pos] = [Prediction.failed(dec.item.name, f"{dec.item.name}: {error}", dec.item.frame)]
                    good.remove(pos)
                else:
                    choices[pos] = chosen
        else:
            choices = {pos: [_Choice(None)] for pos in good}

        jobs: list[tuple[int, Any]] = []
        crops: list[torch.Tensor] | list[np.ndarray] = []
        keras = self.classifier.keras is not None
        with torch.inference_mode():
            for pos in good:
                dec = batch[pos][1]
                if not choices[pos]:  # fallback disabled and no vehicle found
                    results[pos] = [self._prediction(dec, _Choice(None), None, topk, keep_images)]
                    continue
                if keras:
                    crops.extend(apply_crop(dec.image, c, getattr(self.cropper, "policy", None)) for c in choices[pos])
                else:
                    crops.append(self._crops_on_device(dec.tensor, choices[pos]))
                jobs.extend((pos, c) for c in choices[pos])
            if jobs:
                probs = self._classify(crops)
                k = min(topk, probs.shape[1])
                top_p, top_i = torch.from_numpy(probs).topk(k, dim=1)
                for j, (pos, choice) in enumerate(jobs):
                    top = (top_p[j].tolist(), top_i[j].tolist())
                    results[pos].append(self._prediction(batch[pos][1], choice, top, topk, keep_images))
        return [p for preds in results for p in preds]

    def _choose(self, images: list[np.ndarray]) -> list[tuple[list[Any], str | None]]:
        """The cropper's crop choices per image; a failure is isolated to the image that caused it."""
        if not images:
            return []
        try:
            detections = self.cropper.detect(images, batch_size=len(images))
            return [(list(self.cropper.policy.choose(d)), None) for d in detections]
        except Exception as exc:
            if len(images) == 1:
                logger.debug("cropper failed", exc_info=True)
                return [([], f"detector failed ({type(exc).__name__}: {exc})")]
            return [r for im in images for r in self._choose([im])]

    def _mask_fill(self) -> tuple[int, int, int]:
        policy = getattr(self.cropper, "policy", None)
        return tuple(getattr(policy, "mask_fill", DEFAULT_MASK_FILL))  # type: ignore[return-value]

    def _crops_on_device(self, tensor: torch.Tensor, chosen: list[Any]) -> torch.Tensor:
        """(K, 3, S, S) classifier inputs for the chosen crops of one image, computed on the device."""
        cfg = self.classifier.preprocess
        image = tensor.to(self.device, non_blocking=True)
        out: list[torch.Tensor | None] = [None] * len(chosen)
        plain = [i for i, c in enumerate(chosen) if c.box is not None and getattr(c, "mask", None) is None]
        if plain:
            boxes = torch.tensor([chosen[i].box for i in plain], dtype=torch.float32, device=self.device)
            for i, crop in zip(plain, crop_resize_on_device(image, boxes, cfg)):
                out[i] = crop
        for i, c in enumerate(chosen):
            if out[i] is not None:
                continue
            source = image
            mask = getattr(c, "mask", None)
            if mask is not None:
                keep = torch.from_numpy(np.asarray(mask, dtype=bool)).to(self.device)
                fill = torch.tensor(self._mask_fill(), dtype=image.dtype, device=self.device).view(3, 1, 1)
                source = torch.where(keep, image, fill)
            boxes = None if c.box is None else torch.tensor([c.box], dtype=torch.float32, device=self.device)
            out[i] = crop_resize_on_device(source, boxes, cfg)[0]
        return torch.stack(out)  # type: ignore[arg-type]

    def _classify(self, crops: list[Any]) -> np.ndarray:
        """Probabilities (M, C) for all crops of the batch, in chunks of ``batch_size``."""
        if self.classifier.keras is not None:
            return self.classifier.predict_proba_images(crops)
        x = torch.cat(crops)
        parts = [
            self.classifier.predict_proba(x[i : i + self.batch_size], self.precision).cpu()
            for i in range(0, len(x), self.batch_size)
        ]
        return torch.cat(parts).numpy()

    def _prediction(
        self, dec: _Decoded, choice: Any, top: tuple[list[float], list[int]] | None, topk: int, keep: bool
    ) -> Prediction:
        classes = self.classifier.classes
        pred = Prediction(
            source=dec.item.name,
            box=None if choice.box is None else tuple(float(v) for v in choice.box),  # type: ignore[arg-type]
            detection=getattr(choice, "detection", None),
            fallback=bool(getattr(choice, "fallback", False)),
            image_size=(int(dec.image.shape[0]), int(dec.image.shape[1])),
            frame=dec.item.frame,
            image=dec.image if keep else None,
        )
        if top is not None:
            probs, indices = top
            pred.label, pred.score, pred.class_index = classes[indices[0]], float(probs[0]), int(indices[0])
            pred.topk = [(classes[i], float(p)) for p, i in zip(probs, indices)]
        return pred


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


def _choices_from_boxes(box_list: list[Any], index: int, hw: tuple[int, int]) -> list[_Choice]:
    """Crop choices for image ``index`` from user boxes, clamped to the image."""
    if index >= len(box_list):
        raise ValueError(f"no box given for image {index} (boxes has {len(box_list)} entries)")
    entry = box_list[index]
    if entry is None:
        return [_Choice(None)]
    arr = np.asarray(entry, dtype=np.float64)
    if arr.size % 4 or arr.ndim > 2 or (arr.ndim == 2 and arr.shape[1] != 4) or not np.isfinite(arr).all():
        raise ValueError(f"a boxes entry must be None, (x1, y1, x2, y2) or a Kx4 array, got shape {arr.shape}")
    h, w = hw
    chosen = []
    for x1, y1, x2, y2 in arr.reshape(-1, 4):
        box = (min(max(x1, 0.0), w), min(max(y1, 0.0), h), min(max(x2, 0.0), w), min(max(y2, 0.0), h))
        if box[2] - box[0] < 1 or box[3] - box[1] < 1:
            raise ValueError(f"box {[float(v) for v in (x1, y1, x2, y2)]} is empty or outside the {w}x{h} image")
        chosen.append(_Choice(box))
    return chosen
