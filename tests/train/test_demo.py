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
    assert "s wall, " in out and "s process CPU" in out  # the 3-minute budget is checkable from the output
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


def test_recorded_comparison_shows_both_runs_and_the_paired_difference(monkeypatch):
    recorded = {"recipe": {"top1": 0.93, "interval": 0.004, "seeds": [0, 1, 2]},
                "baseline": {"top1": 0.88, "interval": 0.01, "seeds": [0, 1, 2]},
                "difference": {"top1": 0.05, "interval": 0.012, "seeds": [0, 1, 2]}}
    monkeypatch.setattr(demo, "RECORDED", recorded)
    monkeypatch.setattr(demo, "RECORDED_ON", "some CPU")
    text = "\n".join(demo.recorded_comparison())
    assert "demo recipe          93.0% +- 0.4% (seeds 0, 1, 2)" in text
    assert "seed-style baseline  88.0% +- 1.0%" in text
    assert "recipe - baseline    +5.0% +- 1.2%" in text
    assert "measured on some CPU" in text and demo.COMPARE_COMMAND in text
    recorded["baseline"] = {"top1": None, "interval": None, "seeds": []}
    assert "seed-style baseline  not recorded yet" in "\n".join(demo.recorded_comparison())
