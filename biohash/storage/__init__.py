"""Storage: the one owner of "where things live" (local folders and URIs).

- ``location``: ``Location`` / ``resolve`` / ``absolute_address``: an address
  (folder, ``file://``, ``s3://``, ``gs://``) as a folder on a pyarrow filesystem.
- ``atomic``: durable atomic writers (``write_bytes``, ``write_table``),
  ``create_exclusive`` and ``read_json`` (a damaged file reads as missing).
- ``layout``: the sweep layout as named places (``sweep_json``,
  ``final_report``, ``results_dir``, ...); file names are defined only there.
- ``hashing``: the one sha256 helper and change tokens for cached listings.
- ``summary``: one state vocabulary for what is in storage (imported on use:
  it reads Parquet through ``biohash.results.reader``).

Every other module asks this package for paths; none builds a storage path
from strings. Imports pyarrow, never torch, Ray or MLflow.
"""
from __future__ import annotations

from biohash.storage.atomic import (atomic_path, create_exclusive, probe_writable, read_bytes,
                                    read_json, write_bytes, write_table)
from biohash.storage.layout import (BUCKET_DATA, BUCKET_SWEEPS, FINAL_FILE, HISTORY, SNAPSHOT_FILE,
                                    SWEEP_FILE, TABLES, TRIALS, bucket_data_root, bucket_storage,
                                    final_report, is_row_file, is_sweep, list_sweeps, plots_dir,
                                    result_file, resolve_sweeps, results_dir, run_dir_copy,
                                    snapshot, sweep_dir, sweep_dirs, sweep_json, trial_folder,
                                    trial_folder_name, trial_folders, trial_id_of_folder)
from biohash.storage.hashing import copy_hashed, file_tokens, sha256_file
from biohash.storage.location import (Location, absolute_address, is_local, is_uri, list_files,
                                      local_path, resolve)

__all__ = ["Location", "resolve", "absolute_address", "list_files", "is_uri", "is_local", "local_path",
           "atomic_path", "write_bytes", "write_table", "create_exclusive", "read_json", "read_bytes",
           "probe_writable",
           "SWEEP_FILE", "FINAL_FILE", "SNAPSHOT_FILE", "TRIALS", "HISTORY", "TABLES",
           "sweep_dir", "sweep_json", "trial_folder", "final_report", "run_dir_copy", "results_dir",
           "result_file", "is_row_file", "snapshot", "trial_folder_name", "trial_id_of_folder",
           "trial_folders", "is_sweep", "list_sweeps", "resolve_sweeps", "sweep_dirs",
           "sha256_file", "copy_hashed", "file_tokens", "plots_dir", "bucket_storage",
           "bucket_data_root", "BUCKET_SWEEPS", "BUCKET_DATA"]
