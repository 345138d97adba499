"""Classifier batches sized to device memory, and halving on out-of-memory (vehicle_cls.batching).

The arithmetic and the halving run on the CPU against hand computations and a model that raises
torch's out-of-memory error above a batch size; the memory probe itself needs CUDA (``-m gpu``).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vehicle_cls.batching import BatchLimits, memory_batch_size, run_in_batches
from vehicle_cls.classifier import Classifier, Preprocess
from vehicle_cls.pipeline import Pipeline

MIB = 2**20


# ---- the arithmetic --------------------------------------------------------------------------
@pytest.mark.parametrize("free, per_image, limits, expected", [
    (10 * 1024 * MIB, 50 * MIB, BatchLimits(), 102),  # 5120 MiB usable / 50 MiB = 102.4
    (1_000_000_000, 3_000_000, BatchLimits(safety=0.8), 266),  # 8e8 / 3e6 = 266.7
    (139 * 1024 * MIB, 10 * MIB, BatchLimits(), 512),  # 7116 fit: clamped to the maximum
    (139 * 1024 * MIB, 10 * MIB, BatchLimits(maximum=1000), 1000),
    (40 * MIB, 50 * MIB, BatchLimits(), 1),  # not even one fits: the minimum, the OOM halving has the last word
    (400 * MIB, 50 * MIB, BatchLimits(minimum=8), 8),  # 4 fit, raised to the minimum
    (0, 50 * MIB, BatchLimits(), 1),
    (-5, 50 * MIB, BatchLimits(), 1),
])
def test_memory_batch_size_by_hand(free, per_image, limits, expected):
    assert memory_batch_size(free, per_image, limits) == expected


def test_batch_limits_are_checked():
    with pytest.raises(ValueError, match="minimum"):
        BatchLimits(minimum=0)
    with pytest.raises(ValueError, match="minimum"):
        BatchLimits(minimum=16, maximum=8)
    with pytest.raises(ValueError, match="safety"):
        BatchLimits(safety=1.5)


# ---- halving on out-of-memory ----------------------------------------------------------------
class _Fits:
    """A stand-in for a model on a device that holds at most ``limit`` items per call."""

    def __init__(self, limit: int):
        self.limit, self.calls = limit, []

    def __call__(self, start: int, stop: int, size: int) -> list[int]:
        self.calls.append((start, stop))
        if stop - start > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory: tried {stop - start}")
        return list(range(start, stop))


def test_out_of_memory_halves_and_keeps_every_item():
    run = _Fits(limit=5)
    parts, final = run_in_batches(run, total=23, batch_size=16, on_oom=lambda: None)
    assert [i for part in parts for i in part] == list(range(23))  # nothing lost, in order
    assert final == 4  # 16 -> 8 -> 4
    assert run.calls[:3] == [(0, 16), (0, 8), (0, 4)]
    assert all(stop - start <= 5 for start, stop in run.calls[2:])


def test_out_of_memory_at_one_item_and_other_errors_are_raised():
    with pytest.raises(torch.OutOfMemoryError):
        run_in_batches(_Fits(limit=0), total=3, batch_size=4)

    def broken(start, stop, size):
        raise ValueError("not a memory problem")

    with pytest.raises(ValueError, match="not a memory problem"):
        run_in_batches(broken, total=3, batch_size=4)


@pytest.fixture(scope="module")
def clf():
    torch.manual_seed(0)
    return Classifier.create("resnet18", classes=[f"c{i}" for i in range(5)], preprocess=Preprocess(32),
                             device="cpu")


def _limit_batches(monkeypatch, engine, limit):
    """Make ``engine.predict_batch`` raise torch's out-of-memory error above ``limit`` rows."""
    sizes = []
    real = engine.predict_batch

    def predict_batch(batch, precision="fp32"):
        sizes.append(len(batch))
        if len(batch) > limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory: batch of {len(batch)}")
        return real(batch, precision)

    monkeypatch.setattr(engine, "predict_batch", predict_batch)
    return sizes


def test_classify_recovers_from_out_of_memory(clf, monkeypatch):
    torch.manual_seed(1)
    x = torch.randn(11, 3, 32, 32)
    reference = clf.backend.classify([x], "fp32", batch_size=1)
    sizes = _limit_batches(monkeypatch, clf.backend, limit=3)
    out = clf.backend.classify([x[:6], x[6:]], "fp32", batch_size=8)
    np.testing.assert_allclose(out, reference, atol=1e-6)
    assert sizes[:3] == [8, 4, 2] and max(sizes[2:]) == 2


def test_memory_sized_batch_remembers_what_fitted(clf, monkeypatch):
    x = torch.randn(9, 3, 32, 32)
    measured = []

    def measure(sample, precision, key):  # stands in for the CUDA probe: says 16 fit
        measured.append(key)
        return 16

    monkeypatch.setattr(clf.backend, "_memory_batch", {})
    monkeypatch.setattr(clf.backend, "_measure_batch_size", measure)
    sizes = _limit_batches(monkeypatch, clf.backend, limit=5)
    clf.backend.classify([x], "fp32", batch_size=None)
    assert sizes == [9, 8, 4, 4, 1]  # 16 (all 9 crops) and 8 ran out, 4 fitted
    sizes.clear()
    clf.backend.classify([x], "fp32", batch_size=None)
    assert len(measured) == 1 and sizes == [4, 4, 1]  # measured once; starts at the size that fitted


def test_pipeline_batch_sizes_on_cpu(clf, monkeypatch):
    photos = [f"tests/data/predict/{n}.jpg" for n in ("car5", "minibus5", "pickup5", "truck5")]
    seen = []
    real = clf.backend.classify

    def classify(prepared, precision="fp32", batch_size=64):
        seen.append(batch_size)
        return real(prepared, precision, batch_size)

    monkeypatch.setattr(clf.backend, "classify", classify)
    Pipeline(None, clf, device="cpu", batch_size=4, num_workers=0)(photos)
    Pipeline(None, clf, device="cpu", batch_size=4, num_workers=0, classifier_batch_size=2)(photos)
    assert seen == [4, 2]  # CPU: the pipeline's batch unless fixed (memory sizing is CUDA only)
    with pytest.raises(ValueError, match="classifier_batch_size"):
        Pipeline(None, clf, device="cpu", classifier_batch_size=0)


def test_pipeline_results_survive_out_of_memory(clf, monkeypatch):
    photos = [f"tests/data/predict/{n}.jpg" for n in ("car5", "minibus5", "pickup5", "truck5")] * 2
    expected = Pipeline(None, clf, device="cpu", batch_size=8, num_workers=0)(photos)
    sizes = _limit_batches(monkeypatch, clf.backend, limit=3)
    got = Pipeline(None, clf, device="cpu", batch_size=8, num_workers=0)(photos)
    assert sizes == [8, 4, 2, 2, 2, 2]  # 8 and 4 ran out; four calls of 2 classified all 8 crops
    assert [r.ok for r in got] == [True] * 8
    for a, b in zip(got, expected):
        np.testing.assert_allclose([p for _, p in a.best.topk], [p for _, p in b.best.topk], atol=1e-6)


# ---- CUDA ------------------------------------------------------------------------------------
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@cuda
def test_cuda_probe_and_memory_sized_batches():
    from vehicle_cls.batching import cuda_free_bytes, probe_bytes_per_image

    torch.manual_seed(0)
    gpu = Classifier.create("resnet50", classes=[f"c{i}" for i in range(7)], preprocess=Preprocess(224),
                            device="cuda")
    sample = torch.randn(3, 224, 224, device="cuda")
    with torch.inference_mode():
        per_image = probe_bytes_per_image(gpu.model, sample, n=8)
    # ResNet50 at 224 in fp32: the largest activation alone is 64x112x112 floats = 3.2 MB per image
    assert 3_000_000 < per_image < 2_000_000_000
    free = cuda_free_bytes(torch.device("cuda"))
    assert 0 < free <= torch.cuda.get_device_properties(0).total_memory
    x = torch.randn(40, 3, 224, 224)
    out = gpu.backend.classify([x], "fp32", batch_size=None)  # memory-sized: all 40 in one call here
    assert 1 <= gpu.backend._memory_batch[("fp32", (3, 224, 224), "cuda:0")] <= 512
    ref = gpu.backend.classify([x], "fp32", batch_size=8)
    np.testing.assert_allclose(out, ref, atol=1e-3)  # same network; cuDNN may pick other kernels per size
