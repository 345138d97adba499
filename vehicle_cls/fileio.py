"""Atomic writes: files and whole directories are written beside their target, then renamed into place.

A crash leaves either the old file (directory) or the new one, never half of one; files get the
usual permissions (``0666`` less the umask, like ``open``). Temporary names carry this host and
process id (``.NAME.HOST-PID-RANDOM.tmp``), so a later run can tell the leftovers of a killed process
from a concurrent writer's and remove them (``clean_stale_temps``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import functools
import hashlib
import logging
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

logger = logging.getLogger(__name__)

TEMP_KINDS = ("tmp", "part", "tmpdir", "old")
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-[0-9a-z]+\.(?P<kind>tmp|part|tmpdir|old)$")


@functools.lru_cache(maxsize=1)
def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:6]


def temp_name(name: str, kind: str = "tmp") -> str:
    """A hidden temporary name for ``name`` that records this host and process (see ``clean_stale_temps``)."""
    if kind not in TEMP_KINDS:
        raise ValueError(f"kind must be one of {TEMP_KINDS}, not {kind!r}")
    return f".{name}.{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}.{kind}"


def ensure_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Create ``path`` (and parents) as a folder; a file in the way is a one-line ``ValueError`` naming it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} {path} is a file, not a directory; choose another {what}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{what} {path}: cannot create it ({exc.strerror or exc})") from None
    return path


def open_new_file(path: str | os.PathLike) -> int:
    """Create ``path`` exclusively for writing, with ``0666`` less the umask (``mkstemp`` would give 0600)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file to write; on success it is synced and renamed to ``path``, on failure removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(temp_name(path.name))
    try:
        with os.fdopen(open_new_file(tmp), "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one."""
    with atomic_writer(path) as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """UTF-8 text through :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


def clean_stale_temps(directory: str | os.PathLike) -> list[Path]:
    """Remove the temporary files/directories in ``directory`` left by killed processes of this host.

    Only names made by ``temp_name`` whose process is gone are touched; a live writer's are kept.
    """
    directory = Path(directory)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_RE.match(entry.name)
        if match is None or match["host"] != _host_tag() or _pid_alive(int(match["pid"])):
            continue
        path = Path(entry.path)
        original = directory / match["name"]
        try:
            if match["kind"] == "old" and not os.path.lexists(original):  # killed mid-swap: put it back
                os.rename(path, original)
                logger.warning("restored %s from an interrupted directory swap", original)
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError as exc:
            logger.warning("could not remove the stale temporary %s: %s", path, exc)
            continue
        removed.append(path)
    if removed:
        logger.info("removed %d temporary file(s) left by an interrupted run in %s", len(removed), directory)
    return removed


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                os.fsync(f.fileno())
        with contextlib.suppress(OSError):  # directories cannot be opened for fsync everywhere
            fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)  # files are only ever replaced, never changed in place: sharing is safe
    except OSError:
        shutil.copy2(src, dst)
    return dst


def _carry_over(old: Path, new: Path) -> None:
    """Files of the old directory that the new one does not write (e.g. the cropper's) are kept."""
    for entry in os.scandir(old):
        target = new / entry.name
        if target.exists() or _TEMP_RE.match(entry.name):
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.copytree(entry.path, target, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry.path, str(target))


@functools.lru_cache(maxsize=1)
def _renameat2():
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    try:
        func = ctypes.CDLL(libc_name, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return func


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    func = _renameat2()
    if func is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if func(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, keep_other_files: bool = True) -> Iterator[Path]:
    """Yield a temporary directory to fill; on success it replaces ``path`` in one swap.

    A kill at any point leaves the old directory whole (or the new one), never a mix of the two.
    ``keep_other_files``: files of the old directory that the new one lacks are carried over.
    A symbolic link to a directory is written through: its target is replaced, the link stays.
    """
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path}: exists and is not a directory")
    clean_stale_temps(parent)
    tmp = parent / temp_name(path.name, "tmpdir")
    os.mkdir(tmp, 0o777)
    try:
        yield tmp
        if keep_other_files and path.is_dir():
            _carry_over(path, tmp)
        _fsync_tree(tmp)
        if not path.exists():
            os.rename(tmp, path)
        elif _exchange(tmp, path):
            shutil.rmtree(tmp)  # now the old directory
        else:  # two renames; a kill between them leaves the old one under a name the next write cleans
            old = parent / temp_name(path.name, "old")
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
