"""Names of the retrieval metrics: h2q's JSON keys, their MLflow-safe names and
the set the pipeline reports (light: no NumPy work, no compiled kernels).

Keys follow the old h2q JSON files: ``mAP`` (full list), ``mAP_at_k=<k>``
(top k), ``mAP_at_h=<radius>`` (within a Hamming radius), ``P_at_k=<k>``
(precision at k).
"""
from __future__ import annotations

import re

from biohash.errors import ConfigError

__all__ = ["metric_name", "headline_key", "KS", "RADII", "PRECISION_KS", "REPORTED_METRICS"]

_KEY_RE = re.compile(r"^(mAP|P)(?:_at_(k|h)=(\d+))?$")


def metric_name(key: str) -> str:
    """MLflow-safe flat name of an h2q metric key (MLflow forbids ``=``).

    ``mAP_at_k=1000 -> mAP_at_1000``, ``mAP_at_h=0 -> mAP_at_h0``,
    ``P_at_k=100 -> P_at_100``, ``mAP -> mAP``.
    """
    m = _KEY_RE.match(key)
    if m is None:
        raise ConfigError(f"unknown metric key {key!r}; expected 'mAP', 'mAP_at_k=<k>', "
                          "'mAP_at_h=<radius>' or 'P_at_k=<k>'")
    stem, kind, value = m.groups()
    if kind is None:
        return stem
    return f"{stem}_at_{value}" if kind == "k" else f"{stem}_at_h{value}"


#: What the pipeline reports: mAP@k, mAP within Hamming radius h, precision@k.
KS, RADII, PRECISION_KS = (1000, 5000), (0, 1, 2), (100, 1000)
#: Flat names of ``evaluate_retrieval``'s default keys, in report order
#: (``mAP``, ``mAP_at_1000`` ... ``P_at_1000``): result columns and MLflow keys.
REPORTED_METRICS = tuple(metric_name(key) for key in (
    "mAP", *(f"mAP_at_k={k}" for k in KS), *(f"mAP_at_h={h}" for h in RADII),
    *(f"P_at_k={k}" for k in PRECISION_KS)))


def headline_key(db: str) -> str:
    """The paper's headline metric (the trial ``score``) for dataset ``db``."""
    return "mAP_at_k=1000" if db == "ImageNet" else "mAP_at_k=5000"
