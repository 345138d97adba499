"""Pipeline's decoding stage: inputs decoded in order by worker threads under a pixel budget, large
JPEGs decoded reduced, and (on a device) JPEGs left for one batched device decode per batch."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vehicle_cls.errors import one_line
from vehicle_cls.io.device_decode import EncodedJpeg, decode_jpegs, jpeg_for_device
from vehicle_cls.io.images import ImageError, load_image_reduced
from vehicle_cls.io.inputs import InputItem

logger = logging.getLogger(__name__)


@dataclass
class Decoded:
    """A decoded input (or why it failed), produced by the background workers."""

    item: InputItem
    image: np.ndarray | None = None  # RGB uint8 HxWx3 (None when decoded on the device)
    tensor: torch.Tensor | None = None  # CHW uint8: a view of ``image`` (pinned for CUDA) or on the device
    error: str | None = None
    full_size: tuple[int, int] | None = None  # (height, width) of the original; None: as decoded
    encoded: EncodedJpeg | None = None  # a JPEG waiting for the batched device decode

    @property
    def decoded_hw(self) -> tuple[int, int] | None:
        """(height, width) of the pixels (known from the header before a device decode)."""
        if self.tensor is not None:
            return int(self.tensor.shape[1]), int(self.tensor.shape[2])
        if self.image is not None:
            return int(self.image.shape[0]), int(self.image.shape[1])
        return self.encoded.shape if self.encoded is not None else None

    @property
    def pixels(self) -> int:
        hw = self.decoded_hw
        return 0 if hw is None else hw[0] * hw[1]

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the original image, what results report."""
        hw = self.decoded_hw
        assert hw is not None
        return self.full_size or hw

    @property
    def scale(self) -> tuple[float, float]:
        """(x, y) original pixels per decoded pixel: 1 unless a large JPEG was decoded reduced."""
        hw = self.decoded_hw
        assert hw is not None
        h, w = self.size
        return w / hw[1], h / hw[0]

    def array(self) -> np.ndarray:
        """The pixels as an RGB uint8 HxWx3 array (copied from the device when decoded there)."""
        if self.image is None:
            assert self.tensor is not None
            self.image = np.ascontiguousarray(self.tensor.permute(1, 2, 0).cpu().numpy())
        return self.image


class _Raised:
    def __init__(self, exc: BaseException):
        self.exc = exc


class PixelBudget:
    """Decoded pixels held by the pipeline; decoding waits while they exceed the budget."""

    def __init__(self, limit: int):
        self.limit, self.held = limit, 0
        self.cond = threading.Condition()

    def add(self, n: int) -> None:
        with self.cond:
            self.held += n

    def release(self, n: int) -> None:
        with self.cond:
            self.held -= n
            self.cond.notify_all()

    def wait_below(self, stop: threading.Event) -> bool:
        with self.cond:
            while self.held >= self.limit and not stop.is_set():
                self.cond.wait(0.05)
        return not stop.is_set()


_END = object()


@dataclass
class Decoder:
    """Decodes Pipeline inputs: ``num_workers`` threads (0: in the caller), JPEGs over
    ``max_decode_side`` reduced; with ``on_device``, JPEG paths/bytes are only read and checked here and
    decoded in ``finish_on_device`` (``explicit``: the user asked for it, so CPU fallbacks log at info)."""

    device: torch.device
    num_workers: int = 2
    max_decode_side: int | None = None
    on_device: bool = False
    explicit: bool = False

    def decode(self, item: InputItem, budget: PixelBudget | None = None) -> Decoded:
        """``item`` decoded (or left for the batched device decode), its pixels added to ``budget``."""
        decoded = self._decode_item(item)
        if budget is not None:
            budget.add(decoded.pixels)
        return decoded

    def _decode_item(self, item: InputItem) -> Decoded:
        if item.error is not None:
            return Decoded(item, error=item.error)
        if item.image is None and self.on_device:
            try:
                encoded, reason = jpeg_for_device(item.source, self.max_decode_side)
            except ImageError as exc:
                return Decoded(item, error=f"{item.name}: {exc.reason}")  # the name a NamedInput gave
            if encoded is not None:
                return Decoded(item, encoded=encoded)
            log = logger.info if self.explicit else logger.debug
            log("%s: decoded on the CPU: %s", item.name, reason)
        return self.decode_on_cpu(item)

    def decode_on_cpu(self, item: InputItem) -> Decoded:
        """``item`` decoded by PIL (a large JPEG reduced), or why it could not be."""
        full_size = None
        try:
            if item.image is not None:  # a video frame: already decoded
                image = item.image
            else:
                image, (width, height) = load_image_reduced(item.source, self.max_decode_side)
                full_size = (int(height), int(width))
        except ImageError as exc:
            return Decoded(item, error=f"{item.name}: {exc.reason}")  # the name a NamedInput gave
        except Exception as exc:  # a decoder bug must not end the batch either
            return Decoded(item, error=f"{item.name}: {type(exc).__name__}: {exc}")
        if not image.flags.writeable:  # torch wants writable memory; decoders may hand out read-only views
            image = image.copy()
        tensor = torch.from_numpy(image).permute(2, 0, 1)
        if self.device.type == "cuda":
            tensor = tensor.pin_memory()
        return Decoded(item, image=image, tensor=tensor, full_size=full_size)

    def stream(self, items: Iterator[InputItem], prefetch: int, budget: PixelBudget) -> Iterator[Decoded]:
        """Decode ``items`` in order with ``num_workers`` threads, at most ``prefetch`` in flight and
        no new decode started while the decoded pixels held exceed ``budget``."""
        if self.num_workers <= 0:
            for item in items:
                yield self.decode(item, budget)
            return
        pending: queue.Queue[Any] = queue.Queue(maxsize=prefetch)
        stop = threading.Event()
        pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="vehicle_cls-decode")
        undecoded = threading.Semaphore(self.num_workers)  # decodes started but not finished

        def put(obj: Any) -> bool:
            while not stop.is_set():
                try:
                    pending.put(obj, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        def decode(item: InputItem) -> Decoded:
            try:
                return self.decode(item, budget)
            finally:
                undecoded.release()

        def produce() -> None:
            try:
                for item in items:
                    while not undecoded.acquire(timeout=0.05):  # first a free decode thread, then the budget:
                        if stop.is_set():  # held pixels stay below budget + num_workers images
                            return
                    if not budget.wait_below(stop) or not put(pool.submit(decode, item)):
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

    def finish_on_device(self, decoded: list[Decoded]) -> None:
        """Decode the batch's waiting JPEGs on the device in one call; one that fails there is decoded
        on the CPU instead (which gives a corrupt file its usual one-line error)."""
        waiting = [dec for dec in decoded if dec.encoded is not None]
        if not waiting:
            return
        for dec, out in zip(waiting, decode_jpegs([d.encoded for d in waiting], self.device)):  # type: ignore[misc]
            dec.encoded = None
            if isinstance(out, torch.Tensor):
                dec.tensor = out
                continue
            logger.info("%s: device decode failed (%s); decoding on the CPU", dec.item.name, one_line(out))
            cpu = self.decode_on_cpu(dec.item)
            dec.image, dec.tensor, dec.error, dec.full_size = cpu.image, cpu.tensor, cpu.error, cpu.full_size
