"""DDP: two CPU processes (torchrun, gloo) train on disjoint shards and match a single-process run."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

DEMO = Path(__file__).resolve().parents[2] / "vehicle_cls" / "assets" / "demo_vehicle_types"
CLASSES = ["bike", "car", "minibus"]

WORKER = textwrap.dedent('''
    import json, os, sys
    import torch
    from torch import nn
    from vehicle_cls.classifier import Classifier, Preprocess
    from vehicle_cls.train.config import TrainConfig
    from vehicle_cls.train.trainer import train

    data, out, log = sys.argv[1], sys.argv[2], sys.argv[3]

    class TinyNet(nn.Module):  # no BatchNorm, no dropout: a per-rank batch statistic would differ
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                          nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                                          nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.fc = nn.Sequential(nn.Dropout(0.0), nn.Linear(16, 3))
        def forward(self, x):
            return self.fc(self.features(x))

    torch.manual_seed(0)
    clf = Classifier(TinyNet(), "resnet18", ["bike", "car", "minibus"], Preprocess(input_size=16))
    cfg = TrainConfig.from_dict({
        "data": {"train": data, "val_fraction": 0.2, "num_workers": 0},
        "optim": {"name": "sgd", "lr": 0.1, "warmup_epochs": 0},
        "augment": {"enabled": False},
        "run": {"out_dir": out, "epochs": 2, "batch_size": 4, "precision": "fp32", "tensorboard": False,
                "progress": False, "threads": 1, "channels_last": False},
    }).validate()
    seen = []
    train(cfg, classifier=clf, on_batch=lambda epoch, step, idx: seen.append([epoch, step, idx.tolist()]))
    rank = int(os.environ.get("RANK", "0"))
    with open(f"{log}.rank{rank}.json", "w") as f:
        json.dump({"world": int(os.environ.get("WORLD_SIZE", "1")), "seen": seen}, f)
''')


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


@pytest.mark.slow
def test_two_process_gloo_matches_single_process(tmp_path):
    data = tmp_path / "photos"
    for c in CLASSES:  # 5 per class -> 4 train + 1 val; 12 train images, global batch 4 -> 3 steps/epoch
        (data / c).mkdir(parents=True)
        for f in sorted((DEMO / c).glob("*.jpg"))[:5]:
            shutil.copy(f, data / c / f.name)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(data), str(tmp_path / "ddp"), str(tmp_path / "ddp_log")],
        env=_env(), capture_output=True, text=True, timeout=240, check=False)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = subprocess.run([sys.executable, str(script), str(data), str(tmp_path / "single"), str(tmp_path / "single_log")],
                            env=_env(), capture_output=True, text=True, timeout=240, check=False)
    assert single.returncode == 0, single.stderr[-3000:]

    r0 = json.loads((tmp_path / "ddp_log.rank0.json").read_text())
    r1 = json.loads((tmp_path / "ddp_log.rank1.json").read_text())
    one = json.loads((tmp_path / "single_log.rank0.json").read_text())
    assert r0["world"] == r1["world"] == 2 and one["world"] == 1
    assert len(r0["seen"]) == len(r1["seen"]) == len(one["seen"]) == 6  # 3 steps x 2 epochs
    for epoch in (0, 1):
        a = [i for e, _, idx in r0["seen"] if e == epoch for i in idx]
        b = [i for e, _, idx in r1["seen"] if e == epoch for i in idx]
        assert len(a) == len(b) == 6 and not set(a) & set(b)  # disjoint shards ...
        assert sorted(a + b) == list(range(12))  # ... covering the training split once
    # each global step trains on the same images as the single-process step (2 per rank, 4 in all)
    for (e0, s0, i0), (e1, s1, i1), (e, s, i) in zip(r0["seen"], r1["seen"], one["seen"]):
        assert (e0, s0) == (e1, s1) == (e, s) and sorted(i0 + i1) == sorted(i)

    # only rank 0 wrote the run directory; its weights equal the single-process run's
    assert (tmp_path / "ddp" / "last.pt").is_file() and (tmp_path / "ddp" / "best" / "config.json").is_file()
    assert not list((tmp_path / "ddp").glob("*.tmp"))
    a = torch.load(tmp_path / "ddp" / "last.pt", map_location="cpu", weights_only=True)
    b = torch.load(tmp_path / "single" / "last.pt", map_location="cpu", weights_only=True)
    assert a["step"] == b["step"] == 6
    for k in b["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-4, atol=1e-5)
    assert a["history"][-1]["val_loss"] == pytest.approx(b["history"][-1]["val_loss"], rel=1e-4)
