"""README: its offline Python quick start runs as written (no network), its commands exist, CI runs its test command."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")

# Refuse every outgoing connection, so the quick start is shown to run offline (a download would fail).
NO_NETWORK = """
import socket
def _refuse(*args, **kwargs):
    raise OSError("network disabled by tests/project/test_readme.py")
socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
socket.create_connection = _refuse
"""


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, flags=re.M | re.S)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.M | re.S)


def quick_start_code() -> str:
    """The first python block of README's offline quick start."""
    return _blocks(_section("Quick start (offline)"), "python")[0]


def _demo_bundle(directory: Path) -> None:
    """A small untrained bundle with the demo's classes where `vehicle-cls demo` writes its bundle."""
    from vehicle_cls import Classifier
    from vehicle_cls.classifier import Preprocess
    from vehicle_cls.train.demo import demo_data_dir

    classes = sorted(p.name for p in demo_data_dir().iterdir() if p.is_dir())
    clf = Classifier.create("resnet18", classes=classes, weights=None, dropout=0.0, device="cpu",
                            preprocess=Preprocess(input_size=32, resize="squash"))
    clf.save(directory)


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", NO_NETWORK + "\n" + code], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_offline_quick_start_runs_as_written(tmp_path):
    code = quick_start_code()
    assert "from_zoo" not in code and "http" not in code  # the offline block needs nothing from outside
    _demo_bundle(tmp_path / "demo_output" / "run" / "best")
    out = _run(code, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    predicted = [line for line in lines if re.fullmatch(r"pickup\d+\.jpg -> \w+ [0-9.]+", line)]
    assert len(predicted) == 3, out.stdout
    assert any(line.startswith("missing.jpg -> ") for line in lines), out.stdout
    record = json.loads(lines[-1])
    assert len(record["vehicles"]) == 1 and record["vehicles"][0]["box"] == [5, 20, 95, 90]
    assert (tmp_path / "annotated.png").stat().st_size > 0


def test_offline_quick_start_fails_without_the_demo_bundle(tmp_path):
    """The check above can fail: without the bundle `vehicle-cls demo` writes, the same code stops."""
    out = _run(quick_start_code(), tmp_path)
    assert out.returncode != 0 and "demo_output/run/best" in out.stderr


def test_install_lines_name_the_real_repository():
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
    install = _section("Install")
    assert "<" + "org>" not in README
    assert urls["Repository"] in install
    assert "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu" in install


def _subparsers() -> dict:
    import argparse
    import importlib

    from vehicle_cls import cli

    sub = argparse.ArgumentParser().add_subparsers(dest="command")
    for command in cli.SUBCOMMANDS:
        importlib.import_module(f"vehicle_cls.cli.{command}").register(sub)
    return sub.choices


def test_cli_lines_use_real_subcommands_and_options():
    subparsers = _subparsers()
    seen = 0
    for block in _blocks(README, "bash"):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if not words or words[0] != "vehicle-cls":
                continue
            seen += 1
            assert words[1] in subparsers, f"unknown subcommand in {line!r}"
            known = {opt for action in subparsers[words[1]]._actions for opt in action.option_strings}
            for word in words[2:]:
                if word.startswith("--"):
                    assert word.split("=")[0] in known, f"vehicle-cls {words[1]} has no option {word}"
    assert seen >= 9


def test_recipe_names_in_readme_are_shipped():
    from vehicle_cls.recipes import list_recipes

    for name in re.findall(r"--config (\S+)", README):
        assert name in list_recipes(), name


def test_ci_runs_the_readme_test_command():
    commands = _blocks(_section("From a clone: the two commands"), "bash")[0]
    assert re.search(r"^make demo\b", commands, flags=re.M) and re.search(r"^make test\b", commands, flags=re.M)
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test\b", ci, flags=re.M), ".ci/run must run README's `make test`"


@pytest.mark.parametrize("page", sorted(re.findall(r"\]\((docs/[^)#]+|CHANGELOG.md|examples/README.md)\)", README)))
def test_linked_pages_exist(page):
    assert (ROOT / page).is_file(), page


def test_docs_links_resolve():
    for page in sorted((ROOT / "docs").glob("*.md")):
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


def test_local_links_and_pictures_exist():
    """Every relative link or picture in README points at a file in the repository (a moved doc shows here)."""
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
    local = [t for t in targets if "://" not in t and not t.startswith("mailto:")]
    assert any(t.endswith((".jpg", ".png")) for t in local), "README has no picture"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README links to missing files: {missing}"
