"""The Keras trainer (``model.backend: keras``): it learns on the shipped photos, resumes exactly after
a kill inside an epoch, writes a bundle ``Pipeline.load`` opens, and the run's splits.json is
byte-identical to the torch trainer's for the same recipe.

A small Keras CNN (with a ``backbone`` sub-model and a Dense ``head``, like ``keras.applications`` +
head) is injected, as the torch tests inject a small net; the recipe path (``keras.applications``)
is covered by ``test_recipe_builds_keras_applications_model``. TensorFlow is slow on shared cores,
so the images are 32 px and the runs a few epochs.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from vehicle_cls.train.config import ConfigError, TrainConfig

# find_spec, not importorskip: importing TensorFlow before torchvision would disable triton
pytestmark = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs tensorflow")

DEMO = Path(__file__).resolve().parents[2] / "vehicle_cls" / "assets" / "demo_vehicle_types"
CLASSES = ["bike", "car", "juggernaut", "minibus", "pickup", "truck"]
CHANCE = 1 / 6
MARGIN = 0.28  # as tests/train/test_train_learning.py: at least 45 % top-1 on 120 held-out photos


def tiny_model(num_classes: int, size: int = 32, seed: int = 0):
    """Three conv blocks with BatchNorm (momentum 0.9 = torch's 0.1: a short run needs fresh statistics)
    (backbone) + Dropout + Dense logits (head); takes 0-255 pixels."""
    from vehicle_cls.classifier.keras.loading import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(seed)
    L = keras.layers

    def block(filters):
        return [L.Conv2D(filters, 3, padding="same", use_bias=False), L.BatchNormalization(momentum=0.9), L.ReLU()]

    backbone = keras.Sequential([keras.Input((size, size, 3)), L.Rescaling(1 / 127.5, offset=-1), *block(16),
                                 L.MaxPooling2D(), *block(32), L.MaxPooling2D(), *block(64),
                                 L.GlobalAveragePooling2D()], name="backbone")
    inputs = keras.Input((size, size, 3))
    x = L.Dropout(0.1, seed=seed)(backbone(inputs))
    return keras.Model(inputs, L.Dense(num_classes, name="head")(x))


def split_folders(root: Path, classes=CLASSES, n_train: int = 36, n_test: int = 20) -> tuple[Path, Path]:
    for c in classes:
        files = sorted((DEMO / c).glob("*.jpg"))
        for sub, chosen in (("train", files[:n_train]), ("test", files[n_train:n_train + n_test])):
            (root / sub / c).mkdir(parents=True, exist_ok=True)
            for f in chosen:
                shutil.copy(f, root / sub / c / f.name)
    return root / "train", root / "test"


def recipe(train_dir: Path, out: Path, **sections) -> TrainConfig:
    raw = {
        "data": {"train": str(train_dir), "layout": "folders", "val_fraction": 0.1, "num_workers": 1},
        "model": {"backend": "keras", "input_size": 32, "dropout": 0.1},
        "optim": {"name": "adamw", "lr": 0.004, "weight_decay": 0.01, "warmup_epochs": 0.5, "label_smoothing": 0.1},
        "augment": {"scale": [0.6, 1.0], "hflip": 0.5, "rotation": 5, "color_jitter": 0.1},
        "run": {"out_dir": str(out), "epochs": 8, "batch_size": 24, "eval_batch_size": 64, "precision": "fp32",
                "tensorboard": False, "progress": False, "threads": 2},
    }
    for section, values in sections.items():
        raw[section] = {**raw[section], **values}
    return TrainConfig.from_dict(raw).validate()


def test_keras_run_learns_and_its_bundle_serves(tmp_path):
    from vehicle_cls.classifier import Classifier
    from vehicle_cls.data import open_dataset
    from vehicle_cls.train.evaluate import evaluate
    from vehicle_cls.train.keras import train

    train_dir, test_dir = split_folders(tmp_path)
    cfg = recipe(train_dir, tmp_path / "run", optim={"lr": 0.008}, augment={"rotation": 0, "color_jitter": 0},
                 run={"epochs": 10})  # 57.5 % here; with rotation and colour jitter 8 epochs are not enough
    result = train(cfg, model=tiny_model(6), preprocess="none")
    assert result.epochs_completed == 10 and result.best_dir is not None
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"] - 0.2
    run = tmp_path / "run"
    assert {"config.yaml", "splits.json", "history.json", "last.npz", "best"} <= {p.name for p in run.iterdir()}

    clf = Classifier.load(result.best_dir)
    assert clf.classes == CLASSES and clf.backend.name == "keras"
    test = open_dataset(test_dir, "folders", split=None)
    ev = evaluate(clf, test, dataset_classes=test.classes, name="held-out")
    print(f"keras learning test: held-out top-1 {ev.metrics.top1:.3f} (chance {CHANCE:.3f})")
    assert ev.metrics.num_samples == 120
    assert ev.metrics.top1 >= CHANCE + MARGIN, f"top-1 {ev.metrics.top1:.3f} on held-out photos"

    from vehicle_cls.pipeline import Pipeline

    pipe = Pipeline.load(result.best_dir, device="cpu", crop=False)
    results = pipe([str(p) for p in sorted((test_dir / "car").glob("*.jpg"))[:4]])
    assert len(results) == 4 and all(r.ok for r in results)



def _checkpoint(run_dir: Path) -> tuple[dict[str, np.ndarray], dict]:
    """The variables (model and optimizer) and the meta record of a run's ``last.npz``."""
    with np.load(run_dir / "last.npz", allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    return arrays, json.loads(arrays.pop("meta").tobytes())


def _cli(*args: str) -> list[str]:
    """``vehicle-cls -vv ARGS`` in a fresh interpreter importing this tree (-vv: one debug line per step)."""
    return [sys.executable, "-m", "vehicle_cls", "-vv", *args]


def _env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}


@pytest.mark.slow
def test_killed_inside_an_epoch_then_resumed_equals_uninterrupted(tmp_path):
    """``vehicle-cls train model.backend=keras`` SIGKILLed inside epoch 2, then ``--resume``d, ends with the
    variables and history of an uninterrupted run, bit for bit. The resume point is written at epoch ends,
    so the resumed run redoes epoch 2 from ``last.npz`` (epoch 1): model and optimizer variables from the
    file, data order and every layer's random state from (seed, epoch). Each run is its own process
    (as a real resume is) with ``run.deterministic`` (``enable_op_determinism``) and one thread, so the
    float results are reproducible and compared exactly."""
    data, _ = split_folders(tmp_path / "photos", classes=CLASSES[:3], n_train=6, n_test=0)  # 12 train, 6 val
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(f"""
data: {{train: {data}, layout: folders, val_fraction: 0.34, num_workers: 1}}
model: {{backend: keras, arch: mobilenet_v3_small, weights: null, input_size: 32, dropout: 0.2}}
optim: {{name: adamw, lr: 0.004, weight_decay: 0.01, warmup_epochs: 0.5, label_smoothing: 0.1}}
augment: {{scale: [0.6, 1.0], hflip: 0.5, rotation: 5, color_jitter: 0.1}}
run: {{epochs: 3, batch_size: 2, precision: fp32, deterministic: true, threads: 1, tensorboard: false}}
""")  # 6 steps per epoch; random augmentation and Dropout, so the resumed run must replay the RNG
    train = ("train", "--config", str(recipe_file), "--no-progress", "--out")
    full = subprocess.run(_cli(*train, str(tmp_path / "full")), capture_output=True, text=True, env=_env())
    assert full.returncode == 0, full.stderr[-3000:]

    part = tmp_path / "part"
    proc = subprocess.Popen(_cli(*train, str(part)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=_env())
    watchdog = threading.Timer(900, proc.kill)  # only so that a hung child cannot hang the test suite
    watchdog.start()
    seen = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # the marker: epoch 2's first step is done (its debug line)
            seen.append(line)
            if "epoch 2 step 1/6 (global 7)" in line:
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait()
    finally:
        watchdog.cancel()
    assert proc.returncode == -signal.SIGKILL, "".join(seen[-30:])
    arrays, meta = _checkpoint(part)
    assert meta["epoch"] == 1 and meta["step"] == 6  # killed inside epoch 2: the resume point holds epoch 1
    assert len(json.loads((part / "history.json").read_text())) == 1
    full_arrays, full_meta = _checkpoint(tmp_path / "full")
    assert any(not np.array_equal(full_arrays[k], v) for k, v in arrays.items())

    resumed = subprocess.run(_cli(*train, str(part), "--resume"), capture_output=True, text=True, env=_env())
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed" in resumed.stderr and "at epoch 1 (step 6)" in resumed.stderr
    arrays, meta = _checkpoint(part)
    assert meta["epoch"] == 3 and meta["step"] == 18
    assert arrays.keys() == full_arrays.keys()
    for k in full_arrays:  # every model and optimizer variable, bit for bit
        assert np.array_equal(full_arrays[k], arrays[k]), k

    def without_time(rows: list[dict]) -> list[dict]:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]

    assert without_time(meta["history"]) == without_time(full_meta["history"])  # losses, accuracies, lr: exact
    assert (part / "best" / "config.json").is_file()


def test_splits_json_is_byte_identical_to_the_torch_run(tmp_path, tiny_net):
    from vehicle_cls.classifier import Classifier, Preprocess
    from vehicle_cls.train.keras import train as train_keras
    from vehicle_cls.train.trainer import train as train_torch

    data, _ = split_folders(tmp_path / "photos", classes=CLASSES[:3], n_train=8, n_test=0)
    cfg = recipe(data, tmp_path / "keras", model={"input_size": 16}, run={"epochs": 2, "max_steps": 1})
    stopped = train_keras(cfg, model=tiny_model(3, 16), preprocess="none")  # one step per epoch
    assert stopped.interrupted and stopped.epochs_completed == 1 and stopped.global_step == 1  # run.max_steps
    torch_cfg = recipe(data, tmp_path / "torch", model={"backend": "torch", "input_size": 16},
                       run={"epochs": 1, "max_steps": 1})
    train_torch(torch_cfg, classifier=Classifier(tiny_net(3), "resnet18", CLASSES[:3], Preprocess(input_size=16)))
    keras_bytes = (tmp_path / "keras" / "splits.json").read_bytes()
    assert keras_bytes == (tmp_path / "torch" / "splits.json").read_bytes()
    assert len(json.loads(keras_bytes)["val"]) == 3


def test_recipe_errors_are_one_line(tmp_path):
    from vehicle_cls.train.keras.trainer import KerasTrainer

    with pytest.raises(ConfigError, match=r"model.backend: must be one of 'torch', 'keras', got 'tf'"):
        TrainConfig.from_dict({"model": {"backend": "tf"}})
    with pytest.raises(ConfigError, match=r"model.arch: 'vit_b_16' has no keras.applications counterpart"):
        KerasTrainer(recipe(tmp_path, tmp_path / "r", model={"arch": "vit_b_16"}))
    with pytest.raises(ConfigError, match=r"augment.mixup_alpha: not mapped to Keras"):
        KerasTrainer(recipe(tmp_path, tmp_path / "r", augment={"mixup_alpha": 0.2}))


def test_recipe_builds_keras_applications_model():
    from vehicle_cls.train.keras.model import build_model, set_backbone_trainable

    cfg = recipe(Path("unused"), Path("unused"), model={"arch": "mobilenet_v3_small", "input_size": 32})
    model = build_model(cfg, 6, "fp32", seed=0)
    assert model.output_shape == (None, 6) and model.input_shape == (None, 32, 32, 3)
    norms = [layer for layer in model.get_layer("backbone").layers if "BatchNormalization" in type(layer).__name__]
    assert norms and {layer.momentum for layer in norms} == {0.9}  # torch's running statistics, not 0.999
    n_all = len(model.trainable_variables)
    set_backbone_trainable(model, False)
    assert len(model.trainable_variables) == 2  # the head's kernel and bias
    set_backbone_trainable(model, True)
    assert len(model.trainable_variables) == n_all


def test_nan_loss_stops_with_one_line_error_and_saves_nothing(tmp_path):
    from vehicle_cls.classifier.keras.loading import import_keras
    from vehicle_cls.train.keras import train
    from vehicle_cls.train.nonfinite import NonFiniteLossError

    keras = import_keras()

    class Poison(keras.layers.Layer):
        """Multiplies its input by a variable the test sets to NaN (a corrupt batch, every step)."""

        def build(self, shape):
            self.factor = self.add_weight(shape=(), initializer="ones", trainable=False)

        def call(self, x):
            return x * self.factor

    data, _ = split_folders(tmp_path / "photos", classes=CLASSES[:2], n_train=4, n_test=0)
    inner = tiny_model(2, 16)
    inputs = keras.Input((16, 16, 3))
    poison = Poison()
    model = keras.Model(inputs, inner(poison(inputs)))
    poison.factor.assign(float("nan"))
    before = [v.numpy().copy() for v in inner.variables if not v.path.endswith("seed_generator_state")]
    cfg = recipe(data, tmp_path / "run", data={"val_fraction": 0.25}, model={"input_size": 16},
                 run={"epochs": 2, "batch_size": 2, "max_nonfinite_steps": 2, "threads": 1})
    with pytest.raises(NonFiniteLossError, match=r"^epoch 1 step 1: the training loss was nan for 2 step\(s\) in a "
                       r"row .*last good checkpoint: none written yet$"):
        train(cfg, model=model, preprocess="none")
    after = [v.numpy() for v in inner.variables if not v.path.endswith("seed_generator_state")]
    for a, b in zip(before, after):  # no update, no weight decay, no BatchNorm statistics
        assert np.array_equal(a, b)
    assert not (tmp_path / "run" / "best").exists() and not (tmp_path / "run" / "last.npz").exists()


def test_keras_trainer_modules_import_no_tensorflow():
    code = ("import vehicle_cls.train.keras.trainer, vehicle_cls.cli.train, vehicle_cls.cli.eval, sys; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[2], check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
