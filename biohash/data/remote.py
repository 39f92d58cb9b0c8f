"""Remote data roots: copy a processed dataset into a node-local cache, once.

A data root may be a URI (``s3://bucket/data``, ``gs://...``, ``file:///...``;
anything ``pyarrow.fs.FileSystem.from_uri`` understands) or a path inside an
explicit pyarrow filesystem. Trials on one node share the cache: a file lock
makes the first trial copy ``<root>/processed/<NAME>/`` while the others wait,
then all find it complete. Each file is hashed while it streams and compared
with the manifest; a mismatch is fetched once more, then fails with DataError.
The manifest is written last, so a copy killed midway is redone.

The remote manifest is untrusted input (anyone who can write the bucket
writes it): the file names it lists are used only if they are the store's
own names (``data.store.STORE_FILES``), and every destination is checked to
lie directly in the cache folder, so a hostile manifest cannot make a node
write anywhere else (``../``, absolute paths, symlinks).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from biohash.data.store import (MANIFEST, STORE_FILES, data_location, manifest_location, store_dir,
                                missing_message, store_location)
from biohash.errors import DataError
from biohash.storage import Location, copy_hashed, read_bytes, resolve, sha256_file, write_bytes

__all__ = ["materialize", "default_cache_dir", "read_remote_manifest", "resolve_filesystem"]

log = logging.getLogger(__name__)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def default_cache_dir() -> Path:
    """``$BIOHASH_DATA_CACHE`` or ``~/.cache/biohash/data``."""
    return Path(os.environ.get("BIOHASH_DATA_CACHE", "~/.cache/biohash/data")).expanduser()


def materialize(name: str, root: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                *, filesystem: Any = None, verify: bool = False) -> Path:
    """Return a local data root holding ``processed/<name>`` (pass it to ``open_store``).

    A local path ``root`` is returned unchanged. Otherwise the dataset is copied
    into ``cache_dir/<hash of root>/`` unless an identical, complete copy is
    there (same manifest, same file sizes; ``verify=True`` also re-hashes it).
    Raises ``DataError`` for a missing or damaged remote store and for a
    manifest naming files that are not the store's own.
    """
    if filesystem is None and "://" not in str(root):
        return Path(root)
    if not _NAME.match(name) or ".." in name:
        raise DataError(f"bad dataset name {name!r}; allowed: letters, digits, '_', '.', '-'")
    base = data_location(root, filesystem)
    remote = store_location(base, name)
    manifest_bytes = read_bytes(manifest_location(remote))
    if manifest_bytes is None:
        raise DataError(missing_message(name, root))
    manifest = _checked_manifest(manifest_bytes, manifest_location(remote).uri)
    key = hashlib.sha1(f"{base.fs.type_name}:{base.path}".encode()).hexdigest()[:16]
    local_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    local_root = local_root / key
    local = store_dir(local_root, name)
    local.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    with FileLock(str(local_root / f".{name}.lock")):
        if _cache_ok(local, manifest_bytes, manifest, verify):
            return local_root
        log.info("copying %s from %s to %s", name, root, local)
        (local / MANIFEST).unlink(missing_ok=True)
        for fname, digest in manifest["checksums"].items():
            _fetch_checked(remote.join(fname), _inside(local, fname), digest, str(root))
        write_bytes(resolve(str(local / MANIFEST)), manifest_bytes)
    return local_root


def _checked_manifest(raw: bytes, where: str) -> dict[str, Any]:
    """The manifest, refused unless it is a JSON object whose ``checksums`` name only
    store files with sha256 digests and whose ``file_sizes`` are integers."""
    try:
        manifest = json.loads(raw.decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"unreadable manifest {where}: {exc}; push the dataset again") from None
    checksums = manifest.get("checksums") if isinstance(manifest, dict) else None
    if not isinstance(checksums, dict) or not checksums:
        raise DataError(f"manifest {where} has no 'checksums' table; push the dataset again")
    sizes = manifest.get("file_sizes", {})
    if not isinstance(sizes, dict):
        raise DataError(f"manifest {where} has a bad 'file_sizes' table; push the dataset again")
    for fname in [*checksums, *sizes]:
        if fname not in STORE_FILES:
            raise DataError(f"manifest {where} names file {fname!r}, which is not a store file; "
                            f"allowed: <fold>.<kind>.npy (e.g. train.images.npy); refusing it")
    for fname, digest in checksums.items():
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise DataError(f"manifest {where} has a bad sha256 {digest!r} for {fname}")
    for fname, size in sizes.items():
        if not isinstance(size, int) or size < 0:
            raise DataError(f"manifest {where} has a bad size {size!r} for {fname}")
    return manifest


def _inside(folder: Path, fname: str) -> Path:
    """``folder/fname``, refused unless it lies directly in ``folder`` once links are
    resolved (a second line of defence behind the ``STORE_FILES`` check)."""
    dest = folder / fname
    if dest.is_symlink() or dest.resolve().parent != folder.resolve():
        raise DataError(f"refusing to write {dest}: it resolves outside the data cache {folder}")
    return dest


def read_remote_manifest(name: str, root: str, *, filesystem: Any = None) -> dict | None:
    """The manifest of ``<root>/processed/<name>`` on a remote root; None if absent."""
    loc = manifest_location(store_location(data_location(root, filesystem), name))
    raw = read_bytes(loc)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise DataError(f"unreadable manifest of {name} under {root}: {exc}; "
                        f"push it again") from None


def resolve_filesystem(root: str | os.PathLike, filesystem: Any = None) -> tuple[Any, str]:
    """(pyarrow filesystem, base path) of a URI root, or of a path inside ``filesystem``."""
    loc = data_location(root, filesystem)
    return loc.fs, loc.path


def _cache_ok(local: Path, manifest_bytes: bytes, manifest: dict, verify: bool) -> bool:
    path = local / MANIFEST
    if not path.is_file() or path.read_bytes() != manifest_bytes:
        return False
    sizes = manifest.get("file_sizes", {})
    for fname, digest in manifest["checksums"].items():
        file = _inside(local, fname)
        if not file.is_file() or (fname in sizes and file.stat().st_size != sizes[fname]):
            return False
        if verify and sha256_file(file) != digest:
            return False
    return True


def _fetch_checked(src: Location, dest: Path, digest: str, root: str) -> None:
    """Copy with a streaming sha256; one retry on mismatch, then DataError."""
    tmp = dest.with_name(f".{dest.name}.partial")
    for attempt in (1, 2):
        tmp.unlink(missing_ok=True)
        try:
            # "x": never follow a link someone left at the temp name.
            with src.fs.open_input_stream(src.path) as fin, open(tmp, "xb") as fout:
                got = copy_hashed(fin, fout)
                fout.flush()
                os.fsync(fout.fileno())
        except (FileNotFoundError, OSError) as exc:
            tmp.unlink(missing_ok=True)
            raise DataError(f"cannot copy {src.uri} from {root}: {exc}") from None
        if got == digest:
            os.replace(tmp, dest)
            return
        tmp.unlink(missing_ok=True)
        log.warning("checksum mismatch for %s (attempt %d)", src.uri, attempt)
    raise DataError(f"checksum mismatch for {src.uri} in {root} after 2 copies: the remote store "
                    f"is corrupted; re-process it and upload again")
