"""Remote data roots: copy a processed dataset into a node-local cache, once.

A data root may be a URI (``s3://bucket/data``, ``gs://...``, ``file:///...``;
anything ``pyarrow.fs.FileSystem.from_uri`` understands) or a path inside an
explicit pyarrow filesystem. Trials on one node share the cache: a file lock
makes the first trial copy ``<root>/processed/<NAME>/`` while the others wait,
then all find it complete. Each file is hashed while it streams and compared
with the manifest; a mismatch is fetched once more, then fails with DataError.
The manifest is written last, so a copy killed midway is redone.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from biohash.data.store import MANIFEST, missing_message, sha256_file
from biohash.errors import DataError
from biohash.utils import atomic_write_bytes

__all__ = ["materialize", "default_cache_dir", "read_remote_manifest", "resolve_filesystem"]

log = logging.getLogger(__name__)
_CHUNK = 1 << 22


def default_cache_dir() -> Path:
    """``$BIOHASH_DATA_CACHE`` or ``~/.cache/biohash/data``."""
    return Path(os.environ.get("BIOHASH_DATA_CACHE", "~/.cache/biohash/data")).expanduser()


def materialize(name: str, root: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                *, filesystem: Any = None, verify: bool = False) -> Path:
    """Return a local data root holding ``processed/<name>`` (pass it to ``open_store``).

    A local path ``root`` is returned unchanged. Otherwise the dataset is copied
    into ``cache_dir/<hash of root>/`` unless an identical, complete copy is
    there (same manifest, same file sizes; ``verify=True`` also re-hashes it).
    """
    if filesystem is None and "://" not in str(root):
        return Path(root)
    filesystem, base = resolve_filesystem(root, filesystem)
    remote = f"{base.rstrip('/')}/processed/{name}"
    manifest_bytes = _manifest_bytes(filesystem, remote)
    if manifest_bytes is None:
        raise DataError(missing_message(name, root))
    manifest = json.loads(manifest_bytes)
    key = hashlib.sha1(f"{filesystem.type_name}:{base}".encode()).hexdigest()[:16]
    local_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    local_root = local_root / key
    local = local_root / "processed" / name
    local.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    with FileLock(str(local_root / f".{name}.lock")):
        if _cache_ok(local, manifest_bytes, manifest, verify):
            return local_root
        log.info("copying %s from %s to %s", name, root, local)
        (local / MANIFEST).unlink(missing_ok=True)
        for fname, digest in manifest["checksums"].items():
            _fetch_checked(filesystem, f"{remote}/{fname}", local / fname, digest, str(root))
        atomic_write_bytes(local / MANIFEST, manifest_bytes)
    return local_root


def read_remote_manifest(name: str, root: str, *, filesystem: Any = None) -> dict | None:
    """The manifest of ``<root>/processed/<name>`` on a remote root; None if absent."""
    filesystem, base = resolve_filesystem(root, filesystem)
    raw = _manifest_bytes(filesystem, f"{base.rstrip('/')}/processed/{name}")
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DataError(f"unreadable manifest of {name} under {root}: {exc}; "
                        f"push it again") from None


def resolve_filesystem(root: str | os.PathLike, filesystem: Any = None) -> tuple[Any, str]:
    """(pyarrow filesystem, base path) of a URI root, or of a path inside ``filesystem``."""
    from pyarrow import fs as pafs

    if filesystem is not None:
        return filesystem, str(root)
    try:
        return pafs.FileSystem.from_uri(str(root))
    except (ValueError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"bad data root {str(root)!r}: {exc}; allowed: a folder or a URI such "
                        f"as s3://bucket/data, gs://bucket/data, file:///path") from None


def _manifest_bytes(filesystem: Any, remote: str) -> bytes | None:
    try:
        with filesystem.open_input_stream(f"{remote}/{MANIFEST}") as f:
            return f.read()
    except (FileNotFoundError, OSError):
        return None


def _cache_ok(local: Path, manifest_bytes: bytes, manifest: dict, verify: bool) -> bool:
    path = local / MANIFEST
    if not path.is_file() or path.read_bytes() != manifest_bytes:
        return False
    sizes = manifest.get("file_sizes", {})
    for fname, digest in manifest["checksums"].items():
        file = local / fname
        if not file.is_file() or (fname in sizes and file.stat().st_size != sizes[fname]):
            return False
        if verify and sha256_file(file) != digest:
            return False
    return True


def _fetch_checked(filesystem: Any, src: str, dest: Path, digest: str, root: str) -> None:
    """Copy with a streaming sha256; one retry on mismatch, then DataError."""
    for attempt in (1, 2):
        tmp = dest.with_name(f".{dest.name}.partial")
        h = hashlib.sha256()
        try:
            with filesystem.open_input_stream(src) as fin, open(tmp, "wb") as fout:
                while chunk := fin.read(_CHUNK):
                    h.update(chunk)
                    fout.write(chunk)
        except (FileNotFoundError, OSError) as exc:
            tmp.unlink(missing_ok=True)
            raise DataError(f"cannot copy {src} from {root}: {exc}") from None
        if h.hexdigest() == digest:
            os.replace(tmp, dest)
            return
        tmp.unlink(missing_ok=True)
        log.warning("checksum mismatch for %s (attempt %d)", src, attempt)
    raise DataError(f"checksum mismatch for {src} in {root} after 2 copies: the remote store "
                    f"is corrupted; re-process it and upload again")
