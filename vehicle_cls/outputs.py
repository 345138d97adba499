"""Outputs never destroy inputs: every command checks where it will write against what it reads, up front.

``check_output`` refuses an output file that is an input (by any spelling: ``./x.jpg``, a symbolic or hard
link), an existing file that an input folder would read, and an output folder that overlaps an input
folder or holds an input file, naming both paths. ``open_output`` opens a text output whose every
failure (a file in the way, a folder given, a full disk) is one ``OutputError`` line naming the path.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TextIO

from vehicle_cls.errors import VehicleClsError

_GLOB_CHARS = ("*", "?", "[")


class OutputError(VehicleClsError, ValueError):
    """An output path cannot be written, or writing it would destroy an input; the message names both."""


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def _expand(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """The input paths that exist (globs expanded); URLs, streams and missing paths are no files to spare."""
    found: list[Path] = []
    for item in inputs:
        if not isinstance(item, (str, os.PathLike)):
            continue
        text = os.fspath(item)
        if os.path.lexists(text):
            found.append(Path(text))
        elif any(c in text for c in _GLOB_CHARS):
            found.extend(Path(m) for m in glob.glob(text, recursive=True))
    return found


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return _real(a) == _real(b)


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_output(
    output: str | os.PathLike | Iterable[str | os.PathLike],
    inputs: Iterable[str | os.PathLike],
    *,
    directory: bool = False,
    what: str = "--out",
    reads: Callable[[Path], bool] | None = None,
) -> None:
    """Refuse, before anything is written, an output that would overwrite or fall among the inputs.

    ``output``: one path or several (e.g. a file and its sidecar). A file output is refused when it is
    an input file or an existing file inside an input folder that the folder's reader takes
    (``reads(path)``; default every file). ``directory=True``: the output is a folder to fill, refused
    when it is, lies inside, or holds an input. Raises ``OutputError`` naming the output and the input.
    """
    outputs = [output] if isinstance(output, (str, os.PathLike)) else list(output)
    sources = _expand(inputs)
    for out in outputs:
        out_path = Path(out)
        real_out = _real(out_path)
        for source in sources:
            real_in = _real(source)
            if directory:
                if _inside(real_out, real_in) and real_in.is_dir():
                    raise OutputError(
                        f"{what} {out_path} lies in the input folder {source}: the files written "
                        "there would overwrite or join the inputs; choose a folder outside it"
                    )
                if _inside(real_in, real_out):
                    raise OutputError(
                        f"{what} {out_path} holds the input {source}: writing there could "
                        "overwrite it; choose another folder"
                    )
                continue
            if real_in.is_dir():
                if _inside(real_out, real_in) and out_path.is_file() and (reads is None or reads(out_path)):
                    raise OutputError(
                        f"{what} {out_path} is an input (a file in the input folder {source}); "
                        "writing it would destroy it; choose another path"
                    )
            elif _same(out_path, source) if out_path.exists() else real_out == real_in:
                raise OutputError(
                    f"{what} {out_path} is an input ({source}); writing it would destroy it; choose another path"
                )


class _OutputFile:
    """A text file whose write/flush/close failures are ``OutputError`` lines naming the path."""

    def __init__(self, file: TextIO, path: Path, what: str):
        self._file, self.path, self.what = file, path, what

    def _fail(self, exc: OSError) -> OutputError:
        return OutputError(f"{self.what} {self.path}: cannot write ({(exc.strerror or str(exc)).lower()})")

    def write(self, text: str) -> int:
        try:
            return self._file.write(text)
        except OSError as exc:
            raise self._fail(exc) from None

    def flush(self) -> None:
        try:
            self._file.flush()
        except OSError as exc:
            raise self._fail(exc) from None

    def close(self) -> None:
        try:
            self._file.close()
        except OSError as exc:
            raise self._fail(exc) from None


def open_output(path: str | os.PathLike, what: str = "--out") -> _OutputFile:
    """Open ``path`` for writing text (its folder made as needed); every failure is one ``OutputError`` line."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder; give a file path")
    parent = path.parent
    for folder in (parent, *parent.parents):  # the nearest existing ancestor must be a folder
        if os.path.lexists(folder):
            if not folder.is_dir():
                raise OutputError(f"{what} {path}: {folder} is a file, not a folder; choose another path")
            break
    try:
        parent.mkdir(parents=True, exist_ok=True)
        file = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed by the caller
    except OSError as exc:
        raise OutputError(f"{what} {path}: cannot write ({(exc.strerror or str(exc)).lower()})") from None
    return _OutputFile(file, path, what)
