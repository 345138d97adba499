"""What every vehicle_cls error shares: one base class to catch them all by, and ``one_line``, which
keeps a message on one line (errors land in JSON lines, logs and HTTP details)."""

from __future__ import annotations

from typing import Any


class VehicleClsError(Exception):
    """Base of the project's own errors. Each subclass also derives from the builtin it always was
    (``ValueError``, ``RuntimeError``), so existing ``except ValueError`` code keeps working."""


def one_line(text: Any) -> str:
    """``text`` with all whitespace runs (newlines included) folded to single spaces."""
    return " ".join(str(text).split())
