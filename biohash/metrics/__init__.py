"""Retrieval metrics: exact h2q definitions, vectorised and memory-bounded.

``evaluate_retrieval`` computes the whole reported set (mAP, mAP@k, mAP@h,
P@k) in one pass; ``retrieval_map`` one of them (top-k and Hamming-radius
cutoffs rank only the prefix they reach, without a full sort);
``validation_map`` is the per-epoch early-stopping metric. Keys follow the old h2q JSON files
(``mAP_at_k=1000``); ``metric_name`` gives their MLflow-safe names.

Importing this package imports neither torch nor Numba: the names of the
metrics (:mod:`biohash.metrics.keys`) are what most of biohash needs, and
the computing functions (with their compiled kernels) load on first use.
"""
from __future__ import annotations

import importlib
from typing import Any

from biohash.metrics.keys import REPORTED_METRICS, headline_key, metric_name

__all__ = ["retrieval_map", "evaluate_retrieval", "validation_map", "metric_name",
           "headline_key", "hash_codes", "normalize_features", "REPORTED_METRICS"]

_LAZY = {"evaluate_retrieval": "retrieval", "retrieval_map": "retrieval",
         "hash_codes": "retrieval", "normalize_features": "retrieval",
         "validation_map": "validation"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value  # later lookups skip this hook
    return value
