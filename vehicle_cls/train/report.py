"""Evaluation reports: ``report.json`` + ``report.md`` with plots, and side-by-side comparisons.

Plots use matplotlib's object API on the Agg canvas (no pyplot, no global figure state):
training curves from the run's history, the confusion matrix, and a grid of the most confident
mistakes. ``write_comparison`` puts several reports (full image vs detector crop vs ground-truth
crop, say) in one table.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vehicle_cls.fileio import atomic_write_text, clean_stale_temps, ensure_dir
from vehicle_cls.train.evaluate import EvalResult

logger = logging.getLogger(__name__)

REPORT_JSON = "report.json"
REPORT_MD = "report.md"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} %"


def report_dict(result: EvalResult, worst: int = 16) -> dict[str, Any]:
    """The JSON content of a report (metrics, per-class results, confusion matrix, worst mistakes)."""
    m = result.metrics
    return {
        "name": result.name,
        **{k: v for k, v in result.info.items() if isinstance(v, (str, int, float, bool, type(None)))},
        "num_samples": m.num_samples,
        "num_failed": len(result.failed),
        "top1": m.top1,
        "top5": m.top5,
        "mean_class_accuracy": m.mean_class_accuracy,
        "per_class": m.to_dict()["per_class"],
        "classes": m.classes,
        "confusion": m.confusion.tolist(),
        "worst_mistakes": result.worst_mistakes(worst),
        "failed": [{"source": p, "reason": r} for p, r in result.failed],
    }


def write_report(
    result: EvalResult,
    out_dir: str | os.PathLike,
    history: Sequence[dict[str, Any]] | None = None,
    worst: int = 16,
    plots: bool = True,
) -> dict[str, Path]:
    """Write report.json, report.md, predictions.jsonl and the plots into ``out_dir``; returns the paths."""
    out = ensure_dir(out_dir, "report folder")
    clean_stale_temps(out)
    data = report_dict(result, worst)
    files: dict[str, Path] = {}
    if plots:
        if history:
            files["curves"] = plot_history(history, out / "training_curves.png")
        files["confusion"] = plot_confusion(result.metrics.confusion, result.classes, out / "confusion_matrix.png")
        if data["worst_mistakes"]:
            files["worst_mistakes"] = plot_mistakes(data["worst_mistakes"], out / "worst_mistakes.png")
    preds = result.preds
    rows = (
        {
            "source": src,
            "true": result.classes[result.labels[i]],
            "predicted": result.classes[preds[i]],
            "probability": round(float(result.probs[i, preds[i]]), 6),
        }
        for i, src in enumerate(result.sources)
    )
    atomic_write_text(out / "predictions.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    files["predictions"] = out / "predictions.jsonl"
    data["files"] = {k: p.name for k, p in files.items()}
    files["json"] = out / REPORT_JSON
    files["markdown"] = out / REPORT_MD
    atomic_write_text(files["json"], json.dumps(data, indent=1) + "\n")
    atomic_write_text(files["markdown"], render_markdown(data, history))
    return files


def render_markdown(data: dict[str, Any], history: Sequence[dict[str, Any]] | None = None) -> str:
    """The human-readable report."""
    lines = [f"# Evaluation: {data['name']}", ""]
    for key in ("model", "dataset", "split", "crop"):
        if data.get(key) is not None:
            lines.append(f"- {key}: `{data[key]}`")
    lines += [
        f"- images evaluated: {data['num_samples']} (unreadable, skipped: {data['num_failed']})",
        "",
        "| metric | value |",
        "|---|---|",
        f"| top-1 accuracy | {_pct(data['top1'])} |",
        f"| top-5 accuracy | {_pct(data['top5'])} |",
        f"| mean per-class accuracy | {_pct(data['mean_class_accuracy'])} |",
        "",
        "## Per class",
        "",
        "| class | images | accuracy |",
        "|---|---|---|",
    ]
    lines += [f"| {r['class']} | {r['count']} | {_pct(r['accuracy'])} |" for r in data["per_class"]]
    files = data.get("files", {})
    if history:
        lines += ["", "## Training", ""]
        best = max((h for h in history if "val_top1" in h), key=lambda h: h["val_top1"], default=None)
        if best:
            lines.append(f"Best validation top-1 {_pct(best['val_top1'])} at epoch {best['epoch']} of {len(history)}.")
        if "curves" in files:
            lines += ["", f"![training curves]({files['curves']})"]
    if "confusion" in files:
        lines += [
            "",
            "## Confusion matrix (rows: true class, columns: predicted)",
            "",
            f"![confusion]({files['confusion']})",
        ]
    if len(data["classes"]) <= 20:
        lines += [
            "",
            "| true \\ predicted | " + " | ".join(data["classes"]) + " |",
            "|---|" + "---|" * len(data["classes"]),
        ]
        lines += [
            f"| {c} | " + " | ".join(str(v) for v in row) + " |" for c, row in zip(data["classes"], data["confusion"])
        ]
    if data["worst_mistakes"]:
        lines += ["", "## Most confident mistakes", ""]
        if "worst_mistakes" in files:
            lines += [f"![worst mistakes]({files['worst_mistakes']})", ""]
        lines += ["| image | true | predicted | probability |", "|---|---|---|---|"]
        lines += [
            f"| {Path(w['source']).name} | {w['true']} | {w['predicted']} | {w['probability']:.3f} |"
            for w in data["worst_mistakes"]
        ]
    if data["failed"]:
        lines += ["", "## Unreadable images (skipped)", ""]
        lines += [f"- `{f['source']}`: {f['reason']}" for f in data["failed"]]
    return "\n".join(lines) + "\n"


# --- comparison ----------------------------------------------------------------------------------------


def load_report(path: str | os.PathLike) -> dict[str, Any]:
    """A report.json, given its file or the folder holding it."""
    path = Path(path)
    if path.is_dir():
        path = path / REPORT_JSON
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FileNotFoundError(
            f"{path}: no evaluation report here ({exc.strerror}); run `vehicle-cls eval` first"
        ) from None
    except ValueError as exc:
        raise ValueError(f"{path}: not a valid report.json ({exc})") from None


def comparison_table(reports: Sequence[dict[str, Any]]) -> str:
    """Markdown: one column per report, rows for the headline metrics and each class."""
    names = [r.get("name", f"run {i + 1}") for i, r in enumerate(reports)]
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key in ("crop", "split", "dataset"):
        if any(r.get(key) is not None for r in reports):
            lines.append(f"| {key} | " + " | ".join(f"`{r.get(key)}`" for r in reports) + " |")
    lines.append("| images | " + " | ".join(str(r["num_samples"]) for r in reports) + " |")
    for key, label in (("top1", "top-1"), ("top5", "top-5"), ("mean_class_accuracy", "mean per-class")):
        lines.append(f"| **{label}** | " + " | ".join(_pct(r.get(key)) for r in reports) + " |")
    classes: list[str] = []
    for r in reports:
        classes += [c for c in r["classes"] if c not in classes]
    if len(classes) <= 50:
        for c in classes:
            cells = []
            for r in reports:
                row = next((p for p in r["per_class"] if p["class"] == c), None)
                cells.append("–" if row is None else _pct(row["accuracy"]))
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_comparison(report_paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Side-by-side table of several eval runs: comparison.md and comparison.json in ``out_dir``."""
    reports = [load_report(p) for p in report_paths]
    out = ensure_dir(out_dir, "comparison folder")
    clean_stale_temps(out)
    fields = ("name", "model", "dataset", "split", "crop", "num_samples", "top1", "top5", "mean_class_accuracy")
    summary = [{k: r.get(k) for k in fields} | {"report": str(p)} for r, p in zip(reports, report_paths)]
    md = "# Comparison\n\n" + comparison_table(reports)
    paths = {"markdown": out / "comparison.md", "json": out / "comparison.json"}
    atomic_write_text(paths["markdown"], md)
    atomic_write_text(paths["json"], json.dumps(summary, indent=1) + "\n")
    return paths


# --- plots ---------------------------------------------------------------------------------------------


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_history(history: Sequence[dict[str, Any]], path: Path) -> Path:
    """Loss and accuracy per epoch (train and validation)."""
    fig = _figure(10, 4)
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = [h["epoch"] for h in history]
    for key, ax, label in (
        ("train_loss", ax_loss, "train"),
        ("val_loss", ax_loss, "val"),
        ("train_top1", ax_acc, "train"),
        ("val_top1", ax_acc, "val"),
    ):
        pts = [(e, h[key]) for e, h in zip(epochs, history) if h.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", markersize=3, label=label)
    ax_loss.set(title="loss", xlabel="epoch")
    ax_acc.set(title="top-1 accuracy", xlabel="epoch", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_confusion(cm: np.ndarray, classes: Sequence[str], path: Path) -> Path:
    """Row-normalized confusion matrix (counts written in the cells when the matrix is small)."""
    n = len(classes)
    size = min(30.0, max(5.0, 0.25 * n + 3))
    fig = _figure(size, size)
    ax = fig.subplots()
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if n <= 30:
        ax.set_xticks(range(n), labels=list(classes), rotation=45, ha="right")
        ax.set_yticks(range(n), labels=list(classes))
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(
                        j,
                        i,
                        str(cm[i, j]),
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black",
                    )
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix")
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_mistakes(mistakes: Sequence[dict[str, Any]], path: Path, cols: int = 4) -> Path:
    """Grid of the most confident mistakes: the image with 'true -> predicted (p)'."""
    from vehicle_cls.io.images import load_image

    rows = (len(mistakes) + cols - 1) // cols
    fig = _figure(3 * cols, 3.2 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, m in zip(axes, mistakes):
        try:
            ax.imshow(load_image(m["source"], max_pixels=50_000_000))
        except Exception as exc:  # noqa: BLE001 - an image gone since evaluation must not lose the grid
            ax.text(0.5, 0.5, f"unreadable:\n{exc}"[:80], ha="center", va="center", fontsize=7)
        ax.set_title(f"{m['true']}\n-> {m['predicted']} ({m['probability']:.2f})", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path
