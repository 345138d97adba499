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
from vehicle_cls.cropper import Cropper
from vehicle_cls.cropper.choose import Chosen, detect_and_choose
from vehicle_cls.crops import DEFAULT_MASK_FILL, WHOLE_IMAGE, CropChoice, clamp_box, unscale_box
from vehicle_cls.io.decode import Decoded, Decoder, PixelBudget
from vehicle_cls.io.inputs import count_images, expand_inputs, expands, is_single_source
from vehicle_cls.options import InferenceOptions
from vehicle_cls.progress import progress_bar
from vehicle_cls.results import Result
from vehicle_cls.runtime import resolve_device, resolve_precision

logger = logging.getLogger(__name__)

CROPPER_DIR = "cropper"  # custom detector weights are copied here inside the bundle


class Pipeline:
    """Find the vehicles in each input with ``cropper`` (or take whole images / given boxes) and
    classify the crops with ``classifier``, in batches, on ``options.device``.

    Example:
        ```python
        pipe = Pipeline(Cropper.from_zoo(), Classifier.load("run/best"), device="auto")
        for result in pipe(["street.jpg", "folder/"], topk=3):
            print(result.source, result.error, [v.label for v in result])
        pipe.save("my_pipeline")  # later: Pipeline.load("my_pipeline")
        ```
    """

    def __init__(
        self,
        cropper: Any = None,
        classifier: Classifier | None = None,
        options: InferenceOptions | None = None,
        **overrides: Any,
    ):
        """Put both models on one device and set each one's precision, so every call runs as configured.

        See ``InferenceOptions`` for every setting: ``max_decode_side`` (JPEGs decoded reduced, results in
        original pixels), ``decode`` ("auto": on the device on CUDA with bf16/fp16 where both models take
        device images), ``classifier_batch_size`` (None: sized to free memory where the classifier can),
        ``compile`` (torch.compile, where the classifier's capabilities allow it).

        Args:
            cropper: a ``Cropper`` (or a stand-in with its ``detect``, ``policy``, ``capabilities``,
                ``precision``, ``set_precision`` and ``to_config``); None, or ``crop=False``: classify
                whole images.
            classifier: the ``Classifier`` (required; it is moved to the pipeline's device).
            options: an ``InferenceOptions`` (None: the defaults).
            **overrides: ``InferenceOptions`` fields (``batch_size=8, precision="fp32"``) that replace
                ``options``' values.

        Raises:
            TypeError: a ``Classifier`` was passed as ``cropper`` (the first argument).
            ValueError: no ``classifier``; ``compile`` with a backend that does not compile; a precision
                a model does not run; a bad override (``OptionError``) or an unknown one.
            RuntimeError: a CUDA device was asked for and CUDA is not available.
        """
        if isinstance(cropper, Classifier):  # Pipeline(clf) or Pipeline(clf, cropper): the order swapped
            raise TypeError(
                "Pipeline(cropper, classifier): a Classifier was passed as the first argument, "
                "which is the cropper (None: whole images); write Pipeline(cropper, clf) or "
                "Pipeline(classifier=clf)"
            )
        if classifier is None:
            raise ValueError("Pipeline needs a classifier (Classifier.create(...) or Classifier.load(dir))")
        self.options = (options or InferenceOptions()).replace(**overrides)
        opts = self.options
        self.cropper: Any = cropper if opts.crop else None
        self.classifier = classifier
        self.device = resolve_device(opts.device) if opts.device is not None else classifier.device
        classifier.to(self.device)
        # each model runs what it supports: "auto" is its fastest precision that keeps agreement (cropper.fast
        # keeps fp32 wherever low precision would change the detections), an explicit one it lacks an error
        self.precisions: dict[str, str] = {}
        if self.cropper is not None:
            self.cropper.set_precision(
                resolve_precision(
                    opts.precision, self.device, what="the detector", capabilities=self.cropper.capabilities
                )
            )
            self.precisions["detector"] = self.cropper.precision
        self.precisions["classifier"] = classifier.resolve_precision(opts.precision)
        if opts.channels_last:
            classifier.backend.use_channels_last()
        if opts.compile:
            if not classifier.backend.capabilities.compile:
                raise ValueError(f"compile needs a classifier backend that compiles, not {classifier.backend.name!r}")
            classifier.backend.set_compile(opts.compile)  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return (
            f"Pipeline(cropper={self.cropper!r}, classifier={self.classifier!r}, device={str(self.device)!r}, "
            f"batch_size={self.options.batch_size}, precisions={self.precisions!r})"
        )

    # ---- persistence ------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """Write the bundle: the classifier plus this pipeline's cropper section (null: no cropper), all
        in one directory swap, so ``Pipeline.load`` rebuilds this pipeline.

        Detector weights that are not a model-zoo name are copied into ``directory/cropper/`` and
        recorded by that relative path, so the bundle can be moved.

        Args:
            directory: the bundle directory (created, or replaced whole).

        Returns:
            ``directory``, as a ``Path``.

        Raises:
            ValueError: the cropper's weights are neither a model-zoo name nor a file.
            OSError: the directory cannot be written (``NotADirectoryError``: it is a file).
        """
        cropper = None if self.cropper is None else _cropper_part(self.cropper)
        return self.classifier.save(directory, cropper=cropper)

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike,
        options: InferenceOptions | None = None,
        cropper: Any = None,
        **overrides: Any,
    ) -> Pipeline:
        """Open a bundle written by ``save`` (or by training) as a ready pipeline on ``options.device``.

        The cropper is rebuilt from ``config.json["cropper"]`` unless ``options.crop`` is False
        (classify whole images) or a ``cropper`` is given to use instead.

        Args:
            directory: the bundle directory.
            options: an ``InferenceOptions``; its ``device`` None means "auto" (CUDA when available).
            cropper: a cropper to use instead of the bundle's.
            **overrides: ``InferenceOptions`` fields, as for ``Pipeline``.

        Returns:
            The pipeline.

        Raises:
            BundleError: ``directory`` is not a bundle, or its weights do not fit its ``config.json``.
            RuntimeError: the bundle's cropper cannot be built (e.g. its weights are missing), or CUDA
                was asked for and is not available.
            ImportError: a Keras bundle without TensorFlow installed.
            ValueError: a bad option (``OptionError``) or an unknown one.

        Example:
            ```python
            pipe = Pipeline.load("my_pipeline", device="cpu", batch_size=8)
            results = pipe("street.jpg")
            ```
        """
        options = (options or InferenceOptions()).replace(**overrides)
        device = resolve_device(options.device or "auto")
        options = options.replace(device=str(device))
        config = read_config(directory)
        classifier = Classifier.load(directory, device=device, config=config)
        if cropper is None and options.crop:
            section = config.get("cropper")
            cropper = _cropper_from_section(section, Path(directory), device) if section else None
        return cls(cropper, classifier, options)

    # ---- inference --------------------------------------------------------------------------
    def __call__(
        self,
        inputs: Any,
        batch_size: int | None = None,
        topk: int | None = None,
        boxes: Sequence[Any] | None = None,
        keep_images: bool = False,
        frame_stride: int | None = None,
        progress: bool = False,
    ) -> list[Result]:
        """Classify every vehicle in ``inputs``: one ``Result`` per input image (per video frame), in order.

        The same as ``list(pipe.stream(...))``; a failed input gets ``Result.error`` instead of raising.

        Args:
            inputs: as for ``stream``.
            batch_size: images per batch (None: ``options.batch_size``).
            topk: classes listed per vehicle (None: ``options.topk``).
            boxes: one entry per image instead of the cropper's boxes (see ``stream``).
            keep_images: keep the decoded image on each result (for ``Result.plot``).
            frame_stride: video: classify every N-th frame (None: ``options.frame_stride``).
            progress: show a progress bar.

        Returns:
            The results, in input order.

        Raises:
            ValueError: a bad option (``OptionError``), or ``boxes`` that do not match the inputs.
        """
        return list(self.stream(inputs, batch_size, topk, boxes, keep_images, frame_stride, progress))

    def stream(
        self,
        inputs: Any,
        batch_size: int | None = None,
        topk: int | None = None,
        boxes: Sequence[Any] | None = None,
        keep_images: bool = False,
        frame_stride: int | None = None,
        progress: bool = False,
    ) -> Iterator[Result]:
        """Yield one ``Result`` per input image as batches finish, in input order, so large inputs are
        never held whole.

        An input that cannot be read (or whose detection or classification fails) gets
        ``Result.error`` and the others go on; an exception raised by a generator given as ``inputs``
        is raised here.

        Args:
            inputs: one image, a path, a folder, a glob, a video file, a URL, a ``NamedInput`` (its
                results report its name and index), or a list/generator of those.
            batch_size: images per batch (None: ``options.batch_size``); checked as an
                ``InferenceOptions`` field, like ``topk`` and ``frame_stride``.
            topk: classes listed per vehicle (None: ``options.topk``).
            boxes: one entry per image (after folders/globs/videos are expanded): None (whole image),
                (x1, y1, x2, y2), or a (K, 4) array (one vehicle per box); the cropper is then not used.
            keep_images: keep the decoded image on each result (for ``Result.plot``).
            frame_stride: video: classify every N-th frame (None: ``options.frame_stride``).
            progress: show a progress bar (with a total where the inputs are listed up front).

        Yields:
            One ``Result`` per image, in input order.

        Raises:
            ValueError: a bad option (``OptionError``), or a ``boxes`` list whose length is not the
                number of inputs (where that is known up front).
        """
        given = {"batch_size": batch_size, "topk": topk, "frame_stride": frame_stride}
        opts = self.options.replace(**{k: v for k, v in given.items() if v is not None})
        bs, topk = opts.batch_size, opts.topk
        box_list = _box_list(boxes, inputs)
        items = expand_inputs(inputs, opts.frame_stride)
        total = count_images(inputs)  # folders and globs listed up front, so the bar has a total
        budget = PixelBudget(opts.max_batch_pixels)
        decoder = Decoder(
            self.device,
            opts.num_workers,
            opts.max_decode_side,
            self._decodes_on_device(),
            explicit=opts.decode == "device",
        )
        bar = progress_bar(total, progress, "predict", "img")
        try:
            batch: list[tuple[int, Decoded]] = []
            pixels = count = 0
            for index, decoded in enumerate(decoder.stream(items, max(2 * bs, 4), budget)):
                count = index + 1
                batch.append((index, decoded))
                pixels += decoded.pixels
                if len(batch) == bs or pixels >= opts.max_batch_pixels:
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
        bf16/fp16 classification, and both models (or the classifier alone) take device images)."""
        if self.options.decode != "auto":
            return self.options.decode == "device"
        detector_takes = self.cropper is None or self.cropper.capabilities.device_images
        return (
            self.device.type == "cuda"
            and self.precisions["classifier"] in ("bf16", "fp16")
            and self.classifier.backend.capabilities.device_images
            and detector_takes
        )

    # ---- one batch --------------------------------------------------------------------------
    def _detector_input(self, dec: Decoded) -> Any:
        """The image as the cropper takes it: the device tensor (HWC view) where the detector
        preprocesses on the device, else the RGB array."""
        tensor = dec.tensor
        on_device = tensor is not None and tensor.device.type != "cpu"
        if on_device and self.cropper.capabilities.device_images:
            return tensor.permute(1, 2, 0)  # type: ignore[union-attr]
        return dec.array()

    def _process(
        self,
        decoder: Decoder,
        batch: list[tuple[int, Decoded]],
        box_list: list[Any] | None,
        topk: int,
        keep_images: bool,
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

        backend = self.classifier.backend
        jobs: dict[int, CropJob] = {}
        for pos, crop_choices in choices.items():  # an empty choice (no vehicle, no fallback): ok, no vehicles
            dec = batch[pos][1]
            image = dec.image if dec.image is not None or backend.capabilities.device_images else dec.array()
            jobs[pos] = CropJob(image, crop_choices, dec.tensor, dec.scale)
        probs = classify_crops(
            backend,
            list(jobs.values()),
            fill=self._mask_fill(),
            precision=self.precisions["classifier"],
            batch_size=self._classifier_batch_size(),
        )
        for (pos, job), rows in zip(jobs.items(), probs):
            try:
                results[pos].vehicles = label_crops(rows, job, self.classifier.classes, topk)
            except ValueError as exc:  # e.g. NaN probabilities: this input fails, the batch goes on
                results[pos].error = f"{results[pos].source}: {exc}"
        return results

    def _result(self, index: int, dec: Decoded, keep: bool) -> Result:
        item = dec.item
        index = index if item.index is None else item.index
        if dec.error is not None:
            return Result.failed(item.name, index, dec.error, item.frame, item.timestamp)
        return Result(
            item.name,
            index,
            frame=item.frame,
            timestamp=item.timestamp,
            image_size=dec.size,
            image=dec.array() if keep else None,
        )

    def _choose(self, images: list[Any]) -> list[Chosen]:
        """The cropper's crop choices per image; a failure is isolated to the image that caused it."""
        return detect_and_choose(self.cropper, images, batch_size=max(1, len(images)))

    def _mask_fill(self) -> tuple[int, int, int]:
        """The RGB that blanks pixels outside a mask: the cropper policy's, else the default."""
        return DEFAULT_MASK_FILL if self.cropper is None else tuple(self.cropper.policy.mask_fill)

    def _classifier_batch_size(self) -> int | None:
        """Crops per classifier call: ``classifier_batch_size`` (unset: as many as free memory allows on
        CUDA where the backend sizes its batches, see ``TorchClassifierBackend.classify``; else ``batch_size``)."""
        size = self.options.classifier_batch_size
        if size is None and not (self.device.type == "cuda" and self.classifier.backend.capabilities.memory_batches):
            size = self.options.batch_size
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
    elif isinstance(cropper, Cropper):  # a stand-in has no weights of its own to save
        name = f"{CROPPER_DIR}/weights.safetensors"
        part = BundlePart(section, {name: cropper.save_weights})
    else:
        raise ValueError(f"cropper weights {source!r} are neither a zoo name nor a file; cannot put them in the bundle")
    section["weights"] = name
    return part


def _cropper_from_section(section: dict[str, Any], directory: Path, device: torch.device) -> Any:
    """The bundle's cropper; weights given by a relative path are read from inside the bundle."""
    section = dict(section)
    weights = str(section.get("weights", ""))
    if not _is_zoo_name(weights):
        section["weights"] = bundle_path(directory, weights)
    try:
        return Cropper.from_config(section, device=device)
    except Exception as exc:
        raise RuntimeError(
            f"{directory}: cannot build the bundle's cropper: {exc} "
            "(or pass crop=False / --no-crop to classify whole images)"
        ) from exc


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


def _choices_from_boxes(
    box_list: list[Any], index: int, hw: tuple[int, int], scale: tuple[float, float] = (1.0, 1.0)
) -> list[CropChoice]:
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
