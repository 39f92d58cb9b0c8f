"""Fill MLflow from a sweep's Parquet results (after MLflow was down, or into a new store).

Idempotent: a trial whose MLflow run already has the Parquet status and all
history epochs is skipped; any other gets the missing epochs, final metrics,
tags, artifacts and run status. Runs are found by tag as the live callback
finds them, so nothing is duplicated. A run made under its old long name is
renamed to the short one. Then the sweep's answer is written again from
all rows (``biohash.results.mlflow_best``): best metrics and tables on the
sweep's run, the ``biohash.best`` tag moved to the current best trials.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs

from biohash.config import TrialConfig
from biohash.errors import BiohashError, ResultsError
from biohash.results.mlflow_best import BEST_TAG, log_sweep_answer
from biohash.results.mlflow_log import SweepLogger, quick_http
from biohash.results.reader import load_history_table, load_results_table
from biohash.results.schema import CONFIG_COLUMNS
from biohash.storage import read_json, resolve_sweeps, sweep_json

__all__ = ["backfill", "BackfillReport"]


@dataclass
class BackfillReport:
    """Trial ids per outcome of a backfill."""

    updated: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    best: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"{len(self.updated)} trial(s) written to MLflow, {len(self.skipped)} already "
                f"complete, {len(self.best)} tagged {BEST_TAG}")


def _histories(loc: Any) -> dict[str, dict[int, dict[str, float]]]:
    try:
        table = load_history_table([loc], columns=["trial_id", "epoch", "key", "value"])
    except ResultsError:  # no history files: trials only
        return {}
    out: dict[str, dict[int, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    cols = [table.column(c).to_pylist() for c in ("trial_id", "epoch", "key", "value")]
    for trial_id, epoch, key, value in zip(*cols):
        if value is not None:
            out[trial_id][epoch][key] = value
    return out


def backfill(storage: str, sweep: str, tracking_uri: str, *,
             filesystem: pafs.FileSystem | None = None,
             experiment: str = "biohash") -> BackfillReport:
    """Write every Parquet trial of ``sweep`` into MLflow at ``tracking_uri``.

    The sweep run is marked FINISHED when the backfill created it, or once
    all trials planned in ``sweep.json`` have a row; an existing sweep run's
    status is otherwise left alone (the live callback may still own it). Raises ``ResultsError`` for an unknown sweep,
    no results, or an unreachable tracking store (nothing half-written is
    lost: rerun it).
    """
    loc = resolve_sweeps(storage, [sweep], filesystem)[0]
    rows = load_results_table([loc]).to_pylist()
    histories = _histories(loc)
    info = read_json(sweep_json(loc), what="sweep record") or {}
    report = BackfillReport()
    try:
        with quick_http():
            logger = SweepLogger(tracking_uri, sweep=sweep, space=str(info.get("space", "")),
                                 storage=str(storage), experiment=experiment, reopen=False,
                                 filesystem=filesystem)
            for row in rows:
                _backfill_trial(logger, row, histories.get(row["trial_id"], {}), report)
            report.best = sorted(log_sweep_answer(logger, loc).best_trials)
            planned = info.get("n_trials")
            if logger.created_parent or (isinstance(planned, int) and len(rows) >= planned):
                logger.end_sweep("FINISHED")
    except BiohashError:
        raise
    except Exception as exc:  # noqa: BLE001 - any client/server failure is one user-facing line
        first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise ResultsError(f"cannot write to MLflow at {tracking_uri!r}: {first} "
                           f"({len(report.updated)} trial(s) written before the failure; "
                           "rerun to continue)") from None
    return report


def _backfill_trial(logger: SweepLogger, row: dict, history: dict[int, dict[str, float]],
                    report: BackfillReport) -> None:
    cfg = TrialConfig.from_dict({c: row[c] for c in CONFIG_COLUMNS}, source="results row")
    child = logger.child(cfg)
    logger.ensure_name(cfg)
    if child.status == row["status"] and child.last_epoch >= max(history, default=0):
        report.skipped.append(cfg.trial_id)
        return
    logger.log_history(cfg, history)
    if row["status"] == "error":
        logger.mark(cfg, "error", row.get("error"))
    else:
        logger.log_final(cfg, row, config_json=logger.config_json(cfg))
    report.updated.append(cfg.trial_id)
