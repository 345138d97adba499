"""The demo: shipped data (CC BY 4.0, attributed), honest splits, and an end-to-end run (shrunk for speed)."""
from __future__ import annotations

import argparse
import copy
import json

from vehicle_cls.train import demo

CLASSES = ["bike", "car", "juggernaut", "minibus", "pickup", "truck"]


def test_shipped_set_is_small_attributed_and_readable():
    root = demo.demo_data_dir()
    attribution = (root / "ATTRIBUTION.md").read_text()
    assert "CC BY 4.0" in attribution and "Zenodo record 6634554" in attribution
    files = sorted(root.glob("*/*.jpg"))
    assert sorted({f.parent.name for f in files}) == CLASSES
    assert all(len(list((root / c).glob("*.jpg"))) == 800 for c in CLASSES)
    assert sum(f.stat().st_size for f in files) < 15 * 10**6  # the package stays small
    assert "quality 78" in attribution  # re-encoded: the attribution says so
    from vehicle_cls.io.images import load_image

    assert all(load_image(f).shape == (100, 100, 3) for f in files[::400])


def test_demo_splits_hold_out_160_test_photos_per_class():
    from vehicle_cls.train.splits import prepare_splits

    cfg = demo.demo_config("unused")
    s = prepare_splits(cfg.data)
    assert s.classes == CLASSES
    assert len(s.test) == 960 and len(s.val) == 384 and len(s.train) == 3456
    assert all(n == 160 for n in s.test.class_counts().values())
    test = {x.path for x in s.test}
    assert not test & ({x.path for x in s.train} | {x.path for x in s.val})
    assert prepare_splits(cfg.data).to_dict() == s.to_dict()  # the same split every time


def test_demo_end_to_end_shrunk(tmp_path, monkeypatch, capsys):
    """The real demo code path with a tiny input size and 5 training photos per class, 1 epoch."""
    recipe = copy.deepcopy(demo.DEMO_RECIPE)
    recipe["model"]["input_size"] = 16
    recipe["data"]["max_per_class"] = 5
    monkeypatch.setattr(demo, "DEMO_RECIPE", recipe)
    from vehicle_cls.cli import demo as demo_cli

    parser = argparse.ArgumentParser()
    demo_cli.register(parser.add_subparsers())
    args = parser.parse_args(["demo", "--out", str(tmp_path), "--epochs", "1", "--no-progress", "--threads", "1"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["num_samples"] == 960 and report["split"] == "test"
    assert f"test top-1 accuracy {report['top1']:.1%} on 960 held-out photos" in out
    assert "baseline" in out and "bench_train.py accuracy" in out  # the recorded comparison, and its command
    for c in CLASSES:
        assert f"  {c:<11} " in out
    assert str(tmp_path / "report" / "report.md") in out
    pngs = sorted((tmp_path / "predictions").glob("*.png"))
    assert len(pngs) == 6
    from PIL import Image

    assert Image.open(pngs[0]).size == (300, 300)
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()
    # what was trained on never includes a test photo
    splits = json.loads((tmp_path / "run" / "splits.json").read_text())
    assert not {p for p, _, _ in splits["test"]} & {p for p, _, _ in splits["train"] + splits["val"]}
    assert len(splits["train"]) == 30
