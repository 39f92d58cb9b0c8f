"""What is in storage, as the user sees it: one state per trial and per sweep.

One vocabulary everywhere (``sweep list``, ``sweep status``, ``results list``,
the end-of-run summary)::

    done     a final record exists: finished, early_stopped (patience) or diverged
    running  Tune created the trial's folder but there is no final record yet:
             it is running, or it was cut off by an interrupt or a crash
             (``sweep resume`` continues it); never counted as done
    pending  no trace in storage yet
    failed   its last attempt errored (Parquet status ``error``)
    stopped  cut short by the scheduler (ASHA) without a final report

The final record is the trial's Parquet row or, failing that, its
``final.json`` (it finished but the driver died before recording it). The
detail (``finished``, ``early_stopped``, ``diverged``, ``error``, ``stopped``)
is kept beside the state.

A sweep is ``pending`` while no trial has a trace, ``running`` while some
trial is, ``done`` when every planned trial is done or stopped, ``failed``
when nothing runs or waits and some trial failed, and ``stopped`` when
nothing runs but trials still wait (an interrupted sweep: resume it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from biohash.storage.atomic import read_json
from biohash.storage.layout import (final_report, list_sweeps, resolve_sweeps, sweep_json,
                                    trial_folders)
from biohash.storage.location import Location, resolve

__all__ = ["STATES", "DONE", "RUNNING", "PENDING", "FAILED", "STOPPED", "DETAIL_STATE",
           "state_of", "TrialState", "SweepState", "trial_states", "summarize_sweep",
           "summarize_storage"]

DONE, RUNNING, PENDING, FAILED, STOPPED = "done", "running", "pending", "failed", "stopped"
STATES = (DONE, RUNNING, PENDING, FAILED, STOPPED)
#: A final record's status (Parquet ``status`` / ``final.json``) -> state.
DETAIL_STATE = {"finished": DONE, "early_stopped": DONE, "diverged": DONE,
                "stopped": STOPPED, "error": FAILED, "errored": FAILED}


def state_of(detail: str | None) -> str:
    """The state of a final record's status; no record (None) is ``running``."""
    if detail is None:
        return RUNNING
    return DETAIL_STATE.get(detail, DONE)


@dataclass(frozen=True)
class TrialState:
    """One trial as storage shows it."""

    trial_id: str
    state: str
    detail: str              # the final record's status, or the state itself
    folder: str | None       # Tune's trial folder name (None: not created)
    has_row: bool            # its Parquet row exists
    has_final: bool          # its final.json exists (looked up only when it has no row)


@dataclass(frozen=True)
class SweepState:
    """One sweep as storage shows it (``sweep.json`` + trial folders + Parquet rows)."""

    name: str
    uri: str
    space: str
    planned: int | None
    created: str
    trials: dict[str, TrialState] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        """Trials per state (every state, zeros included); unseen planned trials are pending."""
        counts = dict.fromkeys(STATES, 0)
        for t in self.trials.values():
            counts[t.state] += 1
        counts[PENDING] += max(0, (self.planned or 0) - len(self.trials))
        return counts

    @property
    def n_rows(self) -> int:
        return sum(t.has_row for t in self.trials.values())

    @property
    def state(self) -> str:
        c = self.counts
        if c[RUNNING]:
            return RUNNING
        if not any(c[s] for s in (DONE, FAILED, STOPPED)):
            return PENDING
        if c[PENDING]:
            return STOPPED
        return FAILED if c[FAILED] else DONE

    @property
    def missing_rows(self) -> list[str]:
        """Trial folders with a ``final.json`` but no Parquet row (``results repair`` rebuilds them)."""
        return sorted(t.folder or t.trial_id for t in self.trials.values()
                      if t.has_final and not t.has_row)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "space": self.space, "state": self.state,
                "n_trials": self.planned, "counts": self.counts, "created": self.created,
                "path": self.uri}


def _row_statuses(sweep: Location) -> dict[str, str]:
    """``{trial_id: Parquet status}`` (the results reader, with its snapshot cache)."""
    from biohash.results.reader import read_rows

    rows = read_rows(sweep)
    if rows is None:
        return {}
    return dict(zip(rows.column("trial_id").to_pylist(), rows.column("status").to_pylist()))


def trial_states(sweep: Location) -> dict[str, TrialState]:
    """Every trial of ``sweep`` that has left a trace in storage, by trial id."""
    folders = trial_folders(sweep)
    rows = _row_statuses(sweep)
    out = {}
    for tid in sorted(set(folders) | set(rows)):
        folder = folders.get(tid)
        detail = rows.get(tid)
        # One read per trial without a row only: a 10,000-trial sweep on S3
        # must not cost 10,000 GETs for a status line.
        final = (read_json(final_report(sweep, folder), what="final report")
                 if detail is None and folder is not None else None)
        if final is not None:
            detail = str(final.get("status") or "finished")
        state = state_of(detail)
        out[tid] = TrialState(tid, state, detail or state, folder, tid in rows, final is not None)
    return out


def summarize_sweep(sweep: Location) -> SweepState:
    """The summary of one sweep folder (``sweep.json`` may be missing or damaged)."""
    info = read_json(sweep_json(sweep), what="sweep record") or {}
    planned = info.get("n_trials")
    return SweepState(name=sweep.name, uri=sweep.uri, space=str(info.get("space") or ""),
                      planned=int(planned) if planned is not None else None,
                      created=str(info.get("created") or ""), trials=trial_states(sweep))


def summarize_storage(storage: str | Path | Location,
                      filesystem: pafs.FileSystem | None = None) -> list[SweepState]:
    """Every sweep in ``storage``, oldest first (by ``created``, then name)."""
    root = resolve(storage, filesystem)
    if not root.is_dir():
        return []
    sweeps = [summarize_sweep(loc) for loc in resolve_sweeps(root, list_sweeps(root))]
    return sorted(sweeps, key=lambda s: (s.created, s.name))
