"""Shared fixtures: paths to the small real data shipped in tests/data."""
from __future__ import annotations

from pathlib import Path

# torchvision before tensorflow: with torch 2.14 (triton 3.8) importing tensorflow first segfaults.
import torchvision  # noqa: F401

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture
def cli():
    """``cli("train", "--config", ...)``: a ``vehicle-cls`` subcommand run in this process through the real
    parser; returns its exit status, and an exception propagates (``vehicle_cls.cli.main`` turns it into 1)."""
    from vehicle_cls.cli import build_parser

    def run(*argv: str) -> int:
        args = build_parser().parse_args([str(a) for a in argv])
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
