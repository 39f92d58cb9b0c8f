"""Where a storage address points: a folder on a pyarrow filesystem.

Every storage address biohash accepts (a local folder, ``file://``,
``s3://bucket/prefix``, ``gs://...``, optionally with pyarrow filesystem
options as a query such as ``?endpoint_override=host:port&scheme=http``)
becomes a :class:`Location` here and nowhere else.
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from biohash.errors import ResultsError

__all__ = ["Location", "resolve", "absolute_address", "is_uri", "is_local", "local_path",
           "list_files"]


@dataclass(frozen=True)
class Location:
    """A file or folder on a pyarrow filesystem; ``uri`` is its address as given
    (for messages and for handing to another process).

    A URI may carry pyarrow filesystem options as a query
    (``s3://b/p?endpoint_override=host:port&scheme=http``); ``join`` keeps the query
    at the end, so every derived address still opens the same filesystem.
    """

    fs: pafs.FileSystem
    path: str
    uri: str

    def join(self, *parts: str) -> "Location":
        path = posixpath.join(self.path, *parts)
        base, sep, query = self.uri.partition("?")
        return Location(self.fs, path, posixpath.join(base, *parts) + sep + query)

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    def parent(self) -> "Location":
        base, sep, query = self.uri.partition("?")
        return Location(self.fs, posixpath.dirname(self.path),
                        posixpath.dirname(base.rstrip("/")) + sep + query)

    def exists(self) -> bool:
        return self.fs.get_file_info(self.path).type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self.fs.get_file_info(self.path).type == pafs.FileType.Directory


def is_uri(address: str | Path) -> bool:
    """True for ``scheme://...`` addresses, False for plain folders."""
    return "://" in str(address)


def absolute_address(address: str | Path, *, what: str = "storage") -> str:
    """``address`` as one absolute address: URIs unchanged, folders made absolute
    (``~`` expanded, relative to the current directory).

    Done on the driver, once, before any trial starts: Ray runs every trial in
    its own working directory, so a relative folder such as ``sweeps`` would
    name a different place in each trial (and in Ray's temp folder, which is
    gone with the Ray session). ``what`` names the option in the error.
    """
    text = str(address)
    if not text.strip():
        raise ResultsError(f"bad {what} {text!r}; allowed: a folder or a URI "
                           f"(s3://bucket/prefix, gs://...)")
    if is_uri(text):
        return text
    return str(Path(text).expanduser().resolve())


def resolve(storage: str | Path | Location, filesystem: pafs.FileSystem | None = None) -> Location:
    """A storage address as a ``Location`` (a ``Location`` is returned as is).

    With ``filesystem`` the scheme, credentials and options are stripped
    (``s3://key:secret@bucket/p?region=x`` -> ``bucket/p``), as Ray does for
    ``RunConfig(storage_filesystem=...)``. Raises ``ResultsError`` naming the
    address when pyarrow cannot open it.
    """
    if isinstance(storage, Location):
        return storage
    uri = str(storage)
    if filesystem is not None:
        path = uri
        if is_uri(uri):
            parts = urlsplit(uri)
            path = parts.netloc.rpartition("@")[2] + parts.path
        return Location(filesystem, path.rstrip("/") or "/", uri)
    if not is_uri(uri):
        return Location(pafs.LocalFileSystem(), absolute_address(uri), uri)
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ResultsError(f"cannot open storage {uri!r}: {exc}") from None
    return Location(fs, path.rstrip("/"), uri)


def is_local(fs: pafs.FileSystem) -> bool:
    """True when ``fs`` is the local filesystem (possibly under a ``SubTreeFileSystem``)."""
    if isinstance(fs, pafs.SubTreeFileSystem):
        return is_local(fs.base_fs)
    return isinstance(fs, pafs.LocalFileSystem)


def local_path(fs: pafs.FileSystem, path: str) -> str:
    """The operating-system path of ``path`` on a local ``fs`` (see ``is_local``)."""
    if isinstance(fs, pafs.SubTreeFileSystem):
        return local_path(fs.base_fs, posixpath.join(fs.base_path, path.lstrip("/")))
    return path


def list_files(loc: Location) -> list[pafs.FileInfo]:
    """The entries directly in folder ``loc``, by name ([] when it does not exist)."""
    try:
        infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, allow_not_found=True))
    except OSError as exc:
        raise ResultsError(f"cannot list {loc.uri!r}: {exc}") from None
    return sorted(infos, key=lambda i: i.base_name)
