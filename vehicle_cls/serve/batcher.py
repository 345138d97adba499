"""Group concurrent requests into model batches: one model, one worker thread, bounded latency.

Each submitted image becomes a job on an asyncio queue. A collector task takes the first waiting
job, then keeps taking jobs until ``max_batch_size`` are gathered or ``max_wait_ms`` has passed, and
runs ``predict(sources)`` for the whole group in a single worker thread (so the event loop keeps
accepting requests while the model runs, and the model is never called concurrently).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from vehicle_cls.errors import one_line

logger = logging.getLogger(__name__)

PredictFn = Callable[[list[Any]], Sequence[Any]]  # sources -> one object with .to_dict() per source


@dataclass
class BatchStats:
    """Counters for /metrics: how many model calls served how many images."""

    model_calls: int = 0
    images: int = 0
    max_batch: int = 0
    busy_seconds: float = 0.0
    batch_sizes: dict[int, int] = field(default_factory=dict)  # batch size -> number of model calls

    def record(self, size: int, seconds: float) -> None:
        self.model_calls += 1
        self.images += size
        self.max_batch = max(self.max_batch, size)
        self.busy_seconds += seconds
        self.batch_sizes[size] = self.batch_sizes.get(size, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_calls": self.model_calls,
            "images": self.images,
            "mean_batch_size": round(self.images / self.model_calls, 3) if self.model_calls else 0.0,
            "max_batch_size": self.max_batch,
            "model_busy_seconds": round(self.busy_seconds, 3),
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
        }


class ModelError(RuntimeError):
    """The model failed on this image alone (a failed batch is retried image by image first)."""


@dataclass
class _Job:
    source: Any
    future: asyncio.Future


class Batcher:
    """Run ``predict`` on groups of concurrently submitted sources; ``submit`` awaits their results."""

    def __init__(self, predict: PredictFn, max_batch_size: int = 16, max_wait_ms: float = 10.0, max_queue: int = 1024):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, not {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, not {max_wait_ms}")
        self.predict = predict
        self.max_batch_size = int(max_batch_size)
        self.max_wait = float(max_wait_ms) / 1000.0
        self.max_queue = int(max_queue)
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def queued(self) -> int:
        return 0 if self._queue is None else self._queue.qsize()

    async def start(self) -> None:
        """Start the collector task on the running event loop."""
        if self.running:
            return
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="vehicle_cls-model")
        self._task = asyncio.get_running_loop().create_task(self._collect(), name="vehicle_cls-batcher")

    async def stop(self) -> None:
        """Stop collecting; jobs still queued fail with a one-line error instead of hanging."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._queue is not None:
            while not self._queue.empty():
                job = self._queue.get_nowait()
                if not job.future.done():
                    job.future.set_exception(RuntimeError("the server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def submit(self, sources: Sequence[Any]) -> list[dict[str, Any]]:
        """JSON-ready results for ``sources``, in order (each may share a batch with other requests)."""
        if not self.running or self._queue is None:
            raise RuntimeError("the batcher is not running")
        loop = asyncio.get_running_loop()
        jobs = [_Job(s, loop.create_future()) for s in sources]
        for job in jobs:
            await self._queue.put(job)
        return list(await asyncio.gather(*(job.future for job in jobs)))

    async def _collect(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch_size:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    while len(batch) < self.max_batch_size and not self._queue.empty():
                        batch.append(self._queue.get_nowait())  # already waiting: no reason to leave them
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except asyncio.TimeoutError:
                    continue
            batch = [job for job in batch if not job.future.done()]  # e.g. the client went away
            if batch:
                await self._run(loop, batch)

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Job]) -> None:
        started = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self._predict_dicts, [j.source for j in batch])
        except Exception as exc:  # the model failed: retried image by image, so only the culprit fails
            if len(batch) > 1:
                logger.warning(
                    "model call failed for a batch of %d (%s: %s); retrying its images one by one",
                    len(batch),
                    type(exc).__name__,
                    one_line(exc),
                )
                for job in batch:
                    _rewind(job.source)
                    await self._run(loop, [job])
                return
            logger.error("model call failed for one image: %s: %s", type(exc).__name__, one_line(exc))
            message = one_line(f"model call failed ({type(exc).__name__}: {exc})")
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(ModelError(message))
            return
        self.stats.record(len(batch), time.perf_counter() - started)
        for job, result in zip(batch, results):
            if not job.future.done():
                job.future.set_result(result)

    def _predict_dicts(self, sources: list[Any]) -> list[dict[str, Any]]:
        out = list(self.predict(sources))
        if len(out) != len(sources):
            raise RuntimeError(
                f"the pipeline returned {len(out)} results for {len(sources)} images "
                "(serving needs exactly one result per image)"
            )
        return [r.to_dict() for r in out]


def _rewind(source: Any) -> None:
    """Put a file-like source back at its start (a failed batch read it) before it is tried again."""
    seek = getattr(source, "seek", None)
    if callable(seek):
        try:
            seek(0)
        except (OSError, ValueError):
            pass
