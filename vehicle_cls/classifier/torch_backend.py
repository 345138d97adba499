"""The torch side of ``Classifier``: a torchvision backbone, its preprocessing and its bundle format.

``TorchClassifierBackend`` and ``keras.backend.KerasBackend`` implement the same interface (see
``backend.ClassifierBackend``), so ``Pipeline``, ``Classifier.predict`` and evaluation never ask
which one they hold. Crops are cut and resized on the model's device with ``roi_align``. On CUDA,
``classify`` sizes its batches to free memory unless given a size, and halves a batch that runs out.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vehicle_cls.batching import (
    BatchLimits,
    cuda_free_bytes,
    memory_batch_size,
    probe_bytes_per_image,
    run_in_batches,
)
from vehicle_cls.bundle import CONFIG_NAME, BundlePart, read_config
from vehicle_cls.classifier import bundle
from vehicle_cls.classifier.compiled import CompiledCopies, resolve_compile, uses_cuda_graphs
from vehicle_cls.classifier.factory import create_model, get_head, head_path
from vehicle_cls.classifier.fast import InferenceCopies
from vehicle_cls.classifier.forward import classify_logits
from vehicle_cls.classifier.preprocess import Preprocess, crop_resize_on_device, preprocess_images
from vehicle_cls.crops import DEFAULT_MASK_FILL, CropChoice
from vehicle_cls.runtime import Capabilities, check_precision, resolve_device

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 64  # crops per call where no size is given and memory is not measured (CPU)


class TorchClassifierBackend:
    """A torchvision classification model with the exact preprocessing it was trained with."""

    name = "torch"
    fork_safe = True  # DataLoader worker processes may run its transform

    def __init__(
        self,
        model: nn.Module,
        arch: str,
        classes: Sequence[str],
        preprocess: Preprocess | None = None,
        dropout: float = 0.2,
        device: str | torch.device = "cpu",
    ):
        self.arch = arch
        self.classes = list(classes)
        self.preprocess = preprocess or Preprocess()
        self.dropout = float(dropout)
        self.device = resolve_device(device)
        n_out = get_head(model, arch).out_features
        if n_out != len(self.classes):
            raise ValueError(f"head has {n_out} outputs but {len(self.classes)} classes were given")
        self.model = model.to(self.device).eval()
        self._fast = InferenceCopies()  # bf16/fp16 inference copies of ``model``
        self.compile_mode: str | None = None  # torch.compile mode of the inference copies (None: eager)
        self._compiled: CompiledCopies | None = None
        self.batch_limits = BatchLimits()
        self._memory_batch: dict[tuple[Any, ...], int] = {}  # measured CUDA batch size per input setting

    def __repr__(self) -> str:
        return f"TorchClassifierBackend(arch={self.arch!r}, preprocess={self.preprocess}, device={str(self.device)!r})"

    # ---- bundle -----------------------------------------------------------------------------
    @classmethod
    def load(
        cls, directory: str | os.PathLike, device: str | torch.device = "cpu", config: dict[str, Any] | None = None
    ) -> TorchClassifierBackend:
        """Open a torch bundle (``config``: its ``config.json`` when already read); refuses weights that
        do not fit ``config.json``."""
        config = config if config is not None else read_config(directory)
        arch, classes = config["arch"], config["classes"]
        try:
            preprocess = Preprocess.from_dict(config["preprocess"])
            model = create_model(arch, len(classes), weights=None, dropout=config.get("dropout") or 0.0)
        except (ValueError, TypeError) as exc:
            raise bundle.BundleError(f"{Path(directory) / CONFIG_NAME}: {exc}") from None
        state = bundle.read_weights(directory)
        bundle.check_weights_fit(
            model.state_dict(),
            state,
            head_weight_key=_head_weight_key(model, arch),
            num_classes=len(classes),
            arch=arch,
            where=str(directory),
        )
        model.load_state_dict(state, strict=True)
        return cls(model, arch, classes, preprocess, config.get("dropout") or 0.0, device)

    def bundle_part(self) -> BundlePart:
        """Our share of a bundle: arch, classes, dropout, preprocessing and ``model.safetensors``."""
        model = getattr(self.model, "_orig_mod", self.model)  # torch.compile wrapper -> plain names
        return bundle.torch_part(
            model.state_dict(),
            {
                "arch": self.arch,
                "classes": list(self.classes),
                "dropout": self.dropout,
                "preprocess": self.preprocess.to_dict(),
            },
        )

    # ---- placement --------------------------------------------------------------------------
    @property
    def capabilities(self) -> Capabilities:
        """Every precision (fp16 on CUDA), device images, torch.compile, batches sized to free CUDA memory."""
        cuda = self.device.type == "cuda"
        return Capabilities(
            precisions=("fp32", "bf16", "fp16") if cuda else ("fp32", "bf16"),
            device_images=True,
            masks=True,
            compile=True,
            memory_batches=True,
        )

    def to(self, device: str | torch.device) -> TorchClassifierBackend:
        self.device = resolve_device(device)
        self.model.to(self.device)
        return self

    def use_channels_last(self) -> None:
        """Store conv weights channels-last (faster convolutions on CUDA and recent CPUs)."""
        self.model.to(memory_format=torch.channels_last)

    def set_compile(self, mode: bool | str | None) -> None:
        """Run inference through ``torch.compile`` (True: "default" mode; "reduce-overhead" and
        "max-autotune" add CUDA graphs on CUDA, a short batch padded to the next power of two); False/None:
        eager. The saved model is never compiled."""
        resolved = resolve_compile(mode)
        if resolved == self.compile_mode:  # already set: keep what was compiled
            return
        self.compile_mode = resolved
        self._compiled = None if resolved is None else CompiledCopies(self._fast, resolved)

    # ---- inference --------------------------------------------------------------------------
    def predict_batch(self, batch: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
        """Softmax probabilities (N, C) float32 on the device for a preprocessed NCHW batch: fp32 runs
        the model as it is, bf16/fp16 its inference copy (vehicle_cls.classifier.fast: BN folded, low-precision
        weights, channels_last)."""
        check_precision(precision, self.capabilities, f"the torch classifier on {self.device}")
        if self._compiled is None:
            return classify_logits(self._fast, self.model, batch, precision, self.device).softmax(dim=1)
        if self._cuda_graphs():
            torch.compiler.cudagraph_mark_step_begin()  # the previous call's outputs are no longer read
        return classify_logits(self._compiled, self.model, batch, precision, self.device).softmax(dim=1)

    def _cuda_graphs(self) -> bool:
        return self.compile_mode is not None and uses_cuda_graphs(self.compile_mode, self.device)

    def transform(self, image: Any) -> torch.Tensor:
        """One image (RGB uint8 HxWx3 array, PIL image or CHW tensor) -> its (3, S, S) model input."""
        from vehicle_cls.io.images import load_image

        if not isinstance(image, torch.Tensor):
            image = load_image(image)
        return preprocess_images([image], self.preprocess, "cpu")[0]

    def prepare_crops(
        self,
        image: np.ndarray,
        choices: Sequence[CropChoice],
        mask_fill: Sequence[int] = DEFAULT_MASK_FILL,
        tensor: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(K, 3, S, S) model inputs for the chosen crops of one RGB image, computed on the device
        (``tensor``: the image as CHW uint8, e.g. pinned memory, when the caller has it)."""
        if tensor is None:
            if not image.flags.writeable or not image.flags.c_contiguous:  # torch wants writable memory
                image = np.array(image, order="C")
            tensor = torch.from_numpy(image).permute(2, 0, 1)
        cfg = self.preprocess
        img = tensor.to(self.device, non_blocking=True)
        out: list[torch.Tensor | None] = [None] * len(choices)
        plain = [i for i, c in enumerate(choices) if c.box is not None and c.mask is None]
        if plain:
            boxes = torch.tensor([choices[i].box for i in plain], dtype=torch.float32, device=self.device)
            for i, crop in zip(plain, crop_resize_on_device(img, boxes, cfg)):
                out[i] = crop
        for i, c in enumerate(choices):
            if out[i] is not None:
                continue
            source = img
            if c.mask is not None:
                keep = torch.from_numpy(np.asarray(c.mask, dtype=bool)).to(self.device)
                fill = torch.tensor(tuple(mask_fill), dtype=img.dtype, device=self.device).view(3, 1, 1)
                source = torch.where(keep, img, fill)
            box = None if c.box is None else torch.tensor([c.box], dtype=torch.float32, device=self.device)
            out[i] = crop_resize_on_device(source, box, cfg)[0]
        crops = [crop for crop in out if crop is not None]  # all of them: every choice was cut above
        if not crops:
            return torch.zeros((0, 3, cfg.input_size, cfg.input_size), device=self.device)
        return torch.stack(crops)

    def classify(
        self, prepared: Sequence[torch.Tensor], precision: str = "fp32", batch_size: int | None = DEFAULT_BATCH_SIZE
    ) -> np.ndarray:
        """Probabilities (M, C) for the crops of several ``prepare_crops`` calls, ``batch_size`` at a time
        (None: on CUDA as many as free memory allows, measured once per input setting). A batch that
        runs out of device memory is retried at half the size; no crop is dropped."""
        x = torch.cat(list(prepared)) if prepared else None
        if x is None or len(x) == 0:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        check_precision(precision, self.capabilities, f"the torch classifier on {self.device}")
        key = (precision, tuple(x.shape[1:]), str(self.device))
        auto = batch_size is None
        if batch_size is None:
            batch_size = self._memory_batch.get(key) or self._measure_batch_size(x[0], precision, key)
        pad = self._cuda_graphs()  # CUDA graphs replay recorded shapes: a short batch is padded to one

        def run(start: int, stop: int, size: int) -> torch.Tensor:
            chunk = x[start:stop]
            target = min(size, _next_power_of_two(len(chunk))) if pad else len(chunk)
            if target > len(chunk):
                chunk = torch.cat([chunk, chunk.new_zeros((target - len(chunk), *chunk.shape[1:]))])
            return self.predict_batch(chunk, precision)[: stop - start].cpu()

        def free_cache() -> None:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

        parts, final = run_in_batches(run, len(x), int(batch_size), free_cache)
        if auto and final < batch_size:
            self._memory_batch[key] = final  # remember what fitted
        return torch.cat(parts).numpy()

    def _measure_batch_size(self, sample: torch.Tensor, precision: str, key: tuple[Any, ...]) -> int:
        """The memory-sized batch for inputs like ``sample`` on CUDA (``DEFAULT_BATCH_SIZE`` elsewhere):
        peak memory of an eager probe batch, then ``batching.memory_batch_size`` of the free memory."""
        if self.device.type != "cuda":
            return DEFAULT_BATCH_SIZE

        def forward(batch: torch.Tensor) -> torch.Tensor:
            return classify_logits(self._fast, self.model, batch, precision, self.device)

        per_image = probe_bytes_per_image(forward, sample.to(self.device))
        free = cuda_free_bytes(self.device)
        size = memory_batch_size(free, per_image, self.batch_limits)
        logger.info(
            "classifier batch %d on %s (%.1f MiB per image, %.0f MiB free)",
            size,
            self.device,
            per_image / 2**20,
            free / 2**20,
        )
        self._memory_batch[key] = size
        return size


def _next_power_of_two(n: int) -> int:
    """The smallest power of two >= ``n``: the padded batch shapes (at most log2(max batch) + 1 of them,
    each one CUDA graph), wasting less than half of a batch."""
    return 1 << max(0, n - 1).bit_length()


def _head_weight_key(model: nn.Module, arch: str) -> str:
    path = head_path(arch)
    head = model.get_submodule(path)
    return f"{path}.{len(head) - 1}.weight" if isinstance(head, nn.Sequential) else f"{path}.weight"
