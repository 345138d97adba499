"""Shared fixtures: paths to the small real data shipped in tests/data."""
from __future__ import annotations

from pathlib import Path

import pytest

# torchvision before tensorflow: with torch 2.14 (triton 3.8) importing tensorflow first segfaults.
import torchvision  # noqa: F401

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture
def cli():
    """``cli("train", "--config", ...)``: a ``vehicle-cls`` subcommand run in this process through the real
    parser; returns its exit status, and an exception propagates (``vehicle_cls.cli.main`` turns it into 1)."""
    from vehicle_cls.cli import build_parser, parse_args

    def run(*argv: str) -> int:
        args = parse_args(build_parser(), [str(a) for a in argv])
        return args.func(args)

    return run


@pytest.fixture
def rgb_photos():
    """``rgb_photos("predict")``: the photos of a ``tests/data`` folder as RGB uint8 arrays, sorted by name."""
    import numpy as np
    from PIL import Image

    def load(folder: str) -> list:
        return [np.asarray(Image.open(p).convert("RGB")) for p in sorted((DATA / folder).glob("*.jpg"))]

    return load


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A saved classifier bundle (untrained resnet18, 32 px, classes car/minibus/truck) for command tests."""
    import torch

    from vehicle_cls.classifier import Classifier, Preprocess

    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny_bundle")
    classes = ["car", "minibus", "truck"]
    Classifier.create("resnet18", classes=classes, preprocess=Preprocess(32, "squash"), device="cpu").save(directory)
    return directory
