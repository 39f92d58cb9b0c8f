"""The fixed, versioned Parquet schemas of a sweep's results.

Two tables per sweep, one file per trial each (``<trial_id>.parquet``):

- *trials*: one row per trial: every ``TrialConfig`` field as a typed column
  (derived from ``biohash.config.FIELDS``, never re-listed), the outcome
  (status, score, the final metrics of both folds, timings, hardware) and
  provenance (sweep, run_dir, finished_at, code_version).
- *history*: long format, one row per (epoch, key), so the schema stays fixed
  although alignment layer names differ between architectures.

``SCHEMA_VERSION`` is stored as a column *and* in the schema metadata; readers
refuse files written by a newer biohash. Bump it whenever a column changes
meaning or type (adding a nullable column does not need a bump: older files
read as nulls).

This module needs pyarrow only (no Ray, MLflow or torch).
"""
from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

import pyarrow as pa

from biohash.config import FIELDS, TrialConfig, base_arch
from biohash.contract import (EPOCH_BOOKKEEPING, EVAL_FOLDS, FINAL_METRICS, FINAL_TEXTS,
                              OUTCOME_COLUMNS, REPORTED_METRICS, TIMES)

__all__ = [
    "SCHEMA_VERSION", "VERSION_KEY", "FOLDS", "METRICS", "FINAL_METRICS", "TIMES",
    "STATUSES", "TRIALS_SCHEMA", "HISTORY_SCHEMA", "HISTORY_CONFIG_COLUMNS",
    "CONFIG_COLUMNS", "trial_row", "error_row", "history_rows", "trials_table",
    "history_table", "parse_history", "numeric_items",
]

SCHEMA_VERSION = 1
#: Schema metadata key holding the version (bytes) in every file.
VERSION_KEY = b"biohash.schema_version"

#: The contract's names (``biohash.contract``), re-exported for the readers.
FOLDS = EVAL_FOLDS
METRICS = REPORTED_METRICS
#: Trial outcomes: the trainable's three plus ``error`` (Tune reported an exception).
#: "stopped": ended by the scheduler (ASHA) before its final evaluation: no metrics.
STATUSES = ("finished", "early_stopped", "diverged", "stopped", "error")

_ARROW_TYPES = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(),
                "timestamp": pa.timestamp("us", tz="UTC")}


def _arrow_type(f: Any) -> pa.DataType:
    name = f.type if isinstance(f.type, str) else f.type.__name__
    return _ARROW_TYPES[name]


_CONFIG_FIELDS = [pa.field(f.name, _arrow_type(f)) for f in FIELDS]
CONFIG_COLUMNS = tuple(f.name for f in FIELDS)
_META = {VERSION_KEY: str(SCHEMA_VERSION).encode()}

TRIALS_SCHEMA = pa.schema(
    [pa.field("schema_version", pa.int32()), pa.field("sweep", pa.string()),
     pa.field("trial_id", pa.string()), *_CONFIG_FIELDS,
     # Derived from the config for grouping: the rule actually used (a plain
     # arch is backprop whatever -mode says) and the arch without "bio-".
     pa.field("rule", pa.string()), pa.field("base_arch", pa.string()),
     # The outcome: the final report's keys (and the driver's ``error``).
     *[pa.field(name, _ARROW_TYPES[kind]) for name, kind in OUTCOME_COLUMNS],
     pa.field("code_version", pa.string())],
    metadata={**_META, b"biohash.table": b"trials"})

#: Config columns repeated in the history table so it filters without a join.
HISTORY_CONFIG_COLUMNS = ("db", "arch", "mode", "nbits", "loss", "seed")
HISTORY_SCHEMA = pa.schema(
    [pa.field("schema_version", pa.int32()), pa.field("sweep", pa.string()),
     pa.field("trial_id", pa.string()),
     *[f for f in _CONFIG_FIELDS if f.name in HISTORY_CONFIG_COLUMNS],
     pa.field("rule", pa.string()),
     pa.field("epoch", pa.int32()), pa.field("key", pa.string()), pa.field("value", pa.float64())],
    metadata={**_META, b"biohash.table": b"history"})

#: Keys of a per-epoch report that are bookkeeping, not history values.
_NOT_HISTORY = frozenset(EPOCH_BOOKKEEPING)


def numeric_items(result: Mapping[str, Any]) -> Iterable[tuple[str, float]]:
    """``(key, float)`` for the numeric entries of a report (bools excluded)."""
    for key, value in result.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            yield key, float(value)


def _float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int | None:
    number = _float(value)
    return None if number is None or not math.isfinite(number) else int(number)


def _base(sweep: str, cfg: TrialConfig, code_version: str,
          finished_at: datetime | None) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "sweep": sweep, "trial_id": cfg.trial_id,
            **cfg.to_dict(), "rule": cfg.effective_mode, "base_arch": base_arch(cfg.arch),
            "finished_at": finished_at or datetime.now(timezone.utc),
            "code_version": code_version}


def trial_row(sweep: str, cfg: TrialConfig, final: Mapping[str, Any], *, code_version: str,
              finished_at: datetime | None = None) -> dict[str, Any]:
    """The trials-table row of a final report (``phase == "final"``).

    Values absent from the report are null; an unknown status string is kept
    as reported (analysis treats anything but ``error`` as having metrics).
    """
    if finished_at is None and final.get("finished_at"):
        # The trainable stamps its final report once; a re-delivered report
        # (a resumed sweep) then rewrites the very same row.
        finished_at = datetime.fromisoformat(str(final["finished_at"]))
    row = _base(sweep, cfg, code_version, finished_at)
    row.update(status=str(final.get("status", "finished")), error=None,
               best_epoch=_int(final.get("best_epoch")), epochs_run=_int(final.get("epochs_run")),
               score=_float(final.get("score")))
    row.update({name: _float(final.get(name)) for name in (*FINAL_METRICS, *TIMES)})
    for key in FINAL_TEXTS:
        row[key] = None if final.get(key) is None else str(final[key])
    return row


def error_row(sweep: str, cfg: TrialConfig, error: str | None, *, code_version: str,
              epochs_run: int | None = None, finished_at: datetime | None = None,
              status: str = "error") -> dict[str, Any]:
    """The row of a trial without a final report (``error`` or ``stopped``): metrics null."""
    row = _base(sweep, cfg, code_version, finished_at)
    row.update(status=status, error=(error or "")[-2000:] or None, epochs_run=epochs_run)
    return row


def parse_history(value: Any) -> list[dict[str, Any]]:
    """The final report's ``history`` (a JSON list, or already a list) as dicts."""
    if value is None:
        return []
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else []
    return [dict(item) for item in value if isinstance(item, Mapping)]


def history_rows(sweep: str, cfg: TrialConfig,
                 history: Iterable[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Columns (long format) of the per-epoch reports; the last report of an
    epoch wins, so a retried trial's repeated epochs appear once."""
    by_epoch: dict[int, dict[str, float]] = {}
    for report in history:
        epoch = _int(report.get("epoch"))
        if epoch is None:
            continue
        by_epoch[epoch] = {k: v for k, v in numeric_items(report) if k not in _NOT_HISTORY}
    epochs, keys, values = [], [], []
    for epoch in sorted(by_epoch):
        for key, value in sorted(by_epoch[epoch].items()):
            epochs.append(epoch)
            keys.append(key)
            values.append(value)
    n = len(epochs)
    config = cfg.to_dict()
    columns: dict[str, list[Any]] = {"schema_version": [SCHEMA_VERSION] * n,
                                     "sweep": [sweep] * n, "trial_id": [cfg.trial_id] * n}
    columns.update({name: [config[name]] * n for name in HISTORY_CONFIG_COLUMNS})
    columns.update(rule=[cfg.effective_mode] * n, epoch=epochs, key=keys, value=values)
    return columns


def trials_table(rows: list[Mapping[str, Any]]) -> pa.Table:
    """Rows (dicts; missing keys -> null) as a table of exactly ``TRIALS_SCHEMA``."""
    return pa.Table.from_pylist([dict(r) for r in rows], schema=TRIALS_SCHEMA)


def history_table(columns: Mapping[str, list[Any]]) -> pa.Table:
    return pa.Table.from_pydict(dict(columns), schema=HISTORY_SCHEMA)
