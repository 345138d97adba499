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
