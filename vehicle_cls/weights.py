"""Known pretrained weights: where to download them, where they are cached, and how they are verified.

Downloads are atomic (a temporary file in the cache directory, checked, then ``os.replace``d into
place), so an interrupted download is never mistaken for a cached file: the bytes are verified by
their sha256 where one is known, else by reading them as their format (``.pkl`` through the
restricted unpickler, ``.pth``/``.pt`` with ``weights_only``, ``.safetensors`` header and size); a file
that can be verified neither way is cached only when the server stated its length and sent all of it.
Files fetched by URL (not by registry name) are cached under a folder named by a hash of the URL,
so two URLs that end in the same file name never share an entry. When the download cannot
happen (offline, firewall) the error says which URL to fetch by hand and the exact path to put it at.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from vehicle_cls.errors import VehicleClsError
from vehicle_cls.fileio import clean_stale_temps, open_new_file, temp_name
from vehicle_cls.progress import progress_bar
from vehicle_cls.zoo import DETECTOR_CONFIGS, ZOO_LICENCE

logger = logging.getLogger(__name__)

ENV_HOME = "VEHICLE_CLS_HOME"
_CHUNK = 1 << 20
_URL_DIR = "urls"  # <cache>/urls/<sha256(url)[:16]>/<file name>: one entry per URL
_CHECKED_SUFFIXES = (".pkl", ".pth", ".pt", ".safetensors")


@dataclass(frozen=True)
class WeightsInfo:
    """One downloadable weights file."""

    url: str
    filename: str  # path in the cache directory, relative (unique across entries and URLs)
    sha256: str | None = None  # full hex digest, verified after download when known
    sha256_prefix: str | None = None  # leading hex digits of the digest (torchvision-style names)
    licence: str = ""
    description: str = ""


KNOWN_WEIGHTS: dict[str, WeightsInfo] = {
    **{
        name: WeightsInfo(url=c.weights_url, filename=c.weights_file, licence=ZOO_LICENCE, description=c.description)
        for name, c in DETECTOR_CONFIGS.items()
    },
    "resnet50_imagenet_v1": WeightsInfo(
        url="https://download.pytorch.org/models/resnet50-0676ba61.pth",
        filename="resnet50-0676ba61.pth",
        sha256_prefix="0676ba61",
        licence="BSD-3-Clause (torchvision)",
        description="torchvision ResNet50 IMAGENET1K_V1",
    ),
    "resnet50_imagenet_v2": WeightsInfo(
        url="https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
        filename="resnet50-11ad3fa6.pth",
        sha256_prefix="11ad3fa6",
        licence="BSD-3-Clause (torchvision)",
        description="torchvision ResNet50 IMAGENET1K_V2",
    ),
}


class WeightsError(VehicleClsError, RuntimeError):
    """Weights could not be downloaded or verified; the message says what to do about it."""


def cache_dir() -> Path:
    """Where downloaded weights live: ``$VEHICLE_CLS_HOME`` or the user cache dir / "vehicle_cls"."""
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser()
    try:
        import platformdirs

        return Path(platformdirs.user_cache_dir("vehicle_cls", appauthor=False))
    except ImportError:  # pragma: no cover - platformdirs is a dependency
        return Path.home() / ".cache" / "vehicle_cls"


def cached_path(name_or_url: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The path a known name or URL is (or would be) cached at."""
    info = _resolve(name_or_url)
    return (Path(cache_dir) if cache_dir is not None else _default_dir()) / info.filename


def _default_dir() -> Path:
    return cache_dir()


def fetch_weights(
    name_or_url: str,
    cache_dir: str | os.PathLike | None = None,
    sha256: str | None = None,
    progress: bool | None = None,
) -> Path:
    """Return the local path of known weights (by registry name) or of a URL, downloading on first use.

    An existing local file path is returned as is. ``sha256`` overrides the registry's checksum.
    """
    if "://" not in name_or_url and name_or_url not in KNOWN_WEIGHTS and Path(name_or_url).is_file():
        return Path(name_or_url)
    info = _resolve(name_or_url)
    expected = (sha256 or info.sha256 or "").lower() or None
    dest = (Path(cache_dir) if cache_dir is not None else _default_dir()) / info.filename
    found, invalid = find_cached(name_or_url, cache_dir, sha256)
    if found is not None:
        return found
    if invalid:
        logger.warning("%s; downloading it again", invalid)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"cannot create the weights cache directory {dest.parent}: {exc}") from exc
    clean_stale_temps(dest.parent)
    logger.info("downloading %s to %s", info.url, dest)
    try:
        _download(info.url, dest, expected, info.sha256_prefix, progress)
    except WeightsError as exc:
        raise WeightsError(f"{invalid}; and {exc}" if invalid else str(exc)) from None
    return dest


def find_cached(
    name_or_url: str, cache_dir: str | os.PathLike | None = None, sha256: str | None = None
) -> tuple[Path | None, str | None]:
    """(the cached file, None), or (None, why the file in the cache is not valid), or (None, None).

    ``fetch_weights`` and ``vehicle-cls download --list`` both ask this, so they always agree. A file put
    there by hand is checked like a download: its sha256 where one is known, else its format's structure
    (a pickle's first and last opcode, a torch zip's directory, a safetensors header), which reads a
    few bytes, not the whole file.
    """
    info = _resolve(name_or_url)
    expected = (sha256 or info.sha256 or "").lower() or None
    directory = Path(cache_dir) if cache_dir is not None else _default_dir()
    candidates = [directory / info.filename]
    if name_or_url in KNOWN_WEIGHTS:  # a registry file fetched by hand and kept under its URL's name
        as_named = directory / Path(urllib.parse.urlparse(info.url).path).name
        if as_named != candidates[0]:
            candidates.append(as_named)
    invalid = None
    for path in candidates:
        if not path.is_file():
            continue
        reason = _cached_problem(path, expected, info.sha256_prefix)
        if reason is None:
            return path, None
        invalid = invalid or f"the cached file {path} is not valid ({reason})"
    return None, invalid


def _cached_problem(path: Path, sha256: str | None, sha256_prefix: str | None) -> str | None:
    """Why the file at ``path`` is not the weights it should be, or None."""
    try:
        if sha256 is not None or sha256_prefix is not None:
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(_CHUNK), b""):
                    digest.update(chunk)
            got = digest.hexdigest()
            if (sha256 is not None and got != sha256) or (
                sha256_prefix is not None and not got.startswith(sha256_prefix.lower())
            ):
                want = sha256 if sha256 is not None else f"{sha256_prefix}..."
                return f"sha256 {got[:16]}... is not the expected {want}"
            return None
        return _structure_problem(path, path.suffix.lower())
    except OSError as exc:
        return f"cannot read it: {exc.strerror or exc}"


def _structure_problem(path: Path, suffix: str) -> str | None:
    """A cheap check that a file is built as its format is (a few bytes read), or None when it is / cannot tell."""
    if suffix == ".safetensors":
        try:
            _verify_format(path, suffix, str(path), length_known=True)
        except WeightsError as exc:
            return str(exc).split(" is ", 1)[-1]
        return None
    if suffix not in (".pkl", ".pth", ".pt"):
        return None
    import zipfile

    if suffix != ".pkl" and zipfile.is_zipfile(path):  # torch.save's format
        return None
    with open(path, "rb") as f:
        head = f.read(1)
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return "empty file"
        f.seek(-1, os.SEEK_END)
        tail = f.read(1)
    if head != b"\x80" or (suffix == ".pkl" and tail != b"."):
        kind = "a pickle" if suffix == ".pkl" else "a torch file"
        return f"not {kind}: it starts with {head!r}" + (f" and ends with {tail!r}" if suffix == ".pkl" else "")
    return None


def _resolve(name_or_url: str) -> WeightsInfo:
    if name_or_url in KNOWN_WEIGHTS:
        return KNOWN_WEIGHTS[name_or_url]
    if "://" in name_or_url:
        filename = Path(urllib.parse.urlparse(name_or_url).path).name
        if not filename:
            raise WeightsError(f"cannot tell a file name from the URL {name_or_url!r}")
        key = hashlib.sha256(name_or_url.encode("utf-8")).hexdigest()[:16]
        return WeightsInfo(url=name_or_url, filename=f"{_URL_DIR}/{key}/{filename}")
    raise WeightsError(f"unknown weights {name_or_url!r}: not a file, a URL or one of {sorted(KNOWN_WEIGHTS)}")


def _download(url: str, dest: Path, sha256: str | None, sha256_prefix: str | None, progress: bool | None) -> None:
    """Stream ``url`` into a temporary file beside ``dest``, verify, then atomically rename it."""
    tmp = dest.with_name(temp_name(dest.name, "part"))
    digest = hashlib.sha256()
    try:
        with os.fdopen(open_new_file(tmp), "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=60)
            except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
                raise WeightsError(_offline_message(url, dest, exc)) from exc
            with response:
                total = int(response.headers.get("Content-Length") or 0) or None
                bar = progress_bar(total, progress, dest.name, "B", unit_scale=True, unit_divisor=1024)
                received = 0
                try:
                    while True:
                        chunk = response.read(_CHUNK)
                        if not chunk:
                            break
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                    raise WeightsError(_offline_message(url, dest, exc)) from exc
                finally:
                    bar.close()
            if total is not None and received != total:
                raise WeightsError(_offline_message(url, dest, f"download incomplete: {received} of {total} bytes"))
            out.flush()
            os.fsync(out.fileno())
        got = digest.hexdigest()
        if sha256 is not None and got != sha256:
            raise WeightsError(f"checksum mismatch for {url}: expected sha256 {sha256}, got {got}; file discarded")
        if sha256_prefix is not None and not got.startswith(sha256_prefix.lower()):
            raise WeightsError(
                f"checksum mismatch for {url}: expected sha256 starting {sha256_prefix}, got {got}; file discarded"
            )
        if sha256 is None and sha256_prefix is None:  # no checksum: the format must vouch for the bytes
            try:
                _verify_format(tmp, dest.suffix.lower(), f"downloaded {url}", length_known=total is not None)
            except WeightsError as exc:
                raise WeightsError(f"{exc}; file discarded") from None
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.info("saved %s (sha256 %s)", dest, got)


def _verify_format(path: Path, suffix: str, what: str, *, length_known: bool) -> None:
    """Without a checksum, a download is cached only when it reads as its format (a cut file does not)."""
    if suffix == ".pkl":
        _check_zoo_pickle(path, what)
    elif suffix in (".pth", ".pt"):
        from vehicle_cls.torchfile import TorchFileError, load_torch_file

        try:
            load_torch_file(path)
        except TorchFileError as exc:
            raise WeightsError(f"{what} is not a readable torch file ({exc})") from None
    elif suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), "pt") as f:
                list(f.keys())
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            first = (str(exc).splitlines() or [""])[0]
            raise WeightsError(f"{what} is not a complete safetensors file ({first})") from None
    elif not length_known:
        raise WeightsError(
            f"cannot verify {what}: the server sent no Content-Length, no sha256 is known and "
            f"{suffix or 'a file without suffix'} is not one of {', '.join(_CHECKED_SUFFIXES)}; pass sha256= "
            "(vehicle-cls download --sha256)"
        )


def _check_zoo_pickle(path: Path, what: str) -> None:
    """A downloaded ``.pkl`` must read as a detectron2 checkpoint (numpy arrays only) before it is cached."""
    from vehicle_cls.cropper.checkpoint import CheckpointError, load_zoo_pkl

    try:
        load_zoo_pkl(path)
    except CheckpointError as exc:
        raise WeightsError(f"{what} is not a detectron2 checkpoint ({exc})") from exc


def _offline_message(url: str, dest: Path, reason: object) -> str:
    url_name = Path(urllib.parse.urlparse(url).path).name
    also = f"its own name {url_name} in that directory works too; " if url_name != dest.name else ""
    return (
        f"could not download {url} ({reason}). Download that file yourself and put it at {dest} "
        f"({also}{ENV_HOME} sets the cache directory)"
    )


def copy_into_cache(name: str, source: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """Install a file fetched by hand under its cache name (verified like a download)."""
    info = _resolve(name)
    directory = Path(cache_dir) if cache_dir is not None else _default_dir()
    dest = directory / info.filename
    dest.parent.mkdir(parents=True, exist_ok=True)
    _download(Path(source).resolve().as_uri(), dest, info.sha256, info.sha256_prefix, progress=False)
    return dest


__all__ = [
    "KNOWN_WEIGHTS",
    "WeightsError",
    "WeightsInfo",
    "cache_dir",
    "cached_path",
    "copy_into_cache",
    "fetch_weights",
    "find_cached",
]
