"""Where results live and how they are written and read (local or ``s3://``).

Layout (the orchestrator's contract)::

    <storage>/<sweep>/sweep.json
    <storage>/<sweep>/results/trials/<trial_id>.parquet    one row
    <storage>/<sweep>/results/history/<trial_id>.parquet   per-epoch rows

Every file is keyed by ``TrialConfig.trial_id``, so a retried trial or a
resumed sweep overwrites its file instead of adding a duplicate. Writes are
atomic: a temp name in the same folder, then a rename (local); on object
stores a single PUT is atomic already.

Reading lives in ``biohash.results.reader``.
"""
from __future__ import annotations

import json
import posixpath
import uuid
from urllib.parse import urlsplit
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from biohash.errors import ResultsError
from biohash.results.schema import HISTORY_SCHEMA, TRIALS_SCHEMA

__all__ = ["Location", "resolve", "absolute_address", "sweep_location", "write_table", "write_bytes",
           "read_sweep_json", "list_sweeps", "resolve_sweeps", "sweep_dirs", "list_files", "TRIALS", "HISTORY",
           "SCHEMAS"]

TRIALS, HISTORY = "trials", "history"
SCHEMAS = {TRIALS: TRIALS_SCHEMA, HISTORY: HISTORY_SCHEMA}


@dataclass(frozen=True)
class Location:
    """A folder on a pyarrow filesystem; ``uri`` is its address as given (for messages
    and for handing to another process).

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

    def exists(self) -> bool:
        return self.fs.get_file_info(self.path).type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self.fs.get_file_info(self.path).type == pafs.FileType.Directory


def resolve(storage: str | Path, filesystem: pafs.FileSystem | None = None) -> Location:
    """A storage root or sweep folder as a ``Location``.

    With ``filesystem`` the scheme, credentials and options are stripped
    (``s3://key:secret@bucket/p?region=x`` -> ``bucket/p``), as Ray does for
    ``RunConfig(storage_filesystem=...)``.
    """
    uri = str(storage)
    if filesystem is not None:
        path = uri
        if "://" in uri:
            parts = urlsplit(uri)
            path = parts.netloc.rpartition("@")[2] + parts.path
        return Location(filesystem, path.rstrip("/") or "/", uri)
    if "://" not in uri:
        return Location(pafs.LocalFileSystem(), absolute_address(uri), uri)
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ResultsError(f"cannot open storage {uri!r}: {exc}") from None
    return Location(fs, path.rstrip("/"), uri)


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
    if "://" in text:
        return text
    return str(Path(text).expanduser().resolve())


def sweep_location(storage: str | Path, sweep: str,
                   filesystem: pafs.FileSystem | None = None) -> Location:
    return resolve(storage, filesystem).join(sweep)


def _is_local(fs: pafs.FileSystem) -> bool:
    if isinstance(fs, pafs.SubTreeFileSystem):
        return _is_local(fs.base_fs)
    return isinstance(fs, pafs.LocalFileSystem)


def _atomic_write(fs: pafs.FileSystem, path: str, write: Callable[[str], None]) -> None:
    """Run ``write(target)`` so that readers never see a partial ``path``.

    Locally: a dot-prefixed temp name in the same folder (dataset discovery
    ignores it if we crash), then a rename. On object stores a single PUT is
    atomic already, so ``write`` targets ``path`` itself.
    """
    parent = posixpath.dirname(path)
    fs.create_dir(parent, recursive=True)
    if not _is_local(fs):
        write(path)
        return
    tmp = posixpath.join(parent, f".{posixpath.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        fs.move(tmp, path)
    except BaseException:
        try:
            fs.delete_file(tmp)
        except (FileNotFoundError, OSError):
            pass
        raise


def write_table(fs: pafs.FileSystem, path: str, table: pa.Table) -> None:
    """Write ``table`` as Parquet to ``path`` atomically (see ``_atomic_write``)."""
    _atomic_write(fs, path, lambda target: pq.write_table(table, target, filesystem=fs))


def write_bytes(loc: Location, data: bytes) -> None:
    """Write a small file (``sweep.json``, ``final.json``) atomically."""
    def write(target: str) -> None:
        with loc.fs.open_output_stream(target) as f:
            f.write(data)

    _atomic_write(loc.fs, loc.path, write)


def read_sweep_json(sweep: Location) -> dict:
    """The orchestrator's ``sweep.json`` ({} when absent or unreadable)."""
    try:
        with sweep.fs.open_input_stream(posixpath.join(sweep.path, "sweep.json")) as f:
            return json.loads(f.readall().decode())
    except (FileNotFoundError, OSError, ValueError):
        return {}


def list_files(loc: Location) -> list[pafs.FileInfo]:
    try:
        infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, allow_not_found=True))
    except OSError as exc:
        raise ResultsError(f"cannot list {loc.uri!r}: {exc}") from None
    return sorted(infos, key=lambda i: i.base_name)


def _is_sweep(loc: Location) -> bool:
    return loc.join("results").is_dir() or loc.join("sweep.json").exists()


def list_sweeps(storage: str | Path, filesystem: pafs.FileSystem | None = None) -> list[str]:
    """Names of the sweeps (folders with ``sweep.json`` or ``results/``) in storage."""
    root = resolve(storage, filesystem)
    return [i.base_name for i in list_files(root)
            if i.type == pafs.FileType.Directory and not i.base_name.startswith((".", "_"))
            and _is_sweep(root.join(i.base_name))]


def resolve_sweeps(storage: str | Path, names: Sequence[str],
                   filesystem: pafs.FileSystem | None = None) -> list[Location]:
    """Sweep folders for ``names`` in ``storage``; unknown names list the sweeps found."""
    root = resolve(storage, filesystem)
    out = []
    for name in names:
        loc = root.join(name)
        if not name or "/" in name or not _is_sweep(loc):
            found = list_sweeps(storage, filesystem) if root.is_dir() else []
            raise ResultsError(f"unknown sweep {name!r} in storage {root.uri!r}; sweeps found: "
                               f"{', '.join(found) or 'none'}")
        out.append(loc)
    return out


def sweep_dirs(entry: str | Path | Location,
                filesystem: pafs.FileSystem | None) -> list[Location]:
    """An entry is a sweep folder, or a storage root meaning all its sweeps."""
    loc = entry if isinstance(entry, Location) else resolve(entry, filesystem)
    if _is_sweep(loc):
        return [loc]
    if not loc.is_dir():
        raise ResultsError(f"no such sweep or storage folder: {loc.uri!r}")
    return [loc.join(i.base_name) for i in list_files(loc)
            if i.type == pafs.FileType.Directory and _is_sweep(loc.join(i.base_name))]
