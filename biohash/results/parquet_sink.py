"""``ParquetResultsCallback``: the durable record of a sweep, written by the driver.

On a trial's final report it writes ``results/trials/<trial_id>.parquet`` (one
row) and ``results/history/<trial_id>.parquet`` (its per-epoch rows); on a
trial error it writes an ``error`` row (metrics null) that a later successful
retry overwrites. Files are keyed by ``TrialConfig.trial_id`` and written
atomically, so retries and resumed sweeps never duplicate rows.

A failed write (e.g. object store hiccup) is logged and retried at the next
callback event and at the end of the experiment instead of aborting the
sweep: the trial's own run directory still has its results.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import pyarrow.fs as pafs
import pyarrow.parquet as pq
from ray.tune import Callback

from biohash.config import TrialConfig
from biohash.results._tune import FINAL, epoch_metrics, trial_config, trial_error_text
from biohash.results.provenance import code_version
from biohash.results.reader import refresh_snapshot
from biohash.results.repair import write_result
from biohash.results.schema import error_row, parse_history, trial_row
from biohash.storage import TABLES, TRIALS, Location, result_file, sweep_dir

__all__ = ["ParquetResultsCallback"]

log = logging.getLogger(__name__)

#: Trials written between two refreshes of the sweep's read snapshot.
SNAPSHOT_EVERY = 50


class ParquetResultsCallback(Callback):
    """Write each trial's result row and history as Parquet under ``<storage>/<sweep>/results``.

    ``storage`` is a local folder or a URI (``s3://bucket/prefix``);
    ``filesystem`` (a ``pyarrow.fs.FileSystem``, e.g. an ``S3FileSystem``
    pointed at a test server) overrides the one the URI implies.
    """

    def __init__(self, storage: str, sweep: str, *,
                 filesystem: pafs.FileSystem | None = None) -> None:
        self.storage, self.sweep, self.filesystem = str(storage), sweep, filesystem
        self._loc: Location | None = None
        self._epochs: dict[str, dict[int, dict[str, float]]] = {}  # trial_id -> epoch -> metrics
        self._pending: list[tuple[str, Callable[[], None]]] = []
        self._written = 0

    # ------------------------------------------------------------------ Tune hooks
    def setup(self, **info: Any) -> None:
        self._location()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        cfg = trial_config(trial)
        if cfg is None:
            return
        if result.get("phase") == FINAL:
            self._write_final(cfg, result)
        elif result.get("epoch") is not None:
            # Kept only to record what an errored trial got through.
            self._epochs.setdefault(cfg.trial_id, {})[int(result["epoch"])] = {
                "epoch": int(result["epoch"]), **epoch_metrics(result)}
        self._flush()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        cfg = trial_config(trial)
        if cfg is not None:
            self._write_error(cfg, trial_error_text(trial))
        self._flush()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # Completed without a final report: stopped early by the scheduler.
        cfg = trial_config(trial)
        if cfg is not None and cfg.trial_id in self._epochs:
            self._write_error(cfg, None, status="stopped")
        self._flush()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._flush()
        self._refresh_snapshots()

    def _refresh_snapshots(self) -> None:
        loc = self._location()
        for table in TABLES:
            try:  # compact for fast reads; a failure only costs read speed later
                refresh_snapshot(loc, table)
            except Exception as exc:  # noqa: BLE001
                log.warning("results: could not refresh the %s snapshot of %s: %s",
                            table, loc.uri, exc)

    # ------------------------------------------------------------------ writing
    def _location(self) -> Location:
        if self._loc is None:
            self._loc = sweep_dir(self.storage, self.sweep, self.filesystem)
        return self._loc

    def _write_final(self, cfg: TrialConfig, result: dict) -> None:
        history = parse_history(result.get("history")) or \
            list(self._epochs.get(cfg.trial_id, {}).values())
        self._epochs.pop(cfg.trial_id, None)
        row = trial_row(self.sweep, cfg, result, code_version=code_version())
        self._submit(cfg.trial_id, lambda: self._write_pair(cfg, row, history))

    def _write_error(self, cfg: TrialConfig, error: str | None, status: str = "error") -> None:
        history = list(self._epochs.pop(cfg.trial_id, {}).values())
        if self._has_result(cfg.trial_id):
            log.warning("results: trial %s ended (%s) after a finished result was recorded; "
                        "keeping the finished row", cfg.trial_id, status)
            return
        row = error_row(self.sweep, cfg, error, code_version=code_version(),
                        epochs_run=max((h["epoch"] for h in history), default=None),
                        status=status)
        self._submit(cfg.trial_id, lambda: self._write_pair(cfg, row, history))

    def _write_pair(self, cfg: TrialConfig, row: dict, history: list[dict]) -> None:
        write_result(self._location(), self.sweep, cfg, row, history)

    def _has_result(self, trial_id: str) -> bool:
        """Whether a row with results (not error/stopped) for the trial is on storage."""
        try:
            table = pq.read_table(result_file(self._location(), TRIALS, trial_id).path,
                                  columns=["status"], filesystem=self._location().fs)
        except (FileNotFoundError, OSError):
            return False
        return any(s not in ("error", "stopped") for s in table.column("status").to_pylist())

    def _submit(self, trial_id: str, write: Callable[[], None]) -> None:
        # A newer write for the same trial replaces a pending older one.
        self._pending = [(t, w) for t, w in self._pending if t != trial_id]
        self._pending.append((trial_id, write))

    def _flush(self) -> None:
        still = []
        for trial_id, write in self._pending:
            try:
                write()
                self._written += 1
                # Keep the compacted copy fresh during long sweeps too, so that
                # reading a running or killed sweep never opens every file.
                if self._written % SNAPSHOT_EVERY == 0:
                    self._refresh_snapshots()
            except Exception as exc:  # noqa: BLE001 - never abort a sweep over a write
                log.error("results: could not write the Parquet result of trial %s to %s "
                          "(will retry): %s", trial_id, self._location().uri, exc)
                still.append((trial_id, write))
        self._pending = still
