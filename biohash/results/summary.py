"""One line per sweep in a storage: planned trials and results per status."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs

from biohash.errors import ResultsError
from biohash.results.reader import load_results_table
from biohash.results.schema import STATUSES
from biohash.results.store import list_sweeps, read_sweep_json, resolve, resolve_sweeps

__all__ = ["summarize_sweeps"]


def summarize_sweeps(storage: str | Path,
                     filesystem: pafs.FileSystem | None = None) -> pd.DataFrame:
    """Columns: sweep, space, planned, results, then one count per status."""
    root = resolve(storage, filesystem)
    if not root.is_dir():
        raise ResultsError(f"no such storage folder: {root.uri!r} (pass --storage DIR_OR_URI)")
    rows = []
    for name in list_sweeps(storage, filesystem):
        loc = resolve_sweeps(storage, [name], filesystem)[0]
        info = read_sweep_json(loc)
        try:
            statuses = load_results_table([loc], columns=["status"]).column("status").to_pylist()
        except ResultsError:  # launched, nothing finished yet
            statuses = []
        counts = {s: statuses.count(s) for s in STATUSES}
        rows.append({"sweep": name, "space": info.get("space", ""),
                     "planned": info.get("n_trials", ""), "results": len(statuses), **counts})
    columns = ["sweep", "space", "planned", "results", *STATUSES]
    return pd.DataFrame(rows, columns=columns)
