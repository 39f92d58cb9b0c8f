"""The per-epoch validation metric used for early stopping (h2q's protocol).

h2q (``on_validation_epoch_end`` of its Lightning module) hashes the whole
val fold with the raw outputs and then, 5 times: draws 1,000 val items
without replacement (all of them if the fold is smaller), flips a uniform
coin per item, takes the items with coin <= 0.1 as queries and the rest as
the retrieval set, and computes the mAP over the full ranking, or within
Hamming radius 2 for DCH and WGLHH; the epoch's value is the mean.

h2q drew from NumPy's global RNG, so its draws were not reproducible; here
the caller passes a seed (the trainer uses ``(trial seed, epoch)``), so each
epoch gets fresh draws and a resumed run gets the same ones.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from biohash.errors import ConfigError
from biohash.metrics.retrieval import retrieval_map

__all__ = ["validation_map", "validation_split"]


def validation_split(rng: np.random.Generator, n_total: int, n_items: int,
                     query_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """One h2q draw: ``(query, retrieval)`` positions among ``n_total`` items.

    ``min(n_items, n_total)`` items without replacement, then a uniform coin
    per item: coin <= ``query_fraction`` -> query, else retrieval (both keep
    the draw order). A draw without any query is redrawn (new coins for the
    same items): h2q divided by the number of queries and would have failed
    with ZeroDivisionError, so there is no h2q value to reproduce; at 1,000
    items such a draw has probability 0.9**1000 (about 1e-46). The retrieval
    set may be empty (every coin <= 0.1); ``validation_map`` scores that 0.
    """
    n = min(n_items, n_total)
    items = rng.choice(n_total, size=n, replace=False)
    while True:
        is_query = rng.random(n) <= query_fraction
        if is_query.any():
            return items[is_query], items[~is_query]


def validation_map(features: np.ndarray, labels: np.ndarray, *, n_items: int = 1000,
                   query_fraction: float = 0.1, repeats: int = 5, radius: int | None = None,
                   seed: int | Sequence[int] = 0) -> float:
    """Mean over ``repeats`` draws (see ``validation_split``) of the val mAP.

    ``radius``: None -> mAP over the full ranking; an int ``h`` -> mAP within
    Hamming radius ``h`` (h2q used 2 for DCH and WGLHH), both with
    ``retrieval_map``'s exact h2q definitions. A draw whose retrieval set is
    empty scores 0, as in h2q (no query then has a relevant item).
    ``seed``: anything ``numpy.random.default_rng`` accepts, e.g.
    ``(trial_seed, epoch)``. Returns 0.0 when the features contain NaN or inf
    (a diverged network must not win early stopping), as h2q did.
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
    if radius is not None and radius < 0:
        raise ConfigError(f"radius must be None or an integer >= 0; got {radius!r}")
    if not np.isfinite(features).all():
        return 0.0
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(repeats):
        q, db = validation_split(rng, len(features), n_items, query_fraction)
        scores.append(0.0 if db.size == 0 else
                      retrieval_map(features[q], features[db], labels[q], labels[db],
                                    radius=radius))
    return float(np.mean(scores))
