"""``torch.compile`` of the classifier (``Pipeline(compile=...)``, ``TorchClassifierBackend.set_compile``).

Compiling a ResNet-18 at 64 px with inductor takes ~25-40 s on a 2-core CPU: one test compiles,
the rest check the options and the fixed-shape padding CUDA graphs need without compiling.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vehicle_cls.classifier import Classifier, Preprocess
from vehicle_cls.classifier.compiled import resolve_compile, uses_cuda_graphs
from vehicle_cls.pipeline import Pipeline

PHOTOS = sorted(str(p) for p in (Path(__file__).parents[1] / "data").glob("*/*.jpg"))


def _classifier(device: str = "cpu") -> Classifier:
    torch.manual_seed(0)
    clf = Classifier.create("resnet18", classes=[f"c{i}" for i in range(6)], preprocess=Preprocess(64),
                            device=device)
    with torch.no_grad():
        clf.model.fc[-1].weight.mul_(20)  # spread the probabilities: a top-1 flip or drift would show
    return clf


def test_compile_options():
    assert resolve_compile(False) is None and resolve_compile(None) is None
    assert resolve_compile(True) == "default" and resolve_compile("reduce-overhead") == "reduce-overhead"
    with pytest.raises(ValueError, match="compile must be"):
        resolve_compile("fast")
    assert uses_cuda_graphs("reduce-overhead", "cuda") and not uses_cuda_graphs("reduce-overhead", "cpu")
    assert not uses_cuda_graphs("max-autotune-no-cudagraphs", "cuda") and not uses_cuda_graphs("default", "cuda")


def test_compiled_classifier_matches_eager():
    """Compiled (inductor, CPU) and eager: same top-1 on every photo, probabilities within 1e-4."""
    clf = _classifier()
    photos = PHOTOS[:10]
    eager = Pipeline(None, clf, device="cpu", batch_size=4, precision="fp32", num_workers=0)(photos)
    compiled = Pipeline(None, clf, device="cpu", batch_size=4, precision="fp32", num_workers=0, compile=True)(photos)
    assert clf.backend._compiled is not None
    top = [[p for _, p in r.best.topk] for r in eager]
    assert len({round(t[0], 2) for t in top}) > 1  # not a constant output
    assert [r.best.class_index for r in compiled] == [r.best.class_index for r in eager]
    # measured max |dp| 1.2e-7 (fp32 kernels fused differently); 1e-4 leaves room for other CPUs
    np.testing.assert_allclose([[p for _, p in r.best.topk] for r in compiled], top, atol=1e-4)
    clf.backend.set_compile(False)
    assert clf.backend._compiled is None


def test_fixed_shapes_pad_the_last_batch(monkeypatch):
    """With CUDA graphs every call has one of a few fixed shapes (powers of two up to the batch size);
    the padding rows are dropped."""
    clf = _classifier()
    x = torch.randn(11, 3, 64, 64)
    expected = clf.backend.classify([x], "fp32", batch_size=4)
    shapes = []
    real = clf.backend.predict_batch

    def predict_batch(batch, precision="fp32"):
        shapes.append(len(batch))
        return real(batch, precision)

    monkeypatch.setattr(clf.backend, "predict_batch", predict_batch)
    monkeypatch.setattr(clf.backend, "_cuda_graphs", lambda: True)
    out = clf.backend.classify([x[:5], x[5:]], "fp32", batch_size=4)
    assert shapes == [4, 4, 4] and out.shape == (11, 6)
    # eval-mode rows do not see their batch mates; oneDNN picks kernels by batch size, so fp32 sums round
    # differently (2.6e-6 measured on an AMX Xeon): a padding row leaking in would move them by far more
    np.testing.assert_allclose(out, expected, atol=1e-5)
    shapes.clear()  # fewer crops than a (memory-sized) batch: padded to the next power of two only
    out = clf.backend.classify([x], "fp32", batch_size=64)
    assert shapes == [16] and out.shape == (11, 6)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    shapes.clear()
    clf.backend.classify([x[:1]], "fp32", batch_size=64)
    assert shapes == [1]


def test_compile_needs_the_torch_backend():
    from vehicle_cls.runtime import Capabilities

    class NotTorch:
        name = "keras"
        classes = ["a"]
        device = "cpu"
        capabilities = Capabilities()  # fp32, no torch.compile

        def to(self, device):
            return self

        def use_channels_last(self):
            pass

    clf = Classifier.__new__(Classifier)  # a backend without set_compile, e.g. Keras
    clf.backend, clf.training = NotTorch(), None
    with pytest.raises(ValueError, match="compile needs a classifier backend that compiles"):
        Pipeline(None, clf, device="cpu", compile=True)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@cuda
def test_cuda_graphs_match_eager():
    clf = _classifier("cuda")
    x = torch.randn(13, 3, 64, 64)
    eager = clf.backend.classify([x], "bf16", batch_size=8)
    clf.backend.set_compile("reduce-overhead")
    assert clf.backend._cuda_graphs()
    for _ in range(3):  # warm-up runs, then graph replays (13 = 8 + 5 padded to 8)
        graphs = clf.backend.classify([x], "bf16", batch_size=8)
    assert (graphs.argmax(1) == eager.argmax(1)).all()
    np.testing.assert_allclose(graphs, eager, atol=2e-2)  # bf16: fused kernels round differently
