"""The layout of sweep storage: every place a sweep keeps something, by name.

::

    <storage>/<sweep>/sweep.json                         the launch record (``sweep_json``)
    <storage>/<sweep>/<trial folder>/                    Tune's trial folder (``trial_folder``)
    <storage>/<sweep>/<trial folder>/final.json          a finished trial's report (``final_report``)
    <storage>/<sweep>/<trial folder>/<run dir>/...       its uploaded run directory (``run_dir_copy``)
    <storage>/<sweep>/results/trials/<trial_id>.parquet  one row per trial (``results_dir``)
    <storage>/<sweep>/results/history/<trial_id>.parquet per-epoch rows
    <storage>/<sweep>/results/<table>/_snapshot.parquet  the reader's cache (``snapshot``)

Trial folders are named ``<db>-<arch>-<trial_id>`` (``trial_folder_name``), so a
retried trial or a resumed sweep finds its own folder and Parquet files again
instead of adding duplicates. Resume correctness depends on this layout:
change it only here.
"""
from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Sequence

import pyarrow.fs as pafs

from biohash.errors import ResultsError
from biohash.storage.location import Location, list_files, resolve

__all__ = ["SWEEP_FILE", "FINAL_FILE", "RESULTS_DIR", "TRIALS", "HISTORY", "TABLES", "SNAPSHOT_FILE",
           "sweep_dir", "sweep_json", "trial_folder", "final_report", "run_dir_copy", "results_dir",
           "snapshot", "result_file", "is_row_file", "trial_folder_name", "trial_id_of_folder",
           "trial_folders", "is_sweep", "list_sweeps", "resolve_sweeps", "sweep_dirs"]

SWEEP_FILE = "sweep.json"
FINAL_FILE = "final.json"
RESULTS_DIR = "results"
TRIALS, HISTORY = "trials", "history"
TABLES = (TRIALS, HISTORY)
SNAPSHOT_FILE = "_snapshot.parquet"
PLOTS_DIR = "plots"
#: Folders of a cluster's bucket (``cluster.yaml`` derives both from ``BIOHASH_BUCKET``).
BUCKET_SWEEPS, BUCKET_DATA = "sweeps", "data"
_ROW_SUFFIX = ".parquet"
_FOLDER = re.compile(r"^.+-([0-9a-f]{12})$")

StorageLike = str | Path | Location


def sweep_dir(storage: StorageLike, sweep: str, filesystem: pafs.FileSystem | None = None) -> Location:
    """``<storage>/<sweep>``; ``sweep`` must pass ``biohash.names.check_name``
    (it is one path component: no ``..``, ``/`` or control characters)."""
    from biohash.names import check_name

    return resolve(storage, filesystem).join(check_name(sweep, "sweep name"))


def sweep_json(sweep_loc: Location) -> Location:
    """``<sweep>/sweep.json``: what was launched (space, options, code version)."""
    return sweep_loc.join(SWEEP_FILE)


def trial_folder(sweep_loc: Location, dirname: str) -> Location:
    """``<sweep>/<dirname>``: Tune's folder of one trial (checkpoints, our files)."""
    return sweep_loc.join(dirname)


def final_report(sweep_loc: Location, dirname: str) -> Location:
    """``<sweep>/<dirname>/final.json``: written by the trial before it reports its end."""
    return trial_folder(sweep_loc, dirname).join(FINAL_FILE)


def run_dir_copy(sweep_loc: Location, dirname: str, *relparts: str) -> Location:
    """Where a finished trial's run directory is uploaded: ``relparts`` is the run
    directory relative to the local trial folder (``models/...``)."""
    return trial_folder(sweep_loc, dirname).join(*relparts)


def results_dir(sweep_loc: Location, table: str) -> Location:
    """``<sweep>/results/<table>`` for ``table`` in ``TABLES``."""
    if table not in TABLES:
        raise ResultsError(f"unknown results table {table!r}; allowed: {', '.join(TABLES)}")
    return sweep_loc.join(RESULTS_DIR, table)


def result_file(sweep_loc: Location, table: str, trial_id: str) -> Location:
    """``<sweep>/results/<table>/<trial_id>.parquet``."""
    return results_dir(sweep_loc, table).join(f"{trial_id}{_ROW_SUFFIX}")


def is_row_file(name: str) -> bool:
    """True for a per-trial Parquet file name (not the snapshot, not a temp write)."""
    return name.endswith(_ROW_SUFFIX) and not name.startswith((".", "_"))


def snapshot(sweep_loc: Location, table: str) -> Location:
    """``<sweep>/results/<table>/_snapshot.parquet``: the results reader's cache."""
    return results_dir(sweep_loc, table).join(SNAPSHOT_FILE)


def plots_dir(sweep_loc: Location) -> Location:
    """``<sweep>/plots``: the PNGs ``biohash demo`` writes beside a sweep's results."""
    return sweep_loc.join(PLOTS_DIR)


def bucket_storage(bucket: str) -> str:
    """A cluster bucket's sweep storage, ``<bucket>/sweeps`` (``cluster.yaml``'s
    ``BIOHASH_STORAGE``)."""
    return posixpath.join(bucket, BUCKET_SWEEPS)


def bucket_data_root(bucket: str) -> str:
    """A cluster bucket's processed datasets, ``<bucket>/data`` (``BIOHASH_DATA_ROOT``)."""
    return posixpath.join(bucket, BUCKET_DATA)


def trial_folder_name(db: str, arch: str, trial_id: str) -> str:
    """A trial folder's name: ``<db>-<arch>-<trial_id>`` (short, stable)."""
    return f"{db}-{arch}-{trial_id}"


def trial_id_of_folder(name: str) -> str | None:
    """The trial id in a ``trial_folder_name``, or None for other folders."""
    match = _FOLDER.match(name)
    return match.group(1) if match else None


def trial_folders(sweep_loc: Location) -> dict[str, str]:
    """``{trial_id: folder name}`` of the trial folders in a sweep folder."""
    out = {}
    for info in list_files(sweep_loc):
        tid = trial_id_of_folder(info.base_name) if info.type == pafs.FileType.Directory else None
        if tid:
            out[tid] = info.base_name
    return out


def is_sweep(loc: Location) -> bool:
    """A sweep folder has ``sweep.json`` or ``results/``."""
    return loc.join(RESULTS_DIR).is_dir() or sweep_json(loc).exists()


def list_sweeps(storage: StorageLike, filesystem: pafs.FileSystem | None = None) -> list[str]:
    """Names of the sweeps (folders with ``sweep.json`` or ``results/``) in storage."""
    root = resolve(storage, filesystem)
    return [i.base_name for i in list_files(root)
            if i.type == pafs.FileType.Directory and not i.base_name.startswith((".", "_"))
            and is_sweep(root.join(i.base_name))]


def resolve_sweeps(storage: StorageLike, names: Sequence[str],
                   filesystem: pafs.FileSystem | None = None) -> list[Location]:
    """Sweep folders for ``names`` in ``storage``; unknown names list the sweeps found."""
    root = resolve(storage, filesystem)
    out = []
    for name in names:
        loc = root.join(name)
        if not name or "/" in name or not is_sweep(loc):
            found = list_sweeps(root) if root.is_dir() else []
            raise ResultsError(f"unknown sweep {name!r} in storage {root.uri!r}; sweeps found: "
                               f"{', '.join(found) or 'none'}")
        out.append(loc)
    return out


def sweep_dirs(entry: StorageLike, filesystem: pafs.FileSystem | None = None) -> list[Location]:
    """An entry is a sweep folder, or a storage root meaning all its sweeps."""
    loc = resolve(entry, filesystem)
    if is_sweep(loc):
        return [loc]
    if not loc.is_dir():
        raise ResultsError(f"no such sweep or storage folder: {loc.uri!r}")
    return [loc.join(i.base_name) for i in list_files(loc)
            if i.type == pafs.FileType.Directory and is_sweep(loc.join(i.base_name))]
