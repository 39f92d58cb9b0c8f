"""Content fingerprints: one sha256 helper, and change tokens for cached listings.

``sha256_file`` hashes a local file or a ``Location``; ``copy_hashed`` hashes
while it copies (the data cache checks a download without reading it twice).
``file_tokens`` gives each file in a folder a token that changes whenever its
content does, without reading it: the object's ETag on S3 (one listing call
per 1,000 files); on a local disk the inode, size, mtime and ctime from one
``stat`` (every biohash write replaces a file by renaming a new one over it,
which gives a new inode and ctime even when size and mtime match); a content
sha256 only on other object stores. A size + mtime pair alone is not enough:
S3 reports 1-second mtimes and kernels stamp files with a coarse clock, so a
same-size rewrite within that tick would look unchanged.
"""
from __future__ import annotations

import hashlib
import os
from typing import BinaryIO, Iterable

import pyarrow.fs as pafs

from biohash.storage.location import Location, is_local, local_path

__all__ = ["sha256_file", "copy_hashed", "file_tokens", "CHUNK"]

CHUNK = 1 << 22


def _hash_stream(read, h) -> None:
    while chunk := read(CHUNK):
        h.update(chunk)


def sha256_file(path: str | os.PathLike | Location) -> str:
    """Hex sha256 of a file's bytes (a local path or a ``Location``), read in 4 MiB chunks."""
    h = hashlib.sha256()
    if isinstance(path, Location):
        with path.fs.open_input_stream(path.path) as fh:
            _hash_stream(fh.read, h)
    else:
        with open(path, "rb") as fh:
            _hash_stream(fh.read, h)
    return h.hexdigest()


def copy_hashed(src: BinaryIO, dst: BinaryIO) -> str:
    """Copy stream ``src`` to ``dst``; return the hex sha256 of what was copied."""
    h = hashlib.sha256()
    while chunk := src.read(CHUNK):
        h.update(chunk)
        dst.write(chunk)
    return h.hexdigest()


def _s3_etags(folder: Location, names: set[str]) -> dict[str, str] | None:
    from biohash.storage.atomic import _s3_client

    client = _s3_client(folder.fs)
    if client is None:
        return None
    bucket, _, prefix = folder.path.partition("/")
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix,
                                                                Delimiter="/"):
        for obj in page.get("Contents", []):
            name = obj["Key"][len(prefix):]
            if name in names:
                out[name] = f"etag:{obj['ETag'].strip(chr(34))}:{obj['Size']}"
    return out


def _stat_token(path: str) -> str:
    st = os.stat(path)
    return f"stat:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def file_tokens(folder: Location, names: Iterable[str]) -> dict[str, str]:
    """``{name: token}`` for the files ``names`` directly in ``folder``; the token
    changes whenever the file's content does (see the module doc)."""
    wanted = set(names)
    if isinstance(folder.fs, pafs.S3FileSystem):
        tokens = _s3_etags(folder, wanted)
        if tokens is not None and set(tokens) == wanted:
            return tokens
    if is_local(folder.fs):
        base = local_path(folder.fs, folder.path)
        return {n: _stat_token(os.path.join(base, n)) for n in wanted}
    return {n: "sha256:" + sha256_file(folder.join(n)) for n in wanted}
