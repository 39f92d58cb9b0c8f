"""The head's MLflow run store (a SQLite file): back it up to the bucket, restore it on a new head.

On the cluster the store lives on a host folder mounted into the head's
container (``cluster.yaml``: ``head_run_options``), so a container restart
keeps it; only ``ray down`` (the host itself goes) needs the bucket copy.

- :func:`backup_store` copies the database with SQLite's online backup API
  (``sqlite3.Connection.backup``): a consistent snapshot even while the MLflow
  server writes, which a plain file copy is not (it can catch a page half
  written, or miss what is still in the WAL). The snapshot is checked
  (``PRAGMA integrity_check``) before it replaces the bucket copy, in one PUT
  (object stores) or an atomic rename (folders).
- :func:`restore_store` runs on every head start: a store already on the
  host is kept; otherwise the bucket copy, if there is one, is downloaded,
  checked and renamed into place; no copy means a fresh store. Every failure
  (unreadable bucket, damaged copy) raises, so the head's start command fails
  and ``ray up`` says so, instead of starting an empty store over a backup.
"""
from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path

from biohash.errors import ConfigError, ResultsError

__all__ = ["BACKUP_NAME", "default_backup_uri", "backup_store", "restore_store"]

#: The bucket copy: ``$BIOHASH_BUCKET/mlflow/mlflow.db``.
BACKUP_NAME = "mlflow/mlflow.db"
_CHUNK = 8 << 20


def default_backup_uri() -> str:
    """``$BIOHASH_BUCKET/mlflow/mlflow.db``; ``ConfigError`` when ``BIOHASH_BUCKET`` is unset."""
    bucket = os.environ.get("BIOHASH_BUCKET", "").rstrip("/")
    if not bucket:
        raise ConfigError("BIOHASH_BUCKET is not set; pass --backup s3://BUCKET/mlflow/mlflow.db "
                          "(on the cluster it comes from cluster.yaml's docker.run_options)")
    return f"{bucket}/{BACKUP_NAME}"


def _check_integrity(path: Path, what: str) -> None:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            verdict = conn.execute("PRAGMA integrity_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise ResultsError(f"{what} is not a readable SQLite database: {exc}") from None
    if verdict != "ok":
        raise ResultsError(f"{what} failed SQLite's integrity check: {verdict}")


def _snapshot(db: Path, out: Path) -> None:
    """``out`` := a consistent copy of ``db``, taken with SQLite's online backup."""
    src = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(out)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


def _copy_stream(read, write) -> None:
    while chunk := read(_CHUNK):
        write(chunk)


def backup_store(db: str | Path, backup_uri: str) -> int:
    """Snapshot ``db`` and replace the copy at ``backup_uri`` with it; returns its size in bytes."""
    from biohash.storage import resolve
    from biohash.storage.atomic import fsync_path
    from biohash.storage.location import is_local, local_path

    db = Path(db).expanduser()
    if not db.is_file():
        raise ConfigError(f"no MLflow store at {str(db)!r}; nothing to back up")
    dest = resolve(backup_uri)
    with tempfile.TemporaryDirectory(prefix="biohash-mlflow-backup-") as tmp:
        snap = Path(tmp) / "mlflow.db"
        _snapshot(db, snap)
        _check_integrity(snap, f"the snapshot of {db}")
        size = snap.stat().st_size
        if is_local(dest.fs):
            target = Path(local_path(dest.fs, dest.path))
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_name(f".{target.name}.{os.getpid()}.part")
            with snap.open("rb") as src, part.open("wb") as out:
                _copy_stream(src.read, out.write)
            fsync_path(str(part))
            os.replace(part, target)
            fsync_path(str(target.parent))
        else:
            # One object PUT: readers see the old copy or the new one, never a mix.
            with snap.open("rb") as src, dest.fs.open_output_stream(dest.path) as out:
                _copy_stream(src.read, out.write)
    return size


def restore_store(db: str | Path, backup_uri: str) -> str:
    """Make sure ``db`` exists before the MLflow server starts; returns what was done:
    ``"kept"`` (already there), ``"restored"`` (from ``backup_uri``) or ``"fresh"`` (no backup)."""
    import pyarrow.fs as pafs

    from biohash.storage import resolve

    db = Path(db).expanduser()
    if db.exists():
        return "kept"
    src = resolve(backup_uri)
    try:
        kind = src.fs.get_file_info(src.path).type
    except OSError as exc:
        raise ResultsError(f"cannot tell whether the MLflow backup {backup_uri} exists: {exc}; "
                           f"not starting an empty store over it") from None
    if kind == pafs.FileType.NotFound:
        return "fresh"
    db.parent.mkdir(parents=True, exist_ok=True)
    part = db.with_name(f".{db.name}.{os.getpid()}.part")
    try:
        with src.fs.open_input_stream(src.path) as inp, part.open("wb") as out:
            _copy_stream(inp.read, out.write)
        _check_integrity(part, f"the MLflow backup {backup_uri}")
        os.replace(part, db)
    except OSError as exc:
        raise ResultsError(f"restoring the MLflow store from {backup_uri} failed: {exc}") from None
    finally:
        part.unlink(missing_ok=True)
    return "restored"
