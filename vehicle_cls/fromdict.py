"""Dataclasses from plain dicts (``config.json`` sections, recipes, options) under one policy: an
unknown key is refused with an error that names the file and the key and suggests the closest known
one; keys that older versions wrote (``legacy``) are dropped, so their files still load; every value
is checked against its field's annotation (``coerce``: a bool is not an int, 32.9 is not an int, NaN
and infinity are no setting, a numeric string such as YAML 1.1's ``1e-3`` is a float)."""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import reprlib
import types
import typing
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Literal, TypeVar, Union

T = TypeVar("T")


def did_you_mean(key: str, known: Iterable[str]) -> str | None:
    """The known name closest to ``key`` (a typo, another case), or None when nothing is close."""
    known = list(known)
    lower = {k.lower(): k for k in known}
    if key.lower() in lower:
        return lower[key.lower()]
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return close[0] if close else None


def check_keys(
    keys: Iterable[str],
    known: Collection[str],
    *,
    source: str = "",
    prefix: str = "",
    what: str = "key",
    error: type[Exception] = ValueError,
) -> None:
    """Raise ``error`` naming ``source`` and every key of ``keys`` not in ``known`` (with a did-you-mean)."""
    unknown = [k for k in keys if k not in known]
    if not unknown:
        return
    parts = []
    for key in unknown:
        close = did_you_mean(str(key), known)
        parts.append(f"unknown {what} {prefix}{key}" + (f" (did you mean {prefix}{close}?)" if close else ""))
    where = f"{source}: " if source else ""
    raise error(f"{where}{'; '.join(parts)}; known: {', '.join(sorted(known))}")


def field_names(cls: type) -> set[str]:
    """The names a dataclass accepts in its constructor."""
    return {f.name for f in dataclasses.fields(cls) if f.init}


def strict_from_dict(
    cls: type[T],
    data: Any,
    *,
    source: str = "",
    prefix: str = "",
    legacy: Collection[str] = (),
    error: type[Exception] = ValueError,
) -> T:
    """``cls(**data)`` after checking that ``data`` is a mapping of known keys (see the module docstring).

    ``source`` names the file (or "<what>") for the error, ``prefix`` the section (``"preprocess."``).
    """
    where = f"{source}: " if source else ""
    if not isinstance(data, Mapping):
        raise error(f"{where}{prefix.rstrip('.') or 'settings'}: expected a mapping, got {type(data).__name__}")
    data = {k: v for k, v in data.items() if k not in legacy}
    check_keys(data, field_names(cls), source=source, prefix=prefix, error=error)
    hints = typing.get_type_hints(cls)
    kwargs = {k: coerce(hints.get(k, Any), v, source=source, key=f"{prefix}{k}", error=error) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:  # the dataclass's own range checks: name the file too
        if isinstance(exc, error) and (not source or str(exc).startswith(source)):
            raise
        raise error(f"{where}{exc}") from None


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def coerce(tp: Any, value: Any, *, source: str = "", key: str = "", error: type[Exception] = ValueError) -> Any:
    """``value`` checked against the annotation ``tp`` and converted (int -> float, list -> tuple, a
    numeric string -> float, a mapping -> a nested dataclass); ``error`` names ``source`` and ``key``."""
    where = f"{source}: " if source else ""
    if isinstance(value, float) and not math.isfinite(value):  # .inf / .nan / NaN: never a usable setting
        raise error(f"{where}{key}: must be a finite number, got {value!r}")
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return strict_from_dict(tp, value, source=source, prefix=key + ".", error=error)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    bad = error(f"{where}{key}: expected {describe_type(tp)}, got {_short(value)}")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(arg, value, source=source, key=key, error=error)
            except error:
                continue
        raise bad
    if origin is Literal:
        if value in args and not (isinstance(value, bool) and not any(isinstance(a, bool) for a in args)):
            return value
        raise error(f"{where}{key}: must be one of {', '.join(map(repr, args))}, got {_short(value)}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(args[0], v, source=source, key=key, error=error) for v in value)
        if len(value) != len(args):
            raise bad
        return tuple(coerce(a, v, source=source, key=key, error=error) for a, v in zip(args, value))
    if origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise bad
        return dict(value)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise bad
        return [coerce(args[0], v, source=source, key=key, error=error) for v in value] if args else list(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if tp is float:
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):  # YAML 1.1 reads 1e-3 as a string
            value = float(value)
            if not math.isfinite(value):
                raise error(f"{where}{key}: must be a finite number, got {value!r}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    return value  # Any, or an annotation this module does not check (the dataclass's own checks apply)


def describe_type(tp: Any) -> str:
    """An annotation in words, for errors ("a number", "null or an integer", "a list of 2 numbers")."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else describe_type(a) for a in args)
    if origin is tuple:
        plural = {float: "numbers", int: "integers", str: "strings", bool: "booleans"}.get(args[0], "values")
        return f"a list of {plural}" if len(args) == 2 and args[1] is Ellipsis else f"a list of {len(args)} {plural}"
    if origin is list:
        return "a list"
    if origin is dict:
        return "a mapping of names to values"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlevel = 50, 50, 3


def _short(value: Any) -> str:
    """A bounded repr (a huge nested value must not be printed whole, e.g. an expanded YAML alias)."""
    text = _REPR.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
