"""Lazy public names for a package (PEP 562): ``import vehicle_cls`` stays light, and a name's module
(torch, tensorflow) is imported on first use. One helper for every package that re-exports this way."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any


def lazy_attribute(package: str, public: Mapping[str, str], name: str) -> Any:
    """``package.name``, imported from the module ``public`` maps it to; AttributeError for any other name."""
    module = public.get(name)
    if module is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
