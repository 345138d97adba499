"""Mirror ``s3://bucket/prefix`` into a local cache once, resumably, so any reader can open it.

Works with AWS and any S3-compatible server (MinIO, Ceph, moto): ``endpoint_url`` argument, else
``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``. Credentials come from the usual boto3 chain.

Each object is downloaded to ``<file>.part`` (with ``<file>.part.json`` recording its ETag) and
moved into place with ``os.replace`` only when complete, so a crash never leaves a truncated file
under the real name. A later run skips files already complete (same size and ETag, recorded in
``.vehicle_cls_s3.jsonl``, or an MD5 equal to a single-part ETag) and continues a ``.part`` file
with a ranged GET when the object's ETag is unchanged (``If-Match``), else downloads it afresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from vehicle_cls.data.sample import DatasetError

logger = logging.getLogger(__name__)

STATE_FILE = ".vehicle_cls_s3.jsonl"
LOCK_FILE = ".vehicle_cls_s3.lock"
_CHUNK = 1 << 20
CONNECT_TIMEOUT_S = 5.0  # seconds to open a connection
READ_TIMEOUT_S = 20.0  # seconds without a byte before a try is given up
MAX_ATTEMPTS = 3  # tries in all, per request


@dataclass
class SyncStats:
    """What one ``sync_s3_prefix`` call did (for logs and tests)."""

    listed: int = 0
    downloaded: int = 0  # files fetched in full
    resumed: int = 0  # files continued from a .part file
    skipped: int = 0  # files already complete in the cache
    bytes_downloaded: int = 0
    failed: list[str] = field(default_factory=list)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, prefix) of ``s3://bucket/prefix``; raise ``ValueError`` for anything else."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"{uri!r} is not an s3://bucket/prefix URI")
    return parsed.netloc, parsed.path.lstrip("/")


def is_s3_uri(value: Any) -> bool:
    """True for strings starting with ``s3://``."""
    return isinstance(value, str) and value.startswith("s3://")


def default_cache_dir() -> Path:
    """``<vehicle_cls cache>/datasets`` (``VEHICLE_CLS_HOME`` or the user cache dir, as for weights)."""
    from vehicle_cls.weights import cache_dir

    return cache_dir() / "datasets"


def resolve_endpoint(endpoint_url: str | None) -> str | None:
    """The endpoint to use: the argument, else ``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``."""
    return endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def make_client(
    endpoint_url: str | None = None,
    *,
    unsigned: bool = False,
    region_name: str | None = None,
    connect_timeout: float = CONNECT_TIMEOUT_S,
    read_timeout: float = READ_TIMEOUT_S,
    max_attempts: int = MAX_ATTEMPTS,
) -> Any:
    """A boto3 S3 client (imported lazily) for ``endpoint_url``; ``unsigned`` for public buckets.

    Timeouts and retries are explicit (botocore's defaults, 60 s per try and several tries, let an endpoint
    that never answers hold a run for minutes): at most ``max_attempts`` tries in all, each giving up after
    ``connect_timeout`` s to connect or ``read_timeout`` s without a byte.
    """
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:
        raise ImportError("reading s3:// datasets needs boto3: pip install 'vehicle-cls[s3]'") from exc
    extra: dict[str, Any] = {
        "retries": {"total_max_attempts": max_attempts, "mode": "standard"},
        "connect_timeout": connect_timeout,
        "read_timeout": read_timeout,
    }
    if unsigned:
        from botocore import UNSIGNED

        extra["signature_version"] = UNSIGNED
    return boto3.session.Session().client(
        "s3", endpoint_url=resolve_endpoint(endpoint_url), region_name=region_name, config=Config(**extra)
    )


def local_dir_for(uri: str, cache_dir: str | os.PathLike | None = None, endpoint_url: str | None = None) -> Path:
    """Where ``uri`` is mirrored: ``<cache>/s3/<endpoint>/<bucket>/<prefix>`` (endpoints kept apart)."""
    bucket, prefix = parse_s3_uri(uri)
    endpoint = resolve_endpoint(endpoint_url)
    tag = "aws" if endpoint is None else re.sub(r"[^A-Za-z0-9.-]+", "_", urlparse(endpoint).netloc or endpoint)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "s3" / tag / bucket / _safe_relpath(prefix.rstrip("/"))


def _safe_relpath(key: str) -> str:
    parts = PurePosixPath(key).parts
    if any(p in ("..", "") for p in parts) or key.startswith("/"):
        raise ValueError(f"unsafe S3 key {key!r}")
    return str(PurePosixPath(*parts)) if parts else ""


def sync_s3_prefix(
    uri: str,
    cache_dir: str | os.PathLike | None = None,
    *,
    endpoint_url: str | None = None,
    client: Any = None,
    max_workers: int = 8,
    unsigned: bool = False,
) -> tuple[Path, SyncStats]:
    """Download every object under ``uri`` not already complete in the cache; return (local dir, stats)."""
    bucket, prefix = parse_s3_uri(uri)
    local = local_dir_for(uri, cache_dir, endpoint_url)
    state_path = local / STATE_FILE
    client = client if client is not None else make_client(endpoint_url, unsigned=unsigned)
    stats = SyncStats()
    try:
        objects = _list(client, bucket, prefix)
    except Exception as exc:
        if state_path.is_file():  # offline: the mirror from an earlier run is still usable
            logger.warning("cannot list %s (%s); using the cached copy in %s", uri, exc, local)
            return local, stats
        raise DatasetError(f"{uri}: cannot list objects ({type(exc).__name__}: {exc})") from exc
    if not objects:
        raise DatasetError(f"{uri}: no objects under this prefix")
    stats.listed = len(objects)
    local.mkdir(parents=True, exist_ok=True)
    with _DirLock(local / LOCK_FILE):  # DDP ranks opening the same URI: one downloads, the others then skip
        _sync_objects(client, bucket, prefix, uri, local, objects, stats, max_workers)
    return local, stats


def _sync_objects(
    client: Any, bucket: str, prefix: str, uri: str, local: Path, objects: list, stats: SyncStats, max_workers: int
) -> None:
    state_path = local / STATE_FILE
    state = _read_state(state_path)
    _remove_orphan_parts(local, {rel for _, rel, _, _ in objects})
    todo = []
    for key, rel, size, etag in objects:
        target = local / rel
        if _complete(target, size, etag, state.get(rel)):
            stats.skipped += 1
            if rel not in state:
                state[rel] = {"size": size, "etag": etag}
                _append_state(state_path, rel, size, etag)
            continue
        todo.append((key, rel, size, etag))
    if todo:
        logger.info("downloading %d of %d objects from %s into %s", len(todo), len(objects), uri, local)
        with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
            futures = [
                (key, rel, size, etag, pool.submit(_download, client, bucket, key, local / rel, size, etag))
                for key, rel, size, etag in todo
            ]
            for key, rel, size, etag, future in futures:
                try:
                    resumed, nbytes = future.result()
                except Exception as exc:  # one bad object does not stop the others
                    stats.failed.append(f"s3://{bucket}/{key}: {type(exc).__name__}: {exc}")
                    continue
                stats.resumed += resumed
                stats.downloaded += not resumed
                stats.bytes_downloaded += nbytes
                _append_state(state_path, rel, size, etag)
    if stats.failed:
        raise DatasetError(
            f"{uri}: {len(stats.failed)} of {len(objects)} objects failed to download (re-run to resume): "
            + "; ".join(stats.failed[:3])
        )


def _remove_orphan_parts(local: Path, listed: set[str]) -> None:
    """Partial downloads of objects no longer listed (deleted, renamed) would never be resumed: remove them.
    (Partials of listed objects stay: they are continued.)"""
    for part in [*local.rglob("*.part"), *local.rglob("*.part.json")]:
        target = part.with_name(part.name.removesuffix(".json").removesuffix(".part"))
        if target.relative_to(local).as_posix() not in listed:
            part.unlink(missing_ok=True)
            logger.info("removed %s: a partial download of an object no longer under the prefix", part)


class _DirLock:
    """An exclusive advisory lock (``fcntl.flock``) held while a mirror is updated; a no-op without fcntl."""

    def __init__(self, path: Path):
        self.path = path
        self.file: Any = None

    def __enter__(self) -> _DirLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self
        self.file = open(self.path, "a")
        fcntl.flock(self.file.fileno(), fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.file is not None:
            self.file.close()  # closing releases the lock


def _list(client: Any, bucket: str, prefix: str) -> list[tuple[str, str, int, str]]:
    """(key, relative path, size, etag) for the objects under ``prefix`` (a folder, or one exact key)."""
    folder = prefix if prefix == "" or prefix.endswith("/") else prefix + "/"
    found = _list_raw(client, bucket, folder)
    if not found and folder != prefix:  # s3://bucket/file.csv: a single object
        found = [o for o in _list_raw(client, bucket, prefix) if o["Key"] == prefix]
        return [(o["Key"], PurePosixPath(o["Key"]).name, int(o["Size"]), o.get("ETag", "").strip('"')) for o in found]
    out = []
    for o in found:
        key = o["Key"]
        if key.endswith("/"):
            continue  # folder marker
        try:
            rel = _safe_relpath(key[len(folder) :])
        except ValueError:
            logger.warning("skipping S3 key with an unsafe path: %s", key)
            continue
        out.append((key, rel, int(o["Size"]), o.get("ETag", "").strip('"')))
    return _one_to_one(out, folder)


_RESERVED = ".vehicle_cls_s3"  # our state, lock (and nothing else) in the mirror's top folder
_PARTIAL_SUFFIXES = (".part", ".part.json")
_NAME_MAX = 255 - len(".part.json")  # bytes per path part, with room for the partial's suffix


def _one_to_one(objects: list[tuple[str, str, int, str]], folder: str) -> list[tuple[str, str, int, str]]:
    """The objects whose keys map to local files one to one; each clash is skipped with a warning naming the
    keys, and the rest stays usable: a key that is also a folder of other keys (``ds/car`` and
    ``ds/car/a.jpg``), keys that collapse into one path (``ds/car//a.jpg`` and ``ds/car/a.jpg``: the exact one
    is kept), a key named like the partial download of another (``a.jpg.part``), a name too long for a
    local file, and our own bookkeeping names."""
    kept: list[tuple[str, str, int, str]] = []
    for obj in objects:
        key, rel = obj[0], obj[1]
        if rel.split("/", 1)[0].startswith(_RESERVED):
            logger.warning("skipping S3 key %s: its name is reserved for the mirror's own files", key)
        elif any(len(part.encode("utf-8", "surrogateescape")) > _NAME_MAX for part in rel.split("/")):
            logger.warning(
                "skipping S3 key %s: a name in it is longer than a local file name may be (%d bytes)", key, _NAME_MAX
            )
        else:
            kept.append(obj)
    by_rel: dict[str, list[tuple[str, str, int, str]]] = {}
    for obj in kept:
        by_rel.setdefault(obj[1], []).append(obj)
    unique: list[tuple[str, str, int, str]] = []
    for rel, group in by_rel.items():
        exact = [o for o in group if o[0] == folder + rel]
        if len(group) > 1:
            for o in group:
                if not exact or o is not exact[0]:
                    logger.warning(
                        "skipping S3 key %s: it maps to the same local file %s as %s",
                        o[0],
                        rel,
                        ", ".join(x[0] for x in group if x is not o),
                    )
        if len(group) == 1 or exact:
            unique.append(exact[0] if exact else group[0])
    rels = {o[1] for o in unique}
    folders = {parent for rel in rels for parent in (str(p) for p in PurePosixPath(rel).parents) if parent != "."}
    out = []
    for obj in unique:
        key, rel = obj[0], obj[1]
        base = next(
            (rel.removesuffix(s) for s in _PARTIAL_SUFFIXES if rel.endswith(s) and rel.removesuffix(s) in rels), None
        )
        if rel in folders:
            inside = next(o[0] for o in unique if o[1].startswith(rel + "/"))
            logger.warning("skipping S3 key %s: other keys use it as a folder (e.g. %s)", key, inside)
        elif base is not None:
            logger.warning(
                "skipping S3 key %s: its local file would be the partial download of %s%s", key, folder, base
            )
        else:
            out.append(obj)
    return out


def _list_raw(client: Any, bucket: str, prefix: str) -> list[dict]:
    paginator = client.get_paginator("list_objects_v2")
    return [o for page in paginator.paginate(Bucket=bucket, Prefix=prefix) for o in page.get("Contents", [])]


def _read_state(path: Path) -> dict[str, dict]:
    state: dict[str, dict] = {}
    if path.is_file():
        for line in path.read_text("utf-8").splitlines():
            try:
                entry = json.loads(line)
                state[entry["path"]] = entry
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line from a crash
    return state


def _append_state(path: Path, rel: str, size: int, etag: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"path": rel, "size": size, "etag": etag}) + "\n")
        f.flush()


def _complete(target: Path, size: int, etag: str, record: dict | None) -> bool:
    try:
        if target.stat().st_size != size:
            return False
    except OSError:
        return False
    if record is not None:
        return record.get("size") == size and record.get("etag") == etag
    if re.fullmatch(r"[0-9a-f]{32}", etag):  # single-part upload: the ETag is the MD5
        return _md5(target) == etag
    return False


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(client: Any, bucket: str, key: str, target: Path, size: int, etag: str) -> tuple[bool, int]:
    """Fetch one object into ``target`` atomically, continuing a matching ``.part``; (resumed, bytes)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    meta = target.with_name(target.name + ".part.json")
    offset = 0
    if part.is_file() and meta.is_file():
        try:
            recorded = json.loads(meta.read_text("utf-8"))
        except ValueError:
            recorded = {}
        have = part.stat().st_size
        if recorded.get("etag") == etag and recorded.get("size") == size and 0 < have <= size:
            offset = have
    if offset == 0:
        meta.write_text(json.dumps({"etag": etag, "size": size, "key": key}), "utf-8")
    nbytes = 0
    if offset < size or size == 0:
        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if etag:
            kwargs["IfMatch"] = f'"{etag}"'
        if offset:
            kwargs["Range"] = f"bytes={offset}-"
        try:
            response = client.get_object(**kwargs)
        except Exception as exc:
            if offset and _precondition_failed(exc):  # changed since the partial download: start over
                part.unlink(missing_ok=True)
                meta.unlink(missing_ok=True)
                return _download(client, bucket, key, target, size, etag)
            raise
        with open(part, "ab" if offset else "wb") as f:
            for chunk in response["Body"].iter_chunks(_CHUNK):
                f.write(chunk)
                nbytes += len(chunk)
    got = part.stat().st_size
    if got != size:
        part.unlink(missing_ok=True)
        meta.unlink(missing_ok=True)
        raise OSError(f"size mismatch for {key}: expected {size} bytes, got {got}")
    os.replace(part, target)
    meta.unlink(missing_ok=True)
    return offset > 0, nbytes


def _precondition_failed(exc: Exception) -> bool:
    error = getattr(exc, "response", {}).get("Error", {}) if hasattr(exc, "response") else {}
    return str(error.get("Code")) in ("PreconditionFailed", "412") or "PreconditionFailed" in str(exc)
