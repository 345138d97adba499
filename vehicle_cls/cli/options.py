"""Command-line flags derived from ``InferenceOptions``: one flag per field (``--batch-size``, ``--no-crop``,
``--compile [MODE]``, ...), its help, choices and default taken from the field, so ``predict`` and
``serve`` never list the settings again; ``options_from_args`` reads them back through the one check."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from vehicle_cls.options import InferenceOptions, OptionError


def flag(name: str) -> str:
    """The command-line flag of an option field: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def add_option_arguments(
    parser: argparse.ArgumentParser, skip: Collection[str] = (), aliases: Mapping[str, Sequence[str]] | None = None
) -> None:
    """Add a flag for every ``InferenceOptions`` field but ``skip`` (``aliases``: more flags for a field);
    a flag not given leaves the field's default (``options_from_args``)."""
    types = typing.get_type_hints(InferenceOptions)
    for field in dataclasses.fields(InferenceOptions):
        if field.name in skip:
            continue
        meta = field.metadata
        kwargs: dict[str, Any] = {"dest": field.name, "default": argparse.SUPPRESS, "help": meta["help"]}
        names = [flag(field.name), *(aliases or {}).get(field.name, ())]
        if types[field.name] is bool:
            kwargs["action"] = "store_false" if field.default else "store_true"
            names = [flag(("no_" if field.default else "") + field.name)]
        elif "const" in meta:
            kwargs.update(nargs="?", const=meta["const"])
        elif "choices" in meta:
            kwargs["choices"] = meta["choices"]
        elif types[field.name] is int:
            kwargs["type"] = int
        if "metavar" in meta:
            kwargs["metavar"] = meta["metavar"]
        parser.add_argument(*names, **kwargs)


def options_from_args(args: argparse.Namespace, **fixed: Any) -> InferenceOptions:
    """The ``InferenceOptions`` of the parsed flags (and ``fixed`` values); ``ValueError`` (one line, naming
    the flag) for a bad value."""
    types = typing.get_type_hints(InferenceOptions)
    given: dict[str, Any] = dict(fixed)
    for field in dataclasses.fields(InferenceOptions):
        if field.name in vars(args):
            value = getattr(args, field.name)
            given[field.name] = _optional_int(field, value) if types[field.name] == int | None else value
    try:
        return InferenceOptions(**given)
    except OptionError as exc:
        raise ValueError(f"{flag(exc.option)} {exc.message}") from None


def _optional_int(field: dataclasses.Field, text: str | None) -> int | None:
    """A whole number, or None for ``none`` (and for ``0`` where the field's ``zero_is_none`` says so)."""
    if text is None:
        return None
    value = str(text).strip().lower()
    if value == "none":
        return None
    if not (value.isascii() and value.isdigit()):
        raise ValueError(f"{flag(field.name)} must be a whole number (>= 1) or none; got {text!r}")
    number = int(value)
    return None if number == 0 and field.metadata.get("zero_is_none") else number
