"""``Cropper``: detectron2's COCO R101-FPN finds the vehicles, ``CropPolicy`` picks the crop."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vehicle_cls.cropper.backend import DetectorBackend
from vehicle_cls.cropper.checkpoint import load_state_dict, save_state_dict
from vehicle_cls.cropper.policy import CropPolicy
from vehicle_cls.cropper.rcnn import InferenceSettings, check_config
from vehicle_cls.cropper.transforms import resized_shape
from vehicle_cls.crops import CropChoice, cut
from vehicle_cls.fromdict import check_keys, field_names
from vehicle_cls.io.images import ImageError, check_geometry, load_image
from vehicle_cls.results import Detections
from vehicle_cls.runtime import Capabilities, resolve_device, resolve_precision

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "detectron2", "auto")
GROUPINGS = ("auto", "single", "size", "padded")
_POLICY_FIELDS = field_names(CropPolicy)
_SETTING_FIELDS = field_names(InferenceSettings)
_CONFIG_KEYS = {"config", "weights", "backend", "test_settings", "policy", "precision", "channels_last", "batch_size"}


class Cropper:
    """Detect vehicles with detectron2's R101-FPN (pure torch, or detectron2 itself) and choose crops.

    Build it with :meth:`from_zoo`, :meth:`from_checkpoint` or :meth:`from_config`; then
    ``detect(images)`` gives one :class:`Detections` per image and ``choose(images)`` the crops.

    Example:
        ```python
        cropper = Cropper.from_zoo("faster_rcnn_R_101_FPN_3x", policy="all", min_score=0.6)
        detections = cropper.detect(["street.jpg"])[0]   # boxes, scores, COCO classes
        crops = cropper.crop(["street.jpg"])[0]          # RGB arrays, one per chosen vehicle
        ```
    """

    def __init__(
        self, backend: DetectorBackend, config: str, weights: str, policy: CropPolicy | None = None, batch_size: int = 1
    ):
        """Wrap a built detector backend; use :meth:`from_zoo` / :meth:`from_checkpoint` to build one.

        Args:
            backend: the detector backend (torch or detectron2) holding the weights.
            config: the detectron2 config name it was built for.
            weights: the zoo name or path that :meth:`to_config` records.
            policy: how detections become crops (None: ``CropPolicy()``).
            batch_size: images per detector pass for :meth:`detect`.

        Raises:
            ValueError: ``batch_size`` < 1, or ``policy.mask`` with a model that has no mask head.
        """
        self.backend = backend
        self.config = config
        self.weights = weights  # zoo name or path: what to_config records
        self.policy = policy or CropPolicy()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        self.batch_size = batch_size
        if self.policy.mask and not backend.capabilities.masks:
            raise ValueError(
                f"CropPolicy(mask=True) needs the mask model; {config} has no mask head "
                "(use config='mask_rcnn_R_101_FPN_3x')"
            )

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        config: str = "faster_rcnn_R_101_FPN_3x",
        backend: str = "torch",
        device: str | torch.device = "auto",
        policy: CropPolicy | dict | str | None = None,
        *,
        precision: str = "fp32",
        channels_last: bool = False,
        batch_size: int = 1,
        weights_name: str | None = None,
        **settings: Any,
    ) -> Cropper:
        """Load detectron2 weights (.pkl zoo file, .pth, or our .safetensors) into the chosen backend.

        Args:
            path: the weights file.
            config: the detectron2 config the weights are for (``faster_rcnn_R_101_FPN_3x`` or
                ``mask_rcnn_R_101_FPN_3x``).
            backend: "torch" (pure torch, detectron2's numbers), "detectron2" (needs detectron2) or
                "auto" (detectron2 where installed, else torch).
            device: where the detector runs ("auto": CUDA when available, else CPU).
            policy: a ``CropPolicy``, its dict, or a select mode ("largest", "score", "all").
            precision: "fp32" (detectron2's numbers), "bf16" (CPU/GPU), "fp16" (CUDA) or "auto" (see
                ``set_precision``). The default is fp32, not ``runtime.DEFAULT_PRECISION``: a cropper built
                alone makes crop caches and training crops, which must be detectron2's exact boxes on every
                machine (``Pipeline`` asks for its own precision, "auto" by default).
            channels_last: run the torch backend's convolutions in channels-last layout.
            batch_size: images per detector pass for :meth:`detect`.
            weights_name: what :meth:`to_config` records as the weights (default: the absolute path).
            **settings: test settings (``min_size_test=800, max_size_test=1333, score_thresh_test=0.05,
                nms_thresh_test=0.5, detections_per_image=100``, RPN top-k/NMS) and/or CropPolicy fields
                (``classes``, ``min_score``, ``margin``, ...) that override ``policy``'s.

        Returns:
            The cropper, in ``precision``.

        Raises:
            ValueError: an unknown ``config`` or ``backend``, a bad policy or test setting, or
                ``mask=True`` with a model that has no mask head.
            TypeError: an unknown keyword in ``settings``, or a ``policy`` of another type.
            ImportError: ``backend="detectron2"`` without detectron2 installed.
            CheckpointError: the weights file is missing, unreadable, or does not fit the network.
            RuntimeError: a CUDA device was asked for and CUDA is not available.
        """
        mask_on = check_config(config)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
        test_settings, policy = _split_settings(policy, settings)
        if policy.mask and not mask_on:
            raise ValueError(
                f"CropPolicy(mask=True) needs the mask model; {config} has no mask head "
                "(use config='mask_rcnn_R_101_FPN_3x')"
            )
        if backend == "detectron2":
            from vehicle_cls.cropper.detectron2_backend import (
                INSTALL_HINT,
                detectron2_available,
            )

            if not detectron2_available():
                raise ImportError(INSTALL_HINT)
        state = load_state_dict(path)
        runner = _make_backend(backend, config, state, test_settings, device, channels_last, str(path))
        cropper = cls(runner, config, weights_name or os.path.abspath(path), policy, batch_size)
        cropper.set_precision(precision)
        return cropper

    @classmethod
    def from_zoo(
        cls, name: str = "faster_rcnn_R_101_FPN_3x", *, cache_dir: str | os.PathLike | None = None, **kwargs: Any
    ) -> Cropper:
        """Download (first use) and load a detectron2 model-zoo checkpoint by config name.

        Args:
            name: the model-zoo config name (``faster_rcnn_R_101_FPN_3x`` or ``mask_rcnn_R_101_FPN_3x``).
            cache_dir: where downloaded weights are kept (None: the user cache, see ``vehicle_cls.weights``).
            **kwargs: :meth:`from_checkpoint` arguments (``device``, ``policy``, ``precision``, settings).

        Returns:
            The cropper; :meth:`to_config` records the zoo name, not the cached path.

        Raises:
            ValueError: an unknown ``name`` (the message lists the known ones), or a bad argument.
            TypeError: an unknown keyword argument.
            WeightsError: the weights cannot be downloaded or fail their checksum.
            CheckpointError: the cached weights file cannot be read.
        """
        from vehicle_cls.weights import fetch_weights

        check_config(name)
        kwargs.setdefault("config", name)
        path = fetch_weights(name, cache_dir=cache_dir)
        return cls.from_checkpoint(path, weights_name=name, **kwargs)

    @classmethod
    def from_config(cls, d: dict[str, Any], device: str | torch.device = "auto", **overrides: Any) -> Cropper:
        """Rebuild a cropper from :meth:`to_config` output (what a classifier bundle stores).

        A config that asks for the detectron2 backend falls back to torch (same boxes) where detectron2
        is not installed.

        Args:
            d: the :meth:`to_config` dict (``weights`` required: a zoo name or a path).
            device: where the detector runs ("auto": CUDA when available, else CPU).
            **overrides: :meth:`from_checkpoint` arguments that replace the config's.

        Returns:
            The cropper.

        Raises:
            ValueError: no ``weights``, an unknown key (with a did-you-mean), or a bad value.
            TypeError: an unknown test setting or override.
            WeightsError: zoo weights that cannot be downloaded.
            CheckpointError: a weights file that is missing, unreadable, or does not fit the network.
        """
        from vehicle_cls.weights import KNOWN_WEIGHTS

        d = dict(d)
        check_keys(d, _CONFIG_KEYS, prefix="cropper.")
        if "weights" not in d:
            raise ValueError("cropper config has no 'weights' (zoo name or path)")
        kwargs: dict[str, Any] = dict(
            config=d.get("config", "faster_rcnn_R_101_FPN_3x"),
            backend=d.get("backend", "torch"),
            device=device,
            policy=CropPolicy.from_dict(d.get("policy", {}), prefix="cropper.policy."),
            precision=d.get("precision", "fp32"),
            channels_last=d.get("channels_last", False),
            batch_size=d.get("batch_size", 1),
            **d.get("test_settings", {}),
        )
        kwargs.update(overrides)
        if kwargs["backend"] == "detectron2":
            from vehicle_cls.cropper.detectron2_backend import detectron2_available

            if not detectron2_available():  # same boxes from the torch backend
                logger.warning("cropper config asks for the detectron2 backend, which is not installed; using torch")
                kwargs["backend"] = "torch"
        if d["weights"] in KNOWN_WEIGHTS:
            return cls.from_zoo(d["weights"], **kwargs)
        return cls.from_checkpoint(d["weights"], **kwargs)

    def to_config(self) -> dict[str, Any]:
        """JSON-ready description, so a bundle can rebuild this cropper with :meth:`from_config`.

        Returns:
            config, weights (zoo name or path), backend, test settings, policy, precision,
            channels_last and batch_size.
        """
        return {
            "config": self.config,
            "weights": self.weights,
            "backend": self.backend.name,
            "test_settings": self.settings.to_dict(),
            "policy": self.policy.to_dict(),
            "precision": self.backend.precision,
            "channels_last": self.backend.channels_last,
            "batch_size": self.batch_size,
        }

    def save_weights(self, path: str | os.PathLike) -> Path:
        """Write the weights in the project's own form (.safetensors, detectron2 names), loadable by
        :meth:`from_checkpoint` without pickle.

        Args:
            path: the file to write; it must end in ``.safetensors``.

        Returns:
            ``path``, as a ``Path``.

        Raises:
            ValueError: ``path`` does not end in ``.safetensors``.
        """
        return save_state_dict(self.backend.state_dict(), path)

    # ---------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        return self.backend.device

    @property
    def settings(self) -> InferenceSettings:
        return self.backend.settings

    @property
    def mask_on(self) -> bool:
        return self.capabilities.masks

    @property
    def capabilities(self) -> Capabilities:
        """What the detector backend runs: precisions, device images, masks."""
        return self.backend.capabilities

    def __repr__(self) -> str:
        return (
            f"Cropper(config={self.config!r}, weights={self.weights!r}, backend={self.backend.name!r}, "
            f"device={str(self.device)!r}, policy={self.policy})"
        )

    # ---------------------------------------------------------------- inference
    def detect(self, images: Any, batch_size: int | None = None, grouping: str = "auto") -> list[Detections]:
        """Detections (original pixels, detectron2's contiguous COCO ids) for each image, in order.

        An input that fails to decode gets ``Detections.failed(reason)`` and the others still run.

        Args:
            images: a list of RGB uint8 HxWx3 arrays or anything ``load_image`` accepts (a single
                image is accepted too).
            batch_size: images per forward pass (None: ``self.batch_size``).
            grouping: which images share a forward pass: "single" (one at a time), "size" (images of
                the same resized size, up to ``batch_size`` per pass: no padding, so results do not
                depend on batch mates), "padded" (``batch_size`` images padded together, as detectron2's
                ``model([...])``), or "auto": "single" on the CPU (measured faster there: a padded batch
                of 8 ran slower than 8 single passes) and "size" on accelerators.

        Returns:
            One ``Detections`` per image (all classes, before the crop policy).

        Raises:
            ValueError: an unknown ``grouping``.
        """
        decoded = [_decode(im) for im in _as_list(images)]
        good = [(i, d) for i, d in enumerate(decoded) if not isinstance(d, Detections)]
        bs = batch_size or self.batch_size
        out: list[Any] = list(decoded)
        mode = self._grouping(grouping)
        settings = self.settings if mode == "size" else None
        shapes = [(int(d.shape[0]), int(d.shape[1])) for _, d in good]
        for chunk in plan_batches(shapes, bs, mode, settings):
            for j, det in zip(chunk, self.backend([good[j][1] for j in chunk])):
                out[good[j][0]] = det
        return out

    def _grouping(self, grouping: str) -> str:
        if grouping not in GROUPINGS:
            raise ValueError(f"grouping must be one of {GROUPINGS}, not {grouping!r}")
        if grouping == "auto":  # a stand-in backend without a device counts as CPU
            device = getattr(self.backend, "device", None)
            return "size" if device is not None and torch.device(device).type != "cpu" else "single"
        return grouping

    @property
    def precision(self) -> str:
        return self.backend.precision

    def set_precision(self, precision: str, parts: tuple[str, ...] | None = None) -> None:
        """Run the detector in ``precision`` from now on, trading exactness for speed where asked.

        Args:
            precision: "fp32" (detectron2's exact numbers), "bf16"/"fp16" (the fast path, see
                :mod:`vehicle_cls.cropper.fast`) or "auto" (the fastest the backend supports, see
                ``runtime.resolve_precision``).
            parts: (torch backend) the detector parts run in low precision (None: the ones that keep
                agreement with fp32).

        Raises:
            ValueError: an unknown precision, fp16 without CUDA, or one the backend does not run.
        """
        precision = resolve_precision(
            precision, self.device, capabilities=self.capabilities, what=f"the {self.backend.name} detector"
        )
        self.backend.set_precision(precision, parts)

    def choose(self, images: Any, batch_size: int | None = None) -> list[list[CropChoice]]:
        """Detect, then apply the policy: per image the list of crop choices (none for a failed input).

        Args:
            images: as for :meth:`detect`.
            batch_size: images per forward pass (None: ``self.batch_size``).

        Returns:
            Per image, its ``CropChoice`` list (one, or one per vehicle with ``select="all"``; the whole
            image as the fallback where nothing was found).

        Raises:
            ValueError: the policy needs masks that the detections lack.
        """
        return [[] if d.error else self.policy.choose(d) for d in self.detect(images, batch_size)]

    def crop(self, images: Any, batch_size: int | None = None) -> list[list[np.ndarray]]:
        """Detect, choose and cut the crops on the CPU, for crop caches and training data.

        Args:
            images: as for :meth:`detect`.
            batch_size: images per forward pass (None: ``self.batch_size``).

        Returns:
            Per image, a list of RGB uint8 arrays (empty for an input that failed, which is logged).
        """
        from vehicle_cls.cropper.choose import detect_and_choose

        decoded = [_decode(im) for im in _as_list(images)]
        arrays: dict[int, np.ndarray] = {  # the inputs that decoded, by position, as arrays: cut with numpy
            i: d.cpu().numpy() if isinstance(d, torch.Tensor) else d
            for i, d in enumerate(decoded)
            if not isinstance(d, Detections)
        }
        out: list[list[np.ndarray]] = [[] for _ in decoded]
        for i, chosen in zip(arrays, detect_and_choose(self, list(arrays.values()), batch_size=batch_size)):
            if chosen.error:
                logger.warning("%s", chosen.error)
            out[i] = [cut(arrays[i], c, self.policy.mask_fill) for c in chosen.choices]
        return out


def _split_settings(
    policy: CropPolicy | dict | str | None, settings: dict[str, Any]
) -> tuple[InferenceSettings, CropPolicy]:
    check_keys(settings, _POLICY_FIELDS | _SETTING_FIELDS, what="cropper option", error=TypeError)
    test = InferenceSettings(**{k: v for k, v in settings.items() if k in _SETTING_FIELDS})
    if policy is None:
        base: dict[str, Any] = {}
    elif isinstance(policy, CropPolicy):
        base = policy.to_dict()
    elif isinstance(policy, str):
        base = {"select": policy}
    elif isinstance(policy, dict):
        base = dict(policy)
    else:
        raise TypeError(f"policy must be a CropPolicy, dict or select mode, not {type(policy).__name__}")
    base.update({k: v for k, v in settings.items() if k in _POLICY_FIELDS})
    return test, CropPolicy.from_dict(base)


def _make_backend(
    backend: str, config: str, state: dict, settings: InferenceSettings, device: Any, channels_last: bool, source: str
) -> DetectorBackend:
    """The named backend, in fp32 (``Cropper.set_precision`` then sets what was asked for)."""
    from vehicle_cls.cropper.detectron2_backend import (
        Detectron2DetectorBackend,
        detectron2_available,
    )

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    device = resolve_device(device)
    if backend == "auto":
        backend = "detectron2" if detectron2_available() else "torch"
        logger.info("cropper backend: %s", backend)
    if backend == "detectron2":
        return Detectron2DetectorBackend(config, state, settings, device, source)
    from vehicle_cls.cropper.torch_backend import TorchDetectorBackend

    return TorchDetectorBackend(config, state, settings, device, "fp32", channels_last, source)


def plan_batches(
    shapes: list[tuple[int, int]], batch_size: int, grouping: str, settings: InferenceSettings | None = None
) -> list[list[int]]:
    """Indices into ``shapes`` (original HxW) per forward pass, for a resolved ``grouping``
    (``settings``, the test sizes, are needed for "size")."""
    if grouping == "single":
        return [[i] for i in range(len(shapes))]
    if grouping == "padded":
        return [list(range(i, min(i + batch_size, len(shapes)))) for i in range(0, len(shapes), batch_size)]
    if settings is None:
        raise ValueError('grouping "size" needs the test settings')
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (h, w) in enumerate(shapes):
        groups.setdefault(resized_shape(h, w, settings.min_size_test, settings.max_size_test), []).append(i)
    return [members[j : j + batch_size] for members in groups.values() for j in range(0, len(members), batch_size)]


def _as_list(images: Any) -> list[Any]:
    if isinstance(images, (str, os.PathLike, bytes, np.ndarray)) or hasattr(images, "getpixel"):
        if isinstance(images, np.ndarray) and images.ndim == 4:
            return list(images)
        return [images]
    if isinstance(images, torch.Tensor):
        return list(images) if images.ndim == 4 else [images]
    if isinstance(images, Iterable):
        return list(images)
    return [images]


def _decode(image: Any) -> np.ndarray | torch.Tensor | Detections:
    """The RGB array of one input, or failed ``Detections`` naming it (so the batch goes on)."""
    if isinstance(image, Detections):  # already failed upstream
        return image
    try:
        rgb_array = isinstance(image, np.ndarray) and image.dtype == np.uint8
        rgb_tensor = isinstance(image, torch.Tensor) and image.dtype == torch.uint8
        if (rgb_array or rgb_tensor) and image.ndim == 3 and image.shape[2] == 3:
            # HWC RGB (a tensor: e.g. decoded on the device, used where it lies); the geometry limit
            # that every decode applies, so a 1 x 5000 strip fails alone instead of the whole call
            check_geometry(image, int(image.shape[1]), int(image.shape[0]))
            return image
        return load_image(image)
    except ImageError as exc:
        logger.warning("%s", exc)
        return Detections.failed(str(exc))
