"""Results that last: Parquet records of every trial, mirrored into MLflow.

- ``schema``: the fixed, versioned Parquet schemas (``SCHEMA_VERSION``).
- ``reader``: ``load_results`` / ``load_history`` (layout and writes: ``biohash.storage``).
- ``ParquetResultsCallback`` and ``MlflowSweepCallback``: driver-side Tune
  callbacks (import Ray; loaded lazily from here).
- ``backfill``: fill MLflow from Parquet afterwards.
- ``mlflow_best``: the sweep's answer in MLflow (``best/...`` metrics, tables,
  plots, the ``biohash.best`` tag), written at sweep end and by every backfill.

Attribute access is lazy so that ``import biohash.results`` needs neither
Ray nor MLflow.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["SCHEMA_VERSION", "load_results", "load_history", "list_sweeps",
           "ParquetResultsCallback", "MlflowSweepCallback", "backfill", "default_mlflow_uri"]

_LAZY = {
    "SCHEMA_VERSION": "biohash.results.schema",
    "load_results": "biohash.results.reader",
    "load_history": "biohash.results.reader",
    "list_sweeps": "biohash.storage",
    "ParquetResultsCallback": "biohash.results.parquet_sink",
    "MlflowSweepCallback": "biohash.results.mlflow_sink",
    "backfill": "biohash.results.backfill",
    "default_mlflow_uri": "biohash.defaults",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'biohash.results' has no attribute {name!r}")
