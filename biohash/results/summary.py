"""``results list``: one line per sweep in a storage, in the storage summary's words.

The states and their definitions are ``biohash.storage.summary``'s (the same
ones ``sweep status`` and ``sweep list`` print).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs

from biohash.errors import ResultsError
from biohash.storage import resolve
from biohash.storage.summary import STATES, summarize_storage

__all__ = ["summarize_sweeps"]


def summarize_sweeps(storage: str | Path,
                     filesystem: pafs.FileSystem | None = None) -> pd.DataFrame:
    """Columns: sweep, space, state, planned, results (Parquet rows), then one
    trial count per state (``done running pending failed stopped``)."""
    root = resolve(storage, filesystem)
    if not root.is_dir():
        raise ResultsError(f"no such storage folder: {root.uri!r} (pass --storage DIR_OR_URI)")
    rows = [{"sweep": s.name, "space": s.space, "state": s.state,
             "planned": "" if s.planned is None else s.planned, "results": s.n_rows, **s.counts}
            for s in summarize_storage(root)]
    return pd.DataFrame(rows, columns=["sweep", "space", "state", "planned", "results", *STATES])
