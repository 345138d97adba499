"""Training precision: ``run.precision: auto`` trains bf16 on CPUs with native bf16 (fp32 on others, where
bf16 is emulated and slow), except below the input size where torch 2.14.1's bf16 CPU backward was
measured to give garbage gradients (trainer.py)."""
from __future__ import annotations

import logging

import pytest
import torch

from vehicle_cls import runtime
from vehicle_cls.train import trainer
from vehicle_cls.train.trainer import MIN_BF16_CPU_INPUT, training_precision

CPU = torch.device("cpu")


@pytest.fixture
def native_bf16(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: True)


def test_auto_trains_fp32_on_cpu_below_the_safe_input_size(native_bf16):
    assert runtime.resolve_precision("auto", CPU, training=True) == "bf16"  # what auto would pick otherwise
    assert training_precision("auto", CPU, 16) == "fp32"  # where the garbage gradients were seen
    assert training_precision("auto", CPU, 32) == "fp32"
    assert training_precision("auto", CPU, MIN_BF16_CPU_INPUT - 1) == "fp32"
    assert training_precision("auto", CPU, MIN_BF16_CPU_INPUT) == "bf16"
    assert training_precision("auto", CPU, 96) == "bf16"  # the demo's size


def test_auto_trains_fp32_on_a_cpu_without_native_bf16(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: False)
    assert training_precision("auto", CPU, 96) == "fp32"  # emulated bf16 was 16x slower (trainer.py)
    assert training_precision("bf16", CPU, 96) == "bf16"  # asked for: kept


@pytest.mark.parametrize(("bf16_supported", "expected"), [(True, "bf16"), (False, "fp16")])
def test_auto_on_cuda_trains_bf16_where_the_card_has_it_else_fp16(monkeypatch, bf16_supported, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_supported)
    cuda = torch.device("cuda", 0)
    assert training_precision("auto", cuda, 96) == expected
    assert training_precision("auto", cuda, 16) == expected  # the tiny-input guard is for the CPU kernels only
    assert training_precision("fp32", cuda, 96) == "fp32"


def test_explicit_precisions_are_kept_and_small_bf16_warns(caplog):
    assert training_precision("fp32", CPU, 96) == "fp32"
    with caplog.at_level(logging.WARNING, logger=trainer.__name__):
        assert training_precision("bf16", CPU, 16) == "bf16"
    assert "garbage gradients" in caplog.text and "16 px" in caplog.text
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        training_precision("fp16", CPU, 96)


@pytest.mark.parametrize(("size", "expected"), [(16, "fp32"), (96, "bf16")])
def test_the_trainer_uses_the_guarded_precision(tmp_path, size, expected, native_bf16):
    """The trainer's set-up (no training) resolves precision auto through the guard."""
    from vehicle_cls.train.config import TrainConfig
    from vehicle_cls.train.demo import demo_data_dir
    from vehicle_cls.train.distributed import shutdown

    cfg = TrainConfig.from_dict({
        "data": {"train": str(demo_data_dir()), "layout": "folders", "val_fraction": 0.0, "max_per_class": 2,
                 "num_workers": 0},
        "model": {"arch": "resnet18", "input_size": size},
        "run": {"out_dir": str(tmp_path / "run"), "precision": "auto", "tensorboard": False, "progress": False},
    }).validate()
    t = trainer.Trainer(cfg)
    try:
        t._setup(resume=False)
    finally:
        shutdown(getattr(t, "dist", None))
    assert t.precision == expected
