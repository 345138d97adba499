"""Dataclasses from plain dicts (``config.json`` sections, recipes, options) under one policy: an
unknown key is refused with an error that names the file and the key and suggests the closest known
one; keys that older versions wrote (``legacy``) are dropped, so their files still load."""
from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Collection, Iterable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def did_you_mean(key: str, known: Iterable[str]) -> str | None:
    """The known name closest to ``key`` (a typo, another case), or None when nothing is close."""
    known = list(known)
    lower = {k.lower(): k for k in known}
    if key.lower() in lower:
        return lower[key.lower()]
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return close[0] if close else None


def check_keys(keys: Iterable[str], known: Collection[str], *, source: str = "", prefix: str = "",
               what: str = "key", error: type[Exception] = ValueError) -> None:
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


def strict_from_dict(cls: type[T], data: Any, *, source: str = "", prefix: str = "",
                     legacy: Collection[str] = (), error: type[Exception] = ValueError) -> T:
    """``cls(**data)`` after checking that ``data`` is a mapping of known keys (see the module docstring).

    ``source`` names the file (or "<what>") for the error, ``prefix`` the section (``"preprocess."``).
    """
    where = f"{source}: " if source else ""
    if not isinstance(data, Mapping):
        raise error(f"{where}{prefix.rstrip('.') or 'settings'}: expected a mapping, got {type(data).__name__}")
    data = {k: v for k, v in data.items() if k not in legacy}
    check_keys(data, field_names(cls), source=source, prefix=prefix, error=error)
    return cls(**data)
