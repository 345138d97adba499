"""examples/*.ipynb: valid nbformat v4, outputs stripped, the API they use exists, and they execute top to bottom.

Execution uses nbclient with a real kernel in a temporary directory, in the notebooks' small-data
mode (``VEHICLE_CLS_NOTEBOOK_SMALL=1``), with an empty weights cache so notebook 03 runs on
generated detectron2-format weights.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import re
import shlex
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOTEBOOKS = ["01_quickstart.ipynb", "02_train_vehicle_types.ipynb", "03_detect_and_crop.ipynb", "04_train_keras.ipynb"]


def _read(name: str):
    return nbformat.read(EXAMPLES / name, as_version=4)


def _python(source: str) -> str:
    """Cell source with IPython shell/magic lines (``!cmd``, ``%magic``) turned into plain statements."""
    return "\n".join("pass" if line.lstrip().startswith(("!", "%")) else line for line in source.splitlines())


def _shell_lines(book) -> list[str]:
    return [line.strip()[1:] for cell in book.cells if cell.cell_type == "code"
            for line in cell.source.splitlines() if line.strip().startswith("!")]


def test_every_notebook_is_listed_in_the_readme():
    assert sorted(p.name for p in EXAMPLES.glob("*.ipynb")) == NOTEBOOKS
    readme = (EXAMPLES / "README.md").read_text()
    for name in NOTEBOOKS:
        assert name in readme


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_valid_and_compiles(name):
    book = _read(name)
    nbformat.validate(book)
    assert book.nbformat == 4
    code = [c for c in book.cells if c.cell_type == "code"]
    assert code and book.cells[0].cell_type == "markdown"
    for i, cell in enumerate(code):
        assert cell.outputs == [] and cell.execution_count is None, f"{name} code cell {i} has outputs"
        assert "execution" not in cell.metadata and "collapsed" not in cell.metadata, f"{name} cell {i} metadata"
        compile(_python(cell.source), f"{name}[cell {i}]", "exec")
    assert set(book.metadata) <= {"kernelspec", "language_info"}, f"{name}: notebook metadata {sorted(book.metadata)}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_vehicle_cls_names_used_exist(name):
    """Every ``from vehicle_cls... import X`` resolves (imports modules only; nothing runs)."""
    book = _read(name)
    for cell in book.cells:
        if cell.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(_python(cell.source))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "vehicle_cls":
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{name}: {node.module} has no {alias.name}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_cli_calls_use_real_subcommands_and_options(name):
    import argparse
    import importlib.util

    from vehicle_cls import cli

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    for command in cli.SUBCOMMANDS:  # those written so far register their real parsers
        if importlib.util.find_spec(f"vehicle_cls.cli.{command}"):
            importlib.import_module(f"vehicle_cls.cli.{command}").register(sub)
    subparsers = sub.choices
    for line in _shell_lines(_read(name)):
        words = shlex.split(re.sub(r"\{[^}]*\}", "X", line))
        if words[0] != "vehicle-cls":
            continue
        assert words[1] in subparsers, f"{name}: unknown subcommand in {line!r}"
        if "--help" in words:
            continue
        known = {opt for action in subparsers[words[1]]._actions for opt in action.option_strings}
        for word in words[2:]:
            if word.startswith("--"):
                assert word in known, f"{name}: vehicle-cls {words[1]} has no option {word}"


def test_training_recipe_in_notebook_02_is_valid():
    from vehicle_cls.train.config import TrainConfig

    book = _read("02_train_vehicle_types.ipynb")
    recipes = [
        ast.literal_eval(node.value)
        for cell in book.cells if cell.cell_type == "code"
        for node in ast.walk(ast.parse(_python(cell.source)))
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "recipe" for t in node.targets)
    ]
    assert len(recipes) == 1
    recipe = recipes[0]
    recipe["data"]["train"] = "demo_vehicle_types"
    cfg = TrainConfig.from_dict(recipe, source="02_train_vehicle_types.ipynb").validate()
    assert (cfg.model.arch, cfg.model.weights) == ("resnet18", None)  # CPU, no downloads


# ---- execution (nbclient) --------------------------------------------------------------------------


def _execute(name: str, workdir: Path, monkeypatch, **env: str):
    """Run every cell of ``name`` in ``workdir`` with ``env`` set; return the executed notebook."""
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    import os
    import sys

    monkeypatch.setenv("VEHICLE_CLS_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    monkeypatch.setenv("PYTHONPATH", str(EXAMPLES.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # a kernel spec of its own, so the kernel is this interpreter even where a "python3" spec points elsewhere
    spec = workdir.parent / f"{workdir.name}-jupyter" / "kernels" / "vehicle-cls-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "vehicle-cls tests", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(spec.parents[1]))
    book = _read(name)
    client = nbclient.NotebookClient(book, timeout=600, kernel_name="vehicle-cls-test",
                                     resources={"metadata": {"path": str(workdir)}})
    client.execute()
    return book


def _text(book) -> str:
    """All stream and text/plain output of an executed notebook."""
    parts = []
    for cell in book.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") or out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


@pytest.fixture
def tiny_bundle(tmp_path) -> Path:
    import torch

    from vehicle_cls import Classifier
    from vehicle_cls.classifier import Preprocess

    torch.manual_seed(0)
    clf = Classifier.create("resnet18", classes=["bike", "car", "juggernaut", "minibus", "pickup", "truck"],
                            weights=None, preprocess=Preprocess(input_size=64))
    return clf.save(tmp_path / "bundle")


@pytest.mark.slow
def test_notebook_01_runs_on_a_bundle(tmp_path, monkeypatch, tiny_bundle):
    work = tmp_path / "work"
    work.mkdir()
    book = _execute("01_quickstart.ipynb", work, monkeypatch, VEHICLE_CLS_BUNDLE=str(tiny_bundle))
    text = _text(book)
    assert "no_such_file.jpg" in text and "ERROR" in text and "same predictions: True" in text
    out = work / "notebook_output" / "01_quickstart"
    assert [p.name for p in work.iterdir()] == ["notebook_output"]  # every output in one folder
    assert (out / "quickstart_bundle" / "config.json").is_file()
    lines = (out / "quickstart_predictions.jsonl").read_text().splitlines()
    cars = EXAMPLES.parent / "vehicle_cls" / "assets" / "demo_vehicle_types" / "car"
    assert len(lines) == len(list(cars.glob("*.jpg")))  # every shipped car photo answered by the CLI
    assert any(out.get("data", {}).get("image/png") for c in book.cells for out in c.get("outputs", []))


@pytest.mark.slow
def test_notebook_01_started_in_examples_finds_the_demo_bundle(tmp_path, monkeypatch, tiny_bundle):
    """Jupyter starts the kernel in the notebook's folder: the bundle `vehicle-cls demo` wrote at the
    repository root (../demo_output/run/best) is found from there."""
    import shutil

    monkeypatch.delenv("VEHICLE_CLS_BUNDLE", raising=False)
    repo = tmp_path / "repo"
    shutil.copytree(tiny_bundle, repo / "demo_output" / "run" / "best")
    (repo / "examples").mkdir()
    book = _execute("01_quickstart.ipynb", repo / "examples", monkeypatch)
    assert "same predictions: True" in _text(book)
    assert [p.name for p in (repo / "examples").iterdir()] == ["notebook_output"]


@pytest.mark.slow
def test_notebook_01_fails_loudly_without_a_bundle(tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="no model bundle at"):
        _execute("01_quickstart.ipynb", tmp_path, monkeypatch, VEHICLE_CLS_BUNDLE=str(tmp_path / "missing"))
    assert not (tmp_path / "notebook_output" / "01_quickstart" / "quickstart_bundle").exists()  # stopped before saving


@pytest.mark.slow
def test_notebook_02_trains_evaluates_and_compares(tmp_path, monkeypatch):
    book = _execute("02_train_vehicle_types.ipynb", tmp_path, monkeypatch)
    text = _text(book)
    out = tmp_path / "notebook_output" / "02_train_vehicle_types"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith("-jupyter")) == ["notebook_output"]
    reports = [json.loads((out / run / "eval-test" / "report.json").read_text()) for run in ("run", "baseline")]
    photos = len(list((out / "small_data").glob("*/*.jpg")))
    assert photos == 6 * 12
    for report in reports:  # both scored on the same held-out photos (about 27 % of the small set)
        assert report["num_samples"] == reports[0]["num_samples"]
        assert 0.2 * photos < report["num_samples"] < 0.35 * photos
        assert 0.0 <= report["top1"] <= 1.0
    assert "difference" in text and "the noise" in text and "small-data mode" in text
    assert (out / "run" / "compare").is_dir()
    intervals = re.findall(r"95 % Wilson interval (-?[0-9.]+)-(-?[0-9.]+), n=", text)
    assert len(intervals) == 2
    for low, high in intervals:  # Wilson: inside [0, 100] even for the 1-epoch models' extreme accuracies
        assert 0.0 <= float(low) <= float(high) <= 100.0


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs tensorflow (the keras extra)")
def test_notebook_04_trains_both_backends_and_compares_them(tmp_path, monkeypatch):
    book = _execute("04_train_keras.ipynb", tmp_path, monkeypatch)
    text = _text(book)
    out = tmp_path / "notebook_output" / "04_train_keras"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith("-jupyter")) == ["notebook_output"]
    for run, backend in (("torch_run", "torch"), ("keras_run", "keras")):
        config = json.loads((out / run / "best" / "config.json").read_text())
        assert config.get("backend", "torch") == backend
    assert (out / "keras_run" / "last.npz").is_file() and (out / "torch_run" / "last.pt").is_file()
    rows = json.loads((out / "compare" / "comparison.json").read_text())
    assert [r["name"] for r in rows] == ["torch_run (torch)", "keras_run (keras)"]
    photos = len(list((out / "small_data").glob("*/*.jpg")))
    assert rows[0]["num_samples"] == rows[1]["num_samples"] and 0.2 * photos < rows[0]["num_samples"] < 0.35 * photos
    assert "same train/validation/test split for both backends" in text and "backend: keras" in text
    assert "small-data mode" in text


@pytest.mark.slow
def test_notebook_03_runs_on_generated_weights_and_says_so(tmp_path, monkeypatch):
    cache = tmp_path / "empty-cache"
    cache.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    book = _execute("03_detect_and_crop.ipynb", work, monkeypatch, VEHICLE_CLS_HOME=str(cache))
    text = _text(book)
    assert text.count("GENERATED weights") == 2  # faster and mask R-CNN, each announced
    generated = re.findall(r"GENERATED weights \((\S+_synthetic\.pkl)\)", text)
    assert len(generated) == 2 and not any(Path(g).exists() for g in generated)  # removed by the last cell
    assert [p.name for p in work.iterdir()] == ["notebook_output"]  # nothing else written where it ran
    assert list(cache.iterdir()) == []  # generated weights never land in the weights cache
    assert "crops from a box and a mask GIVEN BY HAND" in text and "masked crop: (" in text
    assert "detections" in text and "vehicle(s);" in text
