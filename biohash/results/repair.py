"""A trial's Parquet rows: written by the live sink, rebuilt by ``biohash results repair``.

``write_result`` is the one writer of a trial's two files (history first,
then the trials row, which readers take as "this trial has results"); the
live ``ParquetResultsCallback`` and ``repair`` both call it, with rows from
the same builders (``results.schema.trial_row`` / ``history_rows``), so a
repaired row is the row the sink would have written.

``repair`` exists because the sink may fail to write at the end of a sweep
(storage down, driver killed between the trial's end and the write): each
finished trial keeps its report in ``<trial folder>/final.json`` (see
``biohash.storage``'s layout) and its config in the uploaded run directory's
``config.json``; from these the missing rows are rebuilt. Idempotent: a
trial that has a row already is left untouched.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import pyarrow.fs as pafs

from biohash.config import RUN_CONFIG_FILE, TrialConfig
from biohash.errors import ConfigError, ResultsError
from biohash.results.schema import (history_rows, history_table, parse_history, trial_row,
                                    trials_table)
from biohash.storage import (HISTORY, TABLES, TRIALS, Location, final_report, read_json,
                             resolve, resolve_sweeps, result_file, trial_folders, write_table)

__all__ = ["write_result", "repair", "RepairReport"]

log = logging.getLogger(__name__)


def write_result(sweep: Location, sweep_name: str, cfg: TrialConfig, row: Mapping[str, Any],
                 history: Iterable[Mapping[str, Any]]) -> None:
    """Write one trial's trials row and history rows under ``sweep`` (atomic files)."""
    # History first: a trials row is what readers treat as "this trial has results".
    write_table(result_file(sweep, HISTORY, cfg.trial_id),
                history_table(history_rows(sweep_name, cfg, history)))
    write_table(result_file(sweep, TRIALS, cfg.trial_id), trials_table([row]))


@dataclass
class RepairReport:
    """Trial ids per outcome of a repair."""

    rebuilt: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        text = (f"{len(self.rebuilt)} row(s) rebuilt, {len(self.present)} already present, "
                f"{len(self.unfinished)} trial(s) without a final report")
        if self.failed:
            first = next(iter(self.failed.items()))
            text += f", {len(self.failed)} unreadable (first: {first[0]}: {first[1]})"
        return text


def _has_row(sweep: Location, trial_id: str) -> bool:
    info = sweep.fs.get_file_info(result_file(sweep, TRIALS, trial_id).path)
    return info.type == pafs.FileType.File


def _config(final: Mapping[str, Any], filesystem: pafs.FileSystem | None) -> TrialConfig:
    """The trial's config, from ``config.json`` in its uploaded run directory."""
    if not final.get("run_dir"):
        raise ConfigError("the final report names no run directory")
    loc = resolve(str(final["run_dir"]), filesystem).join(RUN_CONFIG_FILE)
    data = read_json(loc, what="run config")
    if data is None:
        raise ConfigError(f"no readable {loc.uri}")
    return TrialConfig.from_dict(data.get("trial", data), source=loc.uri)


def repair(storage: str, sweep: str, *, filesystem: pafs.FileSystem | None = None) -> RepairReport:
    """Rebuild the missing Parquet rows of ``sweep`` from its trials' ``final.json``.

    A trial folder without a trials row but with a final report gets both
    its files (trials and history); trials with a row are not touched.
    Raises ``ResultsError`` for an unknown sweep; a trial whose report or
    config cannot be read is listed in ``failed`` and the others go on.
    """
    from biohash.results.provenance import code_version
    from biohash.results.reader import refresh_snapshot

    loc = resolve_sweeps(storage, [sweep], filesystem)[0]
    report = RepairReport()
    for trial_id, dirname in sorted(trial_folders(loc).items()):
        if _has_row(loc, trial_id):
            report.present.append(trial_id)
            continue
        final = read_json(final_report(loc, dirname), what="final report")
        if final is None:
            report.unfinished.append(trial_id)
            continue
        try:
            cfg = _config(final, filesystem)
            if cfg.trial_id != trial_id:
                raise ConfigError(f"its run config is trial {cfg.trial_id}")
            row = trial_row(sweep, cfg, final, code_version=code_version())
            write_result(loc, sweep, cfg, row, parse_history(final.get("history")))
        except (ConfigError, OSError) as exc:
            report.failed[trial_id] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            continue
        report.rebuilt.append(trial_id)
    if report.rebuilt:
        for table in TABLES:
            try:  # compact for fast reads, as the sink does; a failure only costs speed
                refresh_snapshot(loc, table)
            except (OSError, ResultsError) as exc:
                log.warning("results: could not refresh the %s snapshot of %s: %s",
                            table, loc.uri, exc)
    return report
