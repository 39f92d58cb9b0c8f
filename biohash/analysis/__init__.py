"""Analysis of sweep results: best configs, paper tables, comparisons, plots, and
h2q's published numbers beside a sweep's (``published``).

Reads the Parquet results of any number of sweeps (``biohash.results``);
imports neither torch, Ray nor MLflow, and pandas/matplotlib only on use
(attributes resolve lazily) so that ``biohash --help`` stays fast.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["best_configs", "best_view", "gap_table", "paper_table", "compare", "config_means",
           "render", "FORMATS", "plot", "PLOTS", "published_table", "vs_published"]

_LAZY = {"best_configs": "tables", "best_view": "tables", "gap_table": "tables",
         "paper_table": "tables", "compare": "tables",
         "config_means": "tables", "render": "formats", "FORMATS": "formats",
         "plot": "plots", "PLOTS": "plots",
         "published_table": "published", "vs_published": "published"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"biohash.analysis.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'biohash.analysis' has no attribute {name!r}")
