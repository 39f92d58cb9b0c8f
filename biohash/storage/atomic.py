"""Writes that readers never see half done and that survive a crash, and
reads that never turn a damaged file into a traceback.

Local filesystem: the bytes go to a dot-prefixed temp name in the same folder
(dataset discovery and the results reader skip it if we crash), the temp file
is fsynced, renamed over the target, and then the folder is fsynced so that
the rename itself is on disk. Without both fsyncs a power loss after the
rename can leave an empty or truncated file under the final name.

Object stores (S3, GCS): a single PUT is atomic and durable once it returns,
so the bytes are written to the target directly.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, overload

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from biohash.storage.location import Location, is_local, local_path

__all__ = ["atomic_path", "write_bytes", "write_table", "create_exclusive", "read_json", "read_bytes",
           "fsync_path", "probe_writable"]

log = logging.getLogger(__name__)


def fsync_path(path: str) -> None:
    """fsync a local file or folder by its operating-system path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_name(path: str) -> str:
    parent, base = os.path.split(path)
    return os.path.join(parent, f".{base}.{uuid.uuid4().hex}.tmp")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path beside the local ``path``; when the block succeeds,
    fsync it, rename it over ``path`` and fsync the folder (the durable local
    write every other writer builds on). On failure the temp file goes."""
    path = os.fspath(path)
    parent = os.path.dirname(path) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = _temp_name(path) + suffix
    try:
        yield Path(tmp)
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_path(parent)


def _durable_local(path: str, write: Callable[[str], None]) -> None:
    """``write(tmp)``, fsync tmp, rename it to ``path``, fsync the folder."""
    with atomic_path(path) as tmp:
        write(str(tmp))


def _atomic_write(fs: pafs.FileSystem, path: str, write: Callable[[str, pafs.FileSystem], None]) -> None:
    """Run ``write(target, fs)`` so that readers never see a partial ``path``."""
    if is_local(fs):
        # The local branch uses the OS path directly: pyarrow's LocalFileSystem
        # has no fsync, and os.replace is the atomic rename we need.
        _durable_local(local_path(fs, path), lambda tmp: write(tmp, pafs.LocalFileSystem()))
        return
    fs.create_dir(posixpath.dirname(path), recursive=True)
    write(path, fs)


def write_bytes(loc: Location, data: bytes) -> None:
    """Write a small file (``sweep.json``, ``final.json``, a manifest) atomically and durably."""
    def write(target: str, fs: pafs.FileSystem) -> None:
        with fs.open_output_stream(target) as fh:
            fh.write(data)

    _atomic_write(loc.fs, loc.path, write)


@overload
def write_table(where: Location, table: pa.Table, /) -> None: ...
@overload
def write_table(where: pafs.FileSystem, path: str, table: pa.Table, /) -> None: ...


def write_table(where: Any, *args: Any) -> None:
    """Write ``table`` as Parquet atomically and durably.

    Called as ``write_table(loc, table)`` or ``write_table(fs, path, table)``.
    """
    if isinstance(where, Location):
        fs, (table,) = where.fs, args
        path = where.path
    else:
        fs, (path, table) = where, args
    _atomic_write(fs, path, lambda target, tfs: pq.write_table(table, target, filesystem=tfs))


# --- exclusive creation ------------------------------------------------------

def _create_local(path: str, data: bytes) -> bool:
    """Write a complete temp file, then ``os.link`` it to ``path``.

    ``link`` fails with ``FileExistsError`` when ``path`` exists, atomically,
    so of two racing callers exactly one wins, and a reader never sees a
    partial file (``O_CREAT | O_EXCL`` alone is exclusive but would expose the
    file while it is still being written).
    """
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = _temp_name(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:
            # A filesystem without hard links: O_EXCL is still exclusive, only
            # not atomic for readers (who treat an empty file as missing).
            return _create_excl_open(path, data)
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    fsync_path(parent)
    return True


def _create_excl_open(path: str, data: bytes) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return True


def _s3_client(fs: pafs.S3FileSystem):
    """A boto3 client with ``fs``'s endpoint, region and credentials (None when
    boto3 is not installed). pyarrow exposes its options only through pickling."""
    try:
        import boto3
    except ImportError:
        return None
    opts = fs.__reduce__()[1][0]
    endpoint = opts.get("endpoint_override") or None
    if endpoint and "://" not in endpoint:
        endpoint = f"{opts.get('scheme') or 'https'}://{endpoint}"
    kwargs: dict[str, Any] = {"region_name": opts.get("region") or None, "endpoint_url": endpoint}
    if opts.get("access_key"):
        kwargs.update(aws_access_key_id=opts["access_key"], aws_secret_access_key=opts["secret_key"],
                      aws_session_token=opts.get("session_token") or None)
    return boto3.client("s3", **kwargs)


def _create_s3(fs: pafs.S3FileSystem, path: str, data: bytes) -> bool | None:
    """A conditional PUT (``If-None-Match: *``): S3 refuses it with 412 when the key
    exists. None when boto3 is missing (pyarrow cannot send the header)."""
    client = _s3_client(fs)
    if client is None:
        return None
    from botocore.exceptions import ClientError

    bucket, _, key = path.partition("/")
    try:
        client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status in (409, 412) or code in ("PreconditionFailed", "ConditionalRequestConflict"):
            return False
        raise OSError(f"cannot create s3://{path}: {exc}") from None
    return True


def create_exclusive(loc: Location, data: bytes) -> bool:
    """Create ``loc`` with ``data`` only if it does not exist yet; True when this call
    created it, False when it already existed. Atomic for readers and exclusive.

    Local: temp file + ``os.link`` (see ``_create_local``). S3: a conditional PUT
    with ``If-None-Match: *`` through boto3. Other object stores (GCS through
    pyarrow) and S3 without boto3 have no conditional put reachable from here:
    the fallback checks existence, then writes, which two callers starting in
    the same instant can both pass.
    """
    if is_local(loc.fs):
        return _create_local(local_path(loc.fs, loc.path), data)
    if isinstance(loc.fs, pafs.S3FileSystem):
        created = _create_s3(loc.fs, loc.path, data)
        if created is not None:
            return created
    if loc.exists():
        return False
    write_bytes(loc, data)
    return True


def probe_writable(folder: Location) -> None:
    """Create ``folder`` if needed and write, then delete, a small probe file in it;
    raises ``OSError`` when storage refuses (checked before a sweep starts Ray)."""
    probe = folder.join(f".biohash-write-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    folder.fs.create_dir(folder.path, recursive=True)
    with folder.fs.open_output_stream(probe.path) as fh:
        fh.write(b"ok")
    folder.fs.delete_file(probe.path)


# --- reading -----------------------------------------------------------------

def read_bytes(loc: Location) -> bytes | None:
    """The bytes of file ``loc``; None when it does not exist."""
    try:
        with loc.fs.open_input_stream(loc.path) as fh:
            return fh.readall()
    except FileNotFoundError:
        return None
    except OSError as exc:
        # pyarrow reports a missing object or a folder as a plain OSError.
        if loc.fs.get_file_info(loc.path).type != pafs.FileType.File:
            return None
        raise OSError(f"cannot read {loc.uri}: {exc}") from None


def read_json(loc: Location, *, what: str) -> dict | None:
    """The JSON object in file ``loc``; None when it is missing.

    An empty, truncated or non-JSON file (a crash during a non-durable write,
    a full disk) logs one warning naming ``what`` and the file and also gives
    None: callers treat it as missing instead of failing with a traceback.
    """
    data = read_bytes(loc)
    if data is None:
        return None
    try:
        value = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError) as exc:
        reason = "empty" if not data.strip() else f"not valid JSON ({exc})"
        log.warning("ignoring %s %s: %s; treated as missing", what, loc.uri, reason)
        return None
    if not isinstance(value, dict):
        log.warning("ignoring %s %s: a JSON %s, not an object; treated as missing", what, loc.uri,
                    type(value).__name__)
        return None
    return value
