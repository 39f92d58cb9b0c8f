"""Retrieval metrics: exact h2q definitions, vectorised and memory-bounded.

``evaluate_retrieval`` computes the whole reported set (mAP, mAP@k, mAP@h,
P@k) in one pass; ``retrieval_map`` one of them (top-k and Hamming-radius
cutoffs rank only the prefix they reach, without a full sort);
``validation_map`` is the per-epoch early-stopping metric. Keys follow the old h2q JSON files
(``mAP_at_k=1000``); ``metric_name`` gives their MLflow-safe names.
NumPy only: importing this package does not import torch.
"""
from biohash.metrics.retrieval import (
    REPORTED_METRICS,
    evaluate_retrieval,
    hash_codes,
    headline_key,
    metric_name,
    normalize_features,
    retrieval_map,
)
from biohash.metrics.validation import validation_map

__all__ = ["retrieval_map", "evaluate_retrieval", "validation_map", "metric_name",
           "headline_key", "hash_codes", "normalize_features", "REPORTED_METRICS"]
