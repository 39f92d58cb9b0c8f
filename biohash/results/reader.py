"""Read the results of any number of sweeps as one table.

Each sweep's per-trial Parquet files are read as one ``pyarrow.dataset``
(local or ``s3://``). Opening a small Parquet file costs about a millisecond
whatever its size, so a 10,000-trial sweep would take ~10 s per read; each
table folder therefore keeps a *snapshot* (``storage.snapshot``): the rows
of all files plus a manifest of a change token per file (its ETag on S3, its
inode/size/mtime/ctime on a local disk: ``storage.file_tokens``, which reads no
file; size + mtime alone would miss a same-size rewrite within S3's 1-second
mtimes). A read lists the folder,
reuses the snapshot rows of unchanged files, reads only new or rewritten
files and refreshes the snapshot. The per-trial files stay the
source of truth; the snapshot is a cache that any reader may rebuild (delete
it, or pass ``cache=False``).
"""
from __future__ import annotations

import json
import logging
import posixpath
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from biohash.errors import ResultsError
from biohash.results.schema import HISTORY_SCHEMA, SCHEMA_VERSION, TRIALS_SCHEMA, VERSION_KEY
from biohash.storage import (HISTORY, TRIALS, Location, is_row_file, list_files, results_dir,
                             snapshot, sweep_dirs, write_table)
from biohash.storage.hashing import file_tokens
from biohash.storage.layout import SNAPSHOT_FILE as SNAPSHOT  # noqa: F401 - kept for callers

__all__ = ["load_results", "load_history", "load_results_table", "load_history_table",
           "read_rows", "refresh_snapshot", "SCHEMAS", "SNAPSHOT"]

log = logging.getLogger(__name__)
SCHEMAS = {TRIALS: TRIALS_SCHEMA, HISTORY: HISTORY_SCHEMA}
_MANIFEST_KEY = b"biohash.snapshot_manifest"

Entries = Sequence["str | Path | Location"] | str | Path | Location


def _newer_error(what: str, path: str, version: object) -> ResultsError:
    return ResultsError(f"{what} file {path!r} has schema version {version}, newer than this "
                        f"biohash reads ({SCHEMA_VERSION}); upgrade biohash")


def _read_files(fs: pafs.FileSystem, paths: list[str], table: str) -> pa.Table:
    """Rows of ``paths`` cast to the current schema; refuses newer versions."""
    schema = SCHEMAS[table]
    try:
        rows = ds.dataset(paths, schema=schema, format="parquet", filesystem=fs).to_table()
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        # An incompatible newer schema fails the cast: name that file.
        for path in paths:
            meta = pq.read_schema(path, filesystem=fs).metadata or {}
            if int(meta.get(VERSION_KEY, b"0")) > SCHEMA_VERSION:
                raise _newer_error(table, path, int(meta[VERSION_KEY])) from None
        raise
    versions = rows.column("schema_version")
    newest = pc.max(versions).as_py()
    if newest is not None and newest > SCHEMA_VERSION:
        # Files are named <trial_id>.parquet, so the row names its file.
        bad = rows.filter(pc.greater(versions, SCHEMA_VERSION)).column("trial_id")[0].as_py()
        path = next((p for p in paths if posixpath.basename(p) == f"{bad}.parquet"), bad)
        raise _newer_error(table, path, newest)
    return rows


def _read_snapshot(sweep: Location, table: str) -> tuple[pa.Table | None, dict]:
    loc = snapshot(sweep, table)
    try:
        snap = pq.read_table(loc.path, filesystem=loc.fs)
    except (FileNotFoundError, OSError, pa.ArrowInvalid):
        return None, {}
    meta = snap.schema.metadata or {}
    # Another version's snapshot is ignored (rebuilt), never trusted.
    if meta.get(VERSION_KEY) != str(SCHEMA_VERSION).encode() or _MANIFEST_KEY not in meta:
        return None, {}
    try:
        snap = snap.cast(SCHEMAS[table])
        return snap, json.loads(meta[_MANIFEST_KEY])
    except (pa.ArrowInvalid, ValueError):
        return None, {}


def _write_snapshot(sweep: Location, rows: pa.Table, manifest: dict, table: str) -> None:
    meta = dict(SCHEMAS[table].metadata)
    meta[_MANIFEST_KEY] = json.dumps(manifest, separators=(",", ":")).encode()
    loc = snapshot(sweep, table)
    try:
        write_table(loc, rows.replace_schema_metadata(meta))
    except OSError as exc:  # read-only storage: reading still works, just slower
        log.debug("cannot write results snapshot %s: %s", loc.uri, exc)


def _read_folder(sweep: Location, table: str, cache: bool) -> pa.Table | None:
    """All rows of one sweep's ``table`` folder (None when it has no files)."""
    folder = results_dir(sweep, table)
    files = {i.base_name: i for i in list_files(folder)
             if i.type == pafs.FileType.File and is_row_file(i.base_name)}
    if not files:
        return None
    snap, manifest = _read_snapshot(sweep, table) if cache else (None, {})
    stamp = file_tokens(folder, files) if cache else {}
    unchanged = {n for n in files if n in stamp and manifest.get(n) == stamp[n]}
    fresh_paths = [files[n].path for n in sorted(files) if n not in unchanged]
    parts = []
    if snap is not None and unchanged:
        ids = pa.array(sorted(n[:-len(".parquet")] for n in unchanged), pa.string())
        parts.append(snap.filter(pc.is_in(snap.column("trial_id"), value_set=ids)))
    if fresh_paths:
        parts.append(_read_files(sweep.fs, fresh_paths, table))
    rows = pa.concat_tables(parts)
    if cache and (fresh_paths or len(manifest) != len(unchanged)):
        ids = set(pc.unique(rows.column("trial_id")).to_pylist())
        # Only files holding their own trial's rows are cached (a stray file
        # with other content is simply re-read every time).
        new_manifest = {n: stamp[n] for n in files if n[:-len(".parquet")] in ids}
        keep = pa.array(sorted(n[:-len(".parquet")] for n in new_manifest), pa.string())
        _write_snapshot(sweep, rows.filter(pc.is_in(rows.column("trial_id"), value_set=keep)),
                        new_manifest, table)
    return rows


def read_rows(sweep: Location, table: str = TRIALS, *, cache: bool = True) -> pa.Table | None:
    """Every row of one sweep's ``table`` (None when it has no row files yet)."""
    return _read_folder(sweep, table, cache)


def refresh_snapshot(sweep: Location, table: str = TRIALS) -> None:
    """Bring a sweep's snapshot up to date (the Parquet sink calls it at the end)."""
    _read_folder(sweep, table, cache=True)


def _load(entries: Entries, table: str, filesystem: pafs.FileSystem | None,
          columns: Sequence[str] | None, cache: bool) -> pa.Table:
    if isinstance(entries, (str, Path, Location)):
        entries = [entries]
    schema = SCHEMAS[table]
    wanted = list(schema.names) if columns is None else list(columns)
    unknown = [c for c in wanted if c not in schema.names]
    if unknown:
        raise ResultsError(f"unknown {table} column(s) {', '.join(unknown)}; "
                           f"allowed: {', '.join(schema.names)}")
    sweeps = [s for entry in entries for s in sweep_dirs(entry, filesystem)]
    if not sweeps:
        raise ResultsError(f"no sweeps found in {', '.join(map(str, entries))}")
    parts = [t for t in (_read_folder(s, table, cache) for s in sweeps) if t is not None]
    if not parts:
        raise ResultsError(f"no results yet in {', '.join(s.uri for s in sweeps)} (no {table} "
                           "files; each trial writes one when it finishes)")
    return pa.concat_tables(parts).select(wanted)


def load_results_table(entries: Entries, *, filesystem: pafs.FileSystem | None = None,
                       columns: Sequence[str] | None = None, cache: bool = True) -> pa.Table:
    """``load_results`` as an Arrow table (no pandas conversion)."""
    return _load(entries, TRIALS, filesystem, columns, cache)


def load_history_table(entries: Entries, *, filesystem: pafs.FileSystem | None = None,
                       columns: Sequence[str] | None = None, cache: bool = True) -> pa.Table:
    """``load_history`` as an Arrow table."""
    return _load(entries, HISTORY, filesystem, columns, cache)


def load_results(storages_or_sweep_dirs: Entries, *, filesystem: pafs.FileSystem | None = None,
                 columns: Sequence[str] | None = None,
                 cache: bool = True) -> "pd.DataFrame":  # noqa: F821
    """All trial rows of any number of sweeps as one DataFrame.

    Each entry is a sweep folder, or a storage root meaning all its sweeps;
    local paths and URIs (``s3://``) mix freely; ``filesystem`` (e.g. a
    pyarrow ``S3FileSystem``) applies to every entry. Raises
    ``ResultsError`` for a missing folder, no result files yet, an unknown
    column, or a file whose schema version is newer than this code (naming
    the file and both versions).
    """
    return load_results_table(storages_or_sweep_dirs, filesystem=filesystem,
                              columns=columns, cache=cache).to_pandas()


def load_history(storages_or_sweep_dirs: Entries, *, filesystem: pafs.FileSystem | None = None,
                 columns: Sequence[str] | None = None,
                 cache: bool = True) -> "pd.DataFrame":  # noqa: F821
    """Per-epoch rows (long format: trial_id, epoch, key, value, ...) of the sweeps."""
    return load_history_table(storages_or_sweep_dirs, filesystem=filesystem,
                              columns=columns, cache=cache).to_pandas()
