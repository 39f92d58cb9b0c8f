"""Trial states of a sweep read from its storage alone (no cluster needed).

A trial is *finished* / *early_stopped* / *diverged* / *errored* when the
Parquet sink wrote its row, *started* when Tune created its folder but no
row exists yet (running, or interrupted with the driver), and *pending*
otherwise. Folders and rows are keyed by the stable trial id.
"""
from __future__ import annotations

from typing import Any

import pyarrow.fs as pafs
import pyarrow.parquet as pq

__all__ = ["trial_states"]


def _ids_from_dirs(loc: Any) -> set[str]:
    from biohash.trainables import trial_id_of_dirname

    infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, allow_not_found=True))
    ids = (trial_id_of_dirname(i.base_name) for i in infos if i.type == pafs.FileType.Directory)
    return {tid for tid in ids if tid}


def trial_states(loc: Any) -> dict[str, str]:
    """``{trial_id: state}`` for every trial that has left a trace in storage."""
    states = {tid: "started" for tid in _ids_from_dirs(loc)}
    trials = loc.join("results", "trials")
    for info in loc.fs.get_file_info(pafs.FileSelector(trials.path, allow_not_found=True)):
        # "_snapshot.parquet" is the sink's compacted copy; "." files are temp writes.
        if not info.base_name.endswith(".parquet") or info.base_name.startswith((".", "_")):
            continue
        table = pq.read_table(info.path, columns=["trial_id", "status"], filesystem=loc.fs)
        for tid, status in zip(table["trial_id"].to_pylist(), table["status"].to_pylist()):
            states[tid] = "errored" if status == "error" else status
    return states
