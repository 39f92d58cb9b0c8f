"""Trial states of a sweep read from its storage alone (no cluster needed).

A trial is *finished* / *early_stopped* / *diverged* / *stopped* / *errored*
when the Parquet sink wrote its row, or, failing that, when the trial wrote
its ``final.json`` (it finished, but the driver died before recording it);
*started* when Tune created its folder but neither exists (running, or cut off
by an interrupt: never counted as finished); *pending* otherwise. Folders and
rows are keyed by the stable trial id.
"""
from __future__ import annotations

import json
from typing import Any

import pyarrow.fs as pafs
import pyarrow.parquet as pq

__all__ = ["trial_states"]


def _dirs_by_id(loc: Any) -> dict[str, str]:
    """``{trial_id: trial folder name}`` of the trial folders in the sweep folder."""
    from biohash.trainables import trial_id_of_dirname

    infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, allow_not_found=True))
    dirs = {}
    for info in infos:
        tid = trial_id_of_dirname(info.base_name) if info.type == pafs.FileType.Directory else None
        if tid:
            dirs[tid] = info.base_name
    return dirs


def _final_status(loc: Any, dirname: str) -> str | None:
    """The status in a trial's ``final.json``, None when it has none (yet)."""
    from biohash.trainables import FINAL_FILE

    try:
        with loc.fs.open_input_stream(loc.join(dirname, FINAL_FILE).path) as fh:
            return str(json.loads(fh.readall().decode()).get("status") or "finished")
    except (FileNotFoundError, OSError, ValueError):
        return None


def trial_states(loc: Any) -> dict[str, str]:
    """``{trial_id: state}`` for every trial that has left a trace in storage."""
    dirs = _dirs_by_id(loc)
    states = {tid: "started" for tid in dirs}
    trials = loc.join("results", "trials")
    for info in loc.fs.get_file_info(pafs.FileSelector(trials.path, allow_not_found=True)):
        # "_snapshot.parquet" is the sink's compacted copy; "." files are temp writes.
        if not info.base_name.endswith(".parquet") or info.base_name.startswith((".", "_")):
            continue
        table = pq.read_table(info.path, columns=["trial_id", "status"], filesystem=loc.fs)
        for tid, status in zip(table["trial_id"].to_pylist(), table["status"].to_pylist()):
            states[tid] = "errored" if status == "error" else status
    for tid, state in states.items():
        if state == "started" and (status := _final_status(loc, dirs[tid])) is not None:
            states[tid] = status
    return states
