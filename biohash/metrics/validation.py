"""The per-epoch validation metric used for early stopping (h2q's protocol)."""
from __future__ import annotations

import numpy as np

from biohash.errors import ConfigError
from biohash.metrics.retrieval import retrieval_map

__all__ = ["validation_map"]


def validation_map(features: np.ndarray, labels: np.ndarray, *, n_items: int = 1000,
                   query_fraction: float = 0.1, repeats: int = 5, seed: int = 0) -> float:
    """Full-ranking mAP on random query/retrieval splits of the val fold.

    Each repeat draws ``min(n_items, N)`` val items without replacement,
    uses the first ``round(query_fraction * n)`` of them (at least 1, at most
    n - 1) as queries and the rest as the retrieval set; the mAPs of the
    ``repeats`` splits are averaged. Deterministic for a given ``seed``
    (``numpy.random.default_rng``). Returns 0.0 when the features contain
    NaN or inf (a diverged network must not win early stopping), as h2q did.
    """
    features = np.asarray(features)
    labels = np.asarray(labels)
    if features.ndim != 2 or labels.ndim != 2 or len(features) != len(labels):
        raise ConfigError(f"features {features.shape} and labels {labels.shape} must be 2-D "
                          "with one label row per item")
    if len(features) < 2:
        raise ConfigError(f"validation needs at least 2 items; got {len(features)}")
    if not 0.0 < query_fraction < 1.0:
        raise ConfigError(f"query_fraction must be in (0, 1); got {query_fraction!r}")
    if repeats < 1 or n_items < 2:
        raise ConfigError(f"repeats must be >= 1 and n_items >= 2; got repeats={repeats!r}, "
                          f"n_items={n_items!r}")
    if not np.isfinite(features).all():
        return 0.0
    rng = np.random.default_rng(seed)
    n = min(n_items, len(features))
    n_query = min(max(1, round(query_fraction * n)), n - 1)
    scores = []
    for _ in range(repeats):
        items = rng.choice(len(features), size=n, replace=False)
        q, db = items[:n_query], items[n_query:]
        scores.append(retrieval_map(features[q], features[db], labels[q], labels[db]))
    return float(np.mean(scores))
