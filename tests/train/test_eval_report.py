"""Reports: files exist and JSON numbers equal hand-computed ones; side-by-side comparison."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vehicle_cls.train.evaluate import EvalResult
from vehicle_cls.train.metrics import compute_metrics
from vehicle_cls.train.report import comparison_table, write_comparison, write_report

PHOTOS = Path(__file__).resolve().parents[2] / "vehicle_cls" / "assets" / "demo_vehicle_types"
CLASSES = ["bike", "car", "truck"]
LABELS = np.array([0, 0, 1, 1, 2, 2, 2])
PROBS = np.array([
    [0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.1, 0.8, 0.1], [0.2, 0.5, 0.3],
    [0.1, 0.1, 0.8], [0.9, 0.05, 0.05], [0.3, 0.3, 0.4],
], dtype=np.float32)


def result(name="full image", probs=PROBS) -> EvalResult:
    sources = [str(sorted((PHOTOS / CLASSES[y]).glob("*.jpg"))[i]) for i, y in enumerate(LABELS)]
    return EvalResult(name, CLASSES, sources, LABELS, probs, compute_metrics(probs, LABELS, CLASSES),
                      failed=[("/nowhere/broken.jpg", "cannot identify image file")],
                      info={"model": "m", "dataset": "d", "split": "test", "crop": "none"})


def test_report_files_and_numbers(tmp_path):
    history = [{"epoch": 1, "train_loss": 1.0, "train_top1": 0.4, "val_loss": 1.1, "val_top1": 0.5},
               {"epoch": 2, "train_loss": 0.7, "train_top1": 0.6, "val_loss": 0.9, "val_top1": 0.7}]
    files = write_report(result(), tmp_path, history=history)
    for key in ("json", "markdown", "curves", "confusion", "worst_mistakes", "predictions"):
        assert files[key].is_file() and files[key].stat().st_size > 0, key
    for key in ("curves", "confusion", "worst_mistakes"):
        assert files[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(files["json"].read_text())
    assert data["num_samples"] == 7 and data["num_failed"] == 1
    assert data["top1"] == pytest.approx(5 / 7) and data["top5"] == 1.0
    assert data["mean_class_accuracy"] == pytest.approx((1 / 2 + 1 + 2 / 3) / 3)
    assert [p["accuracy"] for p in data["per_class"]] == pytest.approx([0.5, 1.0, 2 / 3])
    assert data["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 2]]
    # mistakes, most confident first: sample 5 (truck -> bike 0.9), then sample 1 (bike -> car 0.6)
    assert [(m["true"], m["predicted"]) for m in data["worst_mistakes"]] == [("truck", "bike"), ("bike", "car")]
    assert [m["probability"] for m in data["worst_mistakes"]] == pytest.approx([0.9, 0.6])
    assert data["failed"] == [{"source": "/nowhere/broken.jpg", "reason": "cannot identify image file"}]
    md = files["markdown"].read_text()
    assert "| top-1 accuracy | 71.43 % |" in md and "| truck | 3 | 66.67 % |" in md
    assert "Best validation top-1 70.00 % at epoch 2 of 2." in md
    lines = files["predictions"].read_text().splitlines()
    assert len(lines) == 7 and json.loads(lines[5])["predicted"] == "bike"


def test_comparison_side_by_side(tmp_path):
    better = PROBS.copy()
    better[5] = [0.05, 0.05, 0.9]  # the gt-crop run gets the truck right: 6/7
    write_report(result("full image"), tmp_path / "full", plots=False)
    write_report(result("gt crop", better), tmp_path / "gt", plots=False)
    paths = write_comparison([tmp_path / "full", tmp_path / "gt" / "report.json"], tmp_path / "cmp")
    rows = json.loads(paths["json"].read_text())
    assert [r["name"] for r in rows] == ["full image", "gt crop"]
    assert [r["top1"] for r in rows] == pytest.approx([5 / 7, 6 / 7])
    md = paths["markdown"].read_text()
    assert "| | full image | gt crop |" in md
    assert "| **top-1** | 71.43 % | 85.71 % |" in md
    assert "| truck | 66.67 % | 100.00 % |" in md


def test_comparison_of_a_missing_report_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no evaluation report here"):
        write_comparison([tmp_path / "nothing"], tmp_path / "cmp")
    assert "| images | 7 |" in comparison_table([json.loads(json.dumps({**_min(), "num_samples": 7}))])


def _min():
    return {"name": "x", "classes": ["a"], "per_class": [{"class": "a", "count": 7, "accuracy": 1.0}],
            "top1": 1.0, "top5": 1.0, "mean_class_accuracy": 1.0}
